"""SttReceiver: provider events into call transcripts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import trio

from providers.base import SttSession
from providers.errors import error_for_close_code
from providers.events import (
    Finalized,
    FinalTranscript,
    PartialTranscript,
    ProviderClosed,
    ProviderFailed,
    SessionStarted,
)

from .messages import CallEvent, Transcript
from .replay import SessionClock

__all__ = ["SttReceiver", "CommitLedger"]


class CommitLedger(Protocol):
    """The call's committed mark, shared by every session of the call
    (``ReplayBuffer`` is one: committing also frees audio from replay)."""

    committed_end_ms: int

    def commit(self, end_ms: int) -> None: ...


class _Mark:
    def __init__(self, end_ms: int) -> None:
        self.committed_end_ms = end_ms

    def commit(self, end_ms: int) -> None:
        self.committed_end_ms = max(self.committed_end_ms, end_ms)


class SttReceiver:
    """Consumes one session's events; produces ``Transcript``s on ``events_send`` with
    times moved onto the call's audio clock (``clock``; without one, session ms +
    ``offset_ms``).  Returns on ``Finalized``.

    A session after a reconnect hears the uncommitted tail again, so the call never
    gets a committed span twice: a commit that ends at or before the call's committed
    mark (``ledger``) is dropped; one that overlaps it is kept with its start moved to
    the mark (committed spans tile the call clock, never overlap).  Partials are
    treated alike.  Every event, of any kind, is reported to ``on_event`` (the stall
    watchdog).

    Raises: the ``ProviderError`` a vendor reported (``ProviderFailed``), or the typed
    error for a connection that closed before finalizing (``ProviderClosed``).
    """

    def __init__(
        self,
        provider: str,
        offset_ms: int = 0,
        *,
        clock: SessionClock | None = None,
        ledger: CommitLedger | None = None,
        on_event: Callable[[], None] | None = None,
    ) -> None:
        self.provider = provider
        self.offset_ms = offset_ms
        self._clock = clock or SessionClock(offset_ms)
        self._ledger = ledger or _Mark(offset_ms)
        self._on_event = on_event
        self.duplicates = 0  # commits dropped because an earlier session committed them

    @property
    def committed_end_ms(self) -> int:
        """Call-clock end of the last committed span."""
        return self._ledger.committed_end_ms

    async def run(self, session: SttSession, events_send: trio.MemorySendChannel[CallEvent]) -> None:
        clock, ledger = self._clock, self._ledger
        while True:
            event = await session.receive()
            if self._on_event is not None and not isinstance(event, ProviderClosed | ProviderFailed):
                self._on_event()
            if isinstance(event, PartialTranscript | FinalTranscript):
                if not event.text.strip():
                    continue
                start = clock.to_call(event.start_ms or 0)
                end_session = event.end_ms if event.end_ms is not None else event.start_ms or 0
                end = max(start, clock.to_call(end_session, end=True))
                mark = ledger.committed_end_ms
                # Ends at or before the mark: heard and committed already.  (A span of no
                # length exactly at the mark is a vendor without timings: kept.)
                if end < mark or (end == mark and start < end):
                    if isinstance(event, FinalTranscript):
                        self.duplicates += 1
                    continue  # an earlier session already committed this audio
                start = max(start, mark)
                if isinstance(event, FinalTranscript):
                    ledger.commit(end)
                    await events_send.send(Transcript("committed", event.text, self.provider, start, end))
                else:
                    await events_send.send(Transcript("partial", event.text, self.provider, start, end))
            elif isinstance(event, Finalized):
                return
            elif isinstance(event, ProviderFailed):
                raise event.error
            elif isinstance(event, ProviderClosed):
                raise error_for_close_code(self.provider, event.code, event.reason)
            elif isinstance(event, SessionStarted):
                continue
