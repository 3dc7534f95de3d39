"""SttReceiver: provider events into call transcripts."""

from __future__ import annotations

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

__all__ = ["SttReceiver"]


class SttReceiver:
    """Consumes one session's events; produces ``Transcript``s on ``events_send``
    with times moved onto the call's audio clock (``offset_ms`` = where on the call
    clock this session's audio starts).  Returns on ``Finalized``.

    Raises: the ``ProviderError`` a vendor reported (``ProviderFailed``), or the typed
    error for a connection that closed before finalizing (``ProviderClosed``).
    """

    def __init__(self, provider: str, offset_ms: int = 0) -> None:
        self.provider = provider
        self.offset_ms = offset_ms
        self.committed_end_ms = offset_ms  # call-clock end of the last committed span

    async def run(self, session: SttSession, events_send: trio.MemorySendChannel[CallEvent]) -> None:
        offset = self.offset_ms
        while True:
            event = await session.receive()
            if isinstance(event, PartialTranscript | FinalTranscript):
                if not event.text.strip():
                    continue
                start = offset + (event.start_ms or 0)
                end = max(start, offset + (event.end_ms if event.end_ms is not None else event.start_ms or 0))
                if isinstance(event, FinalTranscript):
                    self.committed_end_ms = max(self.committed_end_ms, end)
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
