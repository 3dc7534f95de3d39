"""SessionLink: one provider session joined to its call.

SttSender and SttReceiver are the actors of the design; what a session needs from the
call, and what it does to the call, is this one collaborator's named methods::

    a batch:       audio source ─▶ SttSender ─▶ link.send ─▶ SttSession (websocket) ─▶ codec
    a transcript:  codec ─▶ SttSession.receive ─▶ link.next_event ─▶ SttReceiver
                        ─▶ link.place (call clock, commit mark) ─▶ events channel ─▶ TranscriptEmitter

``ReplayLink`` is a supervised session's (the ReplayBuffer, the stall watchdog, the
session clock, and a converter when the chain mixes formats: ``actors.convert``); ``DirectLink`` is a lone
session's, fed from a channel (tests, benchmarks, tools).
"""

from __future__ import annotations

from typing import Protocol

import trio

from providers.base import SttSession
from providers.events import FinalTranscript, PartialTranscript, ProviderClosed, ProviderEvent, ProviderFailed

from .convert import CallAudioConverter
from .messages import AudioBatch
from .replay import ReplayBuffer, SessionClock
from .speech import is_speech
from .stats import CallStats
from .watchdog import SessionMonitor

__all__ = ["SessionLink", "AudioSource", "ReplayLink", "DirectLink"]


class AudioSource(Protocol):
    """Where a lone session's audio comes from: a memory channel.  ``receive`` raises
    ``trio.EndOfChannel`` when the audio is over, and must be cancel-safe."""

    async def receive(self) -> AudioBatch: ...


class SessionLink(Protocol):
    """What SttSender and SttReceiver do with one session, in the call's terms.

    Sender side: ``next_batch`` (raises ``trio.EndOfChannel`` when the call's audio is
    over; cancel-safe: the sender's timer cancels it), ``send`` (what a batch needs
    before the session takes it, the send, and what it needs once taken), ``keepalive``,
    ``flush`` (audio a converter held back) and ``finalize``.  Receiver side:
    ``next_event`` and ``place``: a transcript's span on the call clock, or None when an
    earlier session of the call already committed that audio.  What the session raises
    (a ``ProviderError``) passes through.
    """

    provider: str

    async def next_batch(self) -> AudioBatch: ...
    async def send(self, batch: AudioBatch) -> None: ...
    async def keepalive(self) -> None: ...
    async def flush(self) -> None: ...
    async def finalize(self) -> None: ...
    async def next_event(self) -> ProviderEvent: ...
    def place(self, event: PartialTranscript | FinalTranscript) -> tuple[int, int] | None: ...


class _CommitMark:
    """A lone session's committed mark (a supervised one shares the ReplayBuffer's)."""

    def __init__(self, end_ms: int) -> None:
        self.committed_end_ms = end_ms

    def commit(self, end_ms: int) -> None:
        self.committed_end_ms = max(self.committed_end_ms, end_ms)


class _Placing:
    """Transcript times onto the call clock, against the call's commit mark.

    A session after a reconnect hears the uncommitted tail again, so the call never gets
    a committed span twice: a commit that ends at or before the mark is dropped; one that
    overlaps it is kept with its start moved to the mark (committed spans tile the call
    clock, never overlap).  Partials are treated alike; a kept commit moves the mark.
    """

    _clock: SessionClock
    _ledger: ReplayBuffer | _CommitMark
    duplicates: int  # commits dropped because an earlier session committed them

    def place(self, event: PartialTranscript | FinalTranscript) -> tuple[int, int] | None:
        clock, ledger = self._clock, self._ledger
        start = clock.to_call(event.start_ms or 0)
        end_session = event.end_ms if event.end_ms is not None else event.start_ms or 0
        end = max(start, clock.to_call(end_session, end=True))
        mark = ledger.committed_end_ms
        # Ends at or before the mark: heard and committed already.  (A span of no
        # length exactly at the mark is a vendor without timings: kept.)
        if end < mark or (end == mark and start < end):
            if isinstance(event, FinalTranscript):
                self.duplicates += 1
            return None
        if isinstance(event, FinalTranscript):
            ledger.commit(end)
        return max(start, mark), end

    @property
    def committed_end_ms(self) -> int:
        """Call-clock end of the last committed span."""
        return self._ledger.committed_end_ms


class ReplayLink(_Placing):
    """A supervised session: audio from the call's ``replay`` buffer, each batch
    recorded on the session ``clock`` and in the stall ``monitor`` before it is sent
    (the vendor may answer it before the send returns) and marked sent in the buffer
    once taken; converted first when the session takes another format than the buffer
    holds (``converter``, from ``actors.convert.session_converter``).  Every event but the end of the connection tells the monitor
    the session answered; a kept commit frees replay audio."""

    def __init__(self, session: SttSession, provider: str, replay: ReplayBuffer, monitor: SessionMonitor,
                 clock: SessionClock, converter: CallAudioConverter | None = None) -> None:
        self.provider = provider
        self._session = session
        self._replay = replay
        self._monitor = monitor
        self._clock = clock
        self._ledger = replay
        self._converter = converter
        self._format = replay.audio_format
        self.duplicates = 0

    async def next_batch(self) -> AudioBatch:
        try:
            return await self._replay.next_batch()
        except trio.EndOfChannel:
            self._monitor.audio_ended()
            raise

    async def send(self, batch: AudioBatch) -> None:
        payload = batch.payload if self._converter is None else self._converter.convert(batch.payload)
        self._clock.sent(batch)
        self._monitor.sending(batch.duration_ms, is_speech(batch.payload, self._format))
        if payload:
            await self._session.send_audio(payload)
        self._replay.mark_sent(batch)
        self._monitor.accepted(batch.duration_ms)

    async def keepalive(self) -> None:
        await self._session.keepalive()

    async def flush(self) -> None:
        if self._converter is not None and (tail := self._converter.flush()):
            await self._session.send_audio(tail)

    async def finalize(self) -> None:
        await self._session.finalize()

    async def next_event(self) -> ProviderEvent:
        event = await self._session.receive()
        if not isinstance(event, ProviderClosed | ProviderFailed):
            self._monitor.answered()
        return event


class DirectLink(_Placing):
    """A lone session fed from ``audio`` (no replay, no watchdog, no conversion): each
    batch the session took is counted in ``stats.forwarded_ms``; transcript times are
    session ms + ``offset_ms``."""

    def __init__(self, session: SttSession, audio: AudioSource, stats: CallStats, *,
                 provider: str = "provider", offset_ms: int = 0) -> None:
        self.provider = provider
        self._session = session
        self._audio = audio
        self._stats = stats
        self._clock = SessionClock(offset_ms)
        self._ledger = _CommitMark(offset_ms)
        self.duplicates = 0

    async def next_batch(self) -> AudioBatch:
        return await self._audio.receive()

    async def send(self, batch: AudioBatch) -> None:
        if batch.payload:
            await self._session.send_audio(batch.payload)
        self._stats.forward(batch)

    async def keepalive(self) -> None:
        await self._session.keepalive()

    async def flush(self) -> None:
        pass  # nothing held back: no conversion

    async def finalize(self) -> None:
        await self._session.finalize()

    async def next_event(self) -> ProviderEvent:
        return await self._session.receive()
