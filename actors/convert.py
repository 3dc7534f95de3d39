"""FormatConverter: call audio in one ``AudioFormat`` into another, as a stream.

Needed only when a fallback provider takes another format than the one the call's
audio is buffered in (run_call then buffers 8 kHz mu-law and each session converts).
Pure (no trio); one instance per provider session, so its filter state starts with the
session's audio.
"""

from __future__ import annotations

from providers.base import AudioFormat

from .dsp import StreamResampler, mulaw_to_pcm16, pcm16_to_mulaw

__all__ = ["FormatConverter"]


class FormatConverter:
    def __init__(self, source: AudioFormat, target: AudioFormat) -> None:
        if target.encoding == "mulaw" and target.sample_rate != 8000:
            raise ValueError(f"cannot produce {target}: mu-law is 8 kHz")
        self.source = source
        self.target = target
        self._resampler = StreamResampler(source.sample_rate, target.sample_rate)

    def convert(self, payload: bytes) -> bytes:
        pcm = mulaw_to_pcm16(payload) if self.source.encoding == "mulaw" else payload
        return self._encode(self._resampler.process(pcm))

    def flush(self) -> bytes:
        return self._encode(self._resampler.flush())

    def _encode(self, pcm: bytes) -> bytes:
        if not pcm:
            return b""
        return pcm16_to_mulaw(pcm) if self.target.encoding == "mulaw" else pcm
