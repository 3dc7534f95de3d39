"""Audio DSP: G.711 mu-law, streaming resampling, WAV input.

Pure functions and one stateful resampler; no trio, no clock, no logging.
PCM is always signed 16-bit little-endian mono (``pcm16``).
"""

from __future__ import annotations

import os
import wave
from typing import Final

import numpy as np
import soxr

__all__ = [
    "MULAW_DECODE_TABLE",
    "StreamResampler",
    "mulaw_to_pcm16",
    "pcm16_to_mulaw",
    "read_wav",
    "wav_to_mulaw_8k",
]

_PCM16: Final = np.dtype("<i2")

# G.711 mu-law constants: the bias added before the segment search and the
# largest magnitude that still fits in the top segment once biased.
MULAW_BIAS: Final = 0x84
MULAW_CLIP: Final = 32635


def _build_decode_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + MULAW_BIAS) << exponent) - MULAW_BIAS
    table = np.where(codes & 0x80, -magnitude, magnitude).astype(_PCM16)
    table.flags.writeable = False
    return table


def _build_encode_table() -> np.ndarray:
    # Indexed by the int16 sample reinterpreted as uint16 (two's complement).
    samples = np.arange(65536, dtype=np.int32)
    samples = np.where(samples >= 32768, samples - 65536, samples)
    sign = np.where(samples < 0, 0x80, 0x00)
    biased = np.minimum(np.abs(samples), MULAW_CLIP) + MULAW_BIAS
    # Segment = position of the highest set bit above bit 7 (biased >= 0x84, so >= 0).
    exponent = np.floor(np.log2(biased)).astype(np.int32) - 7
    mantissa = (biased >> (exponent + 3)) & 0x0F
    table = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    table.flags.writeable = False
    return table


#: mu-law byte -> int16 sample (G.711, bias 0x84).
MULAW_DECODE_TABLE: Final[np.ndarray] = _build_decode_table()
_MULAW_ENCODE_TABLE: Final[np.ndarray] = _build_encode_table()


def mulaw_to_pcm16(data: bytes) -> bytes:
    """Decode G.711 mu-law bytes to pcm16 (two bytes out per byte in)."""
    return MULAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def pcm16_to_mulaw(data: bytes) -> bytes:
    """Encode pcm16 to G.711 mu-law (bias 0x84, clip 32635); one byte per sample.

    Raises ``ValueError`` on an odd number of bytes.
    """
    return _MULAW_ENCODE_TABLE[_as_samples(data).view("<u2")].tobytes()


def _as_samples(pcm16: bytes) -> np.ndarray:
    if len(pcm16) % 2:
        raise ValueError(f"pcm16 audio must have an even number of bytes, got {len(pcm16)}")
    return np.frombuffer(pcm16, dtype=_PCM16)


