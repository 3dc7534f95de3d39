"""SttSender: call audio into one provider session."""

from __future__ import annotations

import trio

from providers.base import SttSession

from .messages import AudioBatch
from .stats import CallStats

__all__ = ["SttSender"]


class SttSender:
    """Consumes ``AudioBatch``es (provider format) and sends each to ``session``,
    counting what the session accepted in ``stats.forwarded_ms``.  When the audio
    channel ends (the caller hung up) it asks the session for its final transcript
    (``finalize``) and returns.  Sends ``keepalive`` after ``keepalive_interval``
    seconds without audio.  Does not close ``audio_receive``: the channel outlives a
    session, so a reconnected session continues where this one stopped.

    Raises: whatever ``session.send_audio`` raises (``ProviderError``).
    """

    def __init__(self, stats: CallStats, keepalive_interval: float | None = None) -> None:
        self._stats = stats
        self._keepalive_interval = keepalive_interval

    async def run(self, session: SttSession, audio_receive: trio.MemoryReceiveChannel[AudioBatch]) -> None:
        stats = self._stats
        while True:
            if self._keepalive_interval is None:
                try:
                    batch = await audio_receive.receive()
                except trio.EndOfChannel:
                    break
            else:
                with trio.move_on_after(self._keepalive_interval) as idle:
                    try:
                        batch = await audio_receive.receive()
                    except trio.EndOfChannel:
                        break
                if idle.cancelled_caught:
                    await session.keepalive()
                    continue
            await session.send_audio(batch.payload)
            stats.forwarded_ms += batch.duration_ms
        await session.finalize()
