"""Resampler: call audio (mu-law 8 kHz) into the provider's format."""

from __future__ import annotations

from typing import Protocol

import trio

from providers.base import MULAW_8K, AudioFormat

from .dsp import StreamResampler, mulaw_to_pcm16
from .messages import AudioBatch

__all__ = ["Resampler"]


class AudioOutput(Protocol):
    """Where converted audio goes: a memory channel's send end, or the call's
    ``ReplayBuffer`` (which never blocks).  Closing it ends the call's audio."""

    def send_nowait(self, batch: AudioBatch) -> None: ...

    async def send(self, batch: AudioBatch) -> None: ...

    async def __aenter__(self) -> object: ...

    async def __aexit__(self, *exc: object) -> object: ...


class Resampler:
    """Consumes mu-law ``AudioBatch``es; produces batches in ``target`` format.
    Closes ``audio_send`` when ``mulaw_receive`` ends.

    When the provider takes 8 kHz mu-law (every cloud vendor does) this is a
    pass-through: the same batch object moves on, no decode, no copy.  Otherwise
    mu-law is decoded with a lookup table and resampled by one streaming soxr
    resampler whose state lives for the whole call (never cleared mid-call).
    Each output batch keeps the call-clock span of the input it came from.
    """

    def __init__(self, target: AudioFormat) -> None:
        self.target = target

    async def run(
        self,
        mulaw_receive: trio.MemoryReceiveChannel[AudioBatch],
        audio_send: AudioOutput,
    ) -> None:
        async with mulaw_receive, audio_send:
            if self.target == MULAW_8K:
                # The receive is this loop's checkpoint; the send waits only when the
                # channel is full (backpressure), so a batch costs one task switch here.
                async for batch in mulaw_receive:
                    try:
                        audio_send.send_nowait(batch)
                    except trio.WouldBlock:
                        await audio_send.send(batch)
                return
            if self.target.encoding != "pcm16":
                raise ValueError(f"cannot convert call audio to {self.target}")
            resampler = StreamResampler(8000, self.target.sample_rate)
            # Span of input whose output has not been sent yet (soxr may hold a few ms).
            span_start: int | None = None
            span_end = 0
            async for batch in mulaw_receive:
                if span_start is None:
                    span_start = batch.start_ms
                span_end = batch.end_ms
                pcm = resampler.process(mulaw_to_pcm16(batch.payload))
                if pcm:
                    await audio_send.send(AudioBatch(span_start, span_end - span_start, pcm))
                    span_start = None
            tail = resampler.flush()
            if tail or span_start is not None:
                start = span_end if span_start is None else span_start
                await audio_send.send(AudioBatch(start, span_end - start, tail))