class StreamResampler:
    """Resamples a pcm16 stream chunk by chunk, keeping filter state across chunks.

    One instance per call direction, alive for the whole call: its state is
    never cleared mid-call, because clearing drops the samples soxr holds back
    for its filter and produces audible gaps at chunk boundaries.

    ``process`` may return ``b""`` for tiny inputs (soxr holds them until it
    has enough); callers must handle empty output.  ``flush`` drains what is
    held and ends the stream.  With equal rates, both are the identity (no
    soxr, no copy).
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream: soxr.ResampleStream | None = None
        if in_rate != out_rate:
            self._stream = soxr.ResampleStream(
                in_rate, out_rate, 1, dtype="int16", quality="HQ"
            )
        self._flushed = False

    def process(self, pcm16: bytes) -> bytes:
        """Feed pcm16 at ``in_rate``; return whatever pcm16 at ``out_rate`` is ready."""
        if self._flushed:
            raise RuntimeError("StreamResampler.process() after flush()")
        if self._stream is None:
            _as_samples(pcm16)  # same validation as the resampling path
            return pcm16
        if not pcm16:
            return b""
        return self._stream.resample_chunk(_as_samples(pcm16)).tobytes()

    def flush(self) -> bytes:
        """End the stream and return the samples soxr was still holding."""
        if self._flushed:
            return b""
        self._flushed = True
        if self._stream is None:
            return b""
        return self._stream.resample_chunk(np.zeros(0, dtype=_PCM16), last=True).tobytes()


def read_wav(path: str | os.PathLike[str]) -> tuple[bytes, int]:
    """Read any integer-PCM WAV file as ``(pcm16 mono, sample_rate)``.

    Accepts 8-bit (unsigned), 16-, 24- and 32-bit (signed) samples; wider
    samples keep their top 16 bits.  Several channels are mixed down to mono by
    averaging (rounded towards minus infinity).  Raises ``ValueError`` naming
    the file when it is missing, unreadable, not a WAV, or not integer PCM.
    """
    name = os.fspath(path)
    try:
        with wave.open(name, "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            rate = wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except wave.Error as exc:
        if str(exc) != f"unknown format: {_WAVE_FORMAT_EXTENSIBLE}":
            raise ValueError(f"{name}: not a readable PCM WAV file ({exc})") from exc
        # Python 3.11's wave rejects WAVE_FORMAT_EXTENSIBLE, which many tools
        # write for 24/32-bit or multichannel PCM.
        channels, width, rate, raw = _read_extensible_pcm(name)
    except (EOFError, OSError) as exc:
        raise ValueError(f"{name}: not a readable PCM WAV file ({exc})") from exc
    if channels < 1 or rate <= 0:
        raise ValueError(f"{name}: bad WAV header ({channels} channels, {rate} Hz)")
    if width not in (1, 2, 3, 4):
        raise ValueError(f"{name}: unsupported sample width of {width * 8} bits")
    usable = len(raw) - len(raw) % (width * channels)  # ignore a truncated last frame
    samples = _to_int16_range(np.frombuffer(raw[:usable], dtype=np.uint8), width)
    if channels > 1:
        mixed = samples.reshape(-1, channels).sum(axis=1, dtype=np.int32) // channels
        samples = mixed.astype(_PCM16)
    return samples.astype(_PCM16, copy=False).tobytes(), rate


_WAVE_FORMAT_PCM: Final = 0x0001
_WAVE_FORMAT_EXTENSIBLE: Final = 0xFFFE
# KSDATAFORMAT_SUBTYPE_PCM without its leading two-byte format code.
_GUID_TAIL: Final = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def _read_extensible_pcm(name: str) -> tuple[int, int, int, bytes]:
    """``(channels, sample_width, rate, frames)`` of a WAVE_FORMAT_EXTENSIBLE PCM file."""
    with open(name, "rb") as file:
        data = file.read()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{name}: not a RIFF/WAVE file")
    fmt: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            fmt = body
        elif chunk_id == b"data":
            break
        pos += 8 + size + (size & 1)
    else:
        raise ValueError(f"{name}: no data chunk")
    if fmt is None or len(fmt) < 40:
        raise ValueError(f"{name}: missing or short fmt chunk")
    channels = int.from_bytes(fmt[2:4], "little")
    rate = int.from_bytes(fmt[4:8], "little")
    block_align = int.from_bytes(fmt[12:14], "little")
    sub_format = fmt[24:40]
    if int.from_bytes(sub_format[:2], "little") != _WAVE_FORMAT_PCM or sub_format[2:] != _GUID_TAIL:
        raise ValueError(f"{name}: not integer PCM (extensible subformat {sub_format.hex()})")
    if channels < 1 or block_align % channels:
        raise ValueError(f"{name}: bad WAV header ({channels} channels, block {block_align})")
    return channels, block_align // channels, rate, body


def _to_int16_range(raw: np.ndarray, width: int) -> np.ndarray:
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        return ((raw.astype(np.int16) - 128) << 8).astype(_PCM16)
    if width == 2:
        return raw.view(_PCM16)
    if width == 3:
        # Little-endian 24-bit: bytes 1 and 2 are the top 16 bits.
        triples = raw.reshape(-1, 3)
        return (triples[:, 1].astype(np.uint16) | (triples[:, 2].astype(np.uint16) << 8)).view(
            _PCM16
        )
    return (raw.view("<i4") >> 16).astype(_PCM16)


def wav_to_mulaw_8k(path: str | os.PathLike[str]) -> bytes:
    """Read a PCM WAV file and return it as 8 kHz mono mu-law (what Twilio sends)."""
    pcm16, rate = read_wav(path)
    if rate != 8000:
        resampled = soxr.resample(np.frombuffer(pcm16, dtype=_PCM16), rate, 8000, quality="HQ")
        pcm16 = np.asarray(resampled, dtype=_PCM16).tobytes()
    return pcm16_to_mulaw(pcm16)
