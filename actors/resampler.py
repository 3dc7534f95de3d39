"""Resampler: the call's audio (mu-law 8 kHz) into the format its ReplayBuffer holds.

Whether that is a conversion or a pass-through is ``actors.convert.replay_format``'s
rule for the call's provider chain; the converting is ``CallAudioConverter``'s."""

from __future__ import annotations

from typing import Protocol

import trio

from providers.base import MULAW_8K, AudioFormat

from .convert import CallAudioConverter
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
    """Consumes mu-law ``AudioBatch``es; produces batches in ``target`` format (the
    call's ``replay_format``).  Closes ``audio_send`` when ``mulaw_receive`` ends.

    When ``target`` is 8 kHz mu-law (a chain of cloud vendors, or a chain of mixed
    formats whose sessions convert) this is a pass-through: the same batch object moves
    on, no decode, no copy.  Otherwise one ``CallAudioConverter`` converts the call's
    audio, its state alive for the whole call.  Each output batch keeps the call-clock
    span of the input it came from (soxr may hold a few ms back: an empty output's span
    is carried into the next batch's).
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
                await _pass_through(mulaw_receive, audio_send)
            else:
                await _convert(CallAudioConverter(self.target), mulaw_receive, audio_send)


async def _pass_through(mulaw_receive: trio.MemoryReceiveChannel[AudioBatch], audio_send: AudioOutput) -> None:
    # The receive is this loop's checkpoint; the send waits only when the channel is
    # full (backpressure), so a batch costs one task switch here.
    async for batch in mulaw_receive:
        try:
            audio_send.send_nowait(batch)
        except trio.WouldBlock:
            await audio_send.send(batch)


async def _convert(converter: CallAudioConverter, mulaw_receive: trio.MemoryReceiveChannel[AudioBatch],
                   audio_send: AudioOutput) -> None:
    # Span of input whose output has not been sent yet (soxr may hold a few ms).
    span_start: int | None = None
    span_end = 0
    async for batch in mulaw_receive:
        if span_start is None:
            span_start = batch.start_ms
        span_end = batch.end_ms
        converted = converter.convert(batch.payload)
        if converted:
            await audio_send.send(AudioBatch(span_start, span_end - span_start, converted))
            span_start = None
    tail = converter.flush()
    if tail or span_start is not None:
        start = span_end if span_start is None else span_start
        await audio_send.send(AudioBatch(start, span_end - start, tail))
