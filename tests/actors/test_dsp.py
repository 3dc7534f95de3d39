"""actors.dsp: G.711 mu-law, the streaming resampler, WAV input."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import soxr

from actors.dsp import (
    MULAW_DECODE_TABLE,
    StreamResampler,
    mulaw_to_pcm16,
    pcm16_to_mulaw,
    read_wav,
    wav_to_mulaw_8k,
)


def pcm(*samples: int) -> bytes:
    return np.array(samples, dtype="<i2").tobytes()


def samples_of(pcm16: bytes) -> np.ndarray:
    return np.frombuffer(pcm16, dtype="<i2").astype(np.int64)


def sine(rate: int, seconds: float, hz: float = 440.0, amplitude: float = 12000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * hz * t) * amplitude).astype("<i2")


# --- mu-law -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "sample"),
    [(0xFF, 0), (0x7F, 0), (0x00, -32124), (0x80, 32124), (0xFE, 8), (0x7E, -8), (0xEF, 132)],
)
def test_mulaw_decode_known_values(code: int, sample: int) -> None:
    """The table and the bytes decoder agree with G.711 for known codes."""
    assert MULAW_DECODE_TABLE[code] == sample
    assert mulaw_to_pcm16(bytes([code])) == pcm(sample)


@pytest.mark.parametrize(
    ("sample", "code"),
    [(0, 0xFF), (1, 0xFF), (-1, 0x7F), (32124, 0x80), (-32124, 0x00),
     (32767, 0x80), (-32768, 0x00), (8, 0xFE), (-8, 0x7E)],
)
def test_mulaw_encode_known_values(sample: int, code: int) -> None:
    """Encoding uses bias 0x84 and clips at 32635 (so the extremes map to the end codes)."""
    assert pcm16_to_mulaw(pcm(sample)) == bytes([code])


def test_mulaw_round_trip_of_all_256_codes() -> None:
    """encode(decode(c)) == c for every code but 0x7F, the negative zero, which becomes 0xFF."""
    codes = bytes(range(256))
    back = pcm16_to_mulaw(mulaw_to_pcm16(codes))
    expected = bytearray(codes)
    expected[0x7F] = 0xFF
    assert back == bytes(expected)
    assert mulaw_to_pcm16(back) == mulaw_to_pcm16(codes)


def test_mulaw_quantisation_is_monotonic_and_bounded() -> None:
    """Every int16 encodes to a code whose decoded value is non-decreasing and close."""
    everything = np.arange(-32768, 32768, dtype="<i2")
    decoded = samples_of(mulaw_to_pcm16(pcm16_to_mulaw(everything.tobytes())))
    assert np.all(np.diff(decoded) >= 0)
    assert np.abs(decoded - everything.astype(np.int64)).max() < 1024


def test_mulaw_sizes_and_byte_order() -> None:
    """One byte per sample, decoded pcm16 is little-endian; empty in, empty out."""
    assert mulaw_to_pcm16(b"\x80") == b"\x7c\x7d"  # 32124 little-endian
    assert len(pcm16_to_mulaw(bytes(320))) == 160
    assert mulaw_to_pcm16(b"") == b""
    assert pcm16_to_mulaw(b"") == b""


def test_pcm16_to_mulaw_rejects_odd_byte_count() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        pcm16_to_mulaw(b"\x00\x00\x00")


# --- StreamResampler ----------------------------------------------------------


def stream_through(resampler: StreamResampler, signal: np.ndarray, sizes: list[int]) -> bytes:
    out = bytearray()
    start = 0
    i = 0
    while start < len(signal):
        size = sizes[i % len(sizes)]
        out += resampler.process(signal[start : start + size].tobytes())
        start += size
        i += 1
    out += resampler.flush()
    return bytes(out)


@pytest.mark.parametrize(
    ("in_rate", "out_rate"),
    [(8000, 16000), (8000, 24000), (8000, 44100), (16000, 8000), (44100, 8000)],
)
@pytest.mark.parametrize("sizes", [[160], [1, 7, 33, 160, 2, 399]], ids=["20ms", "ragged"])
def test_resampler_streaming_equals_one_shot(in_rate: int, out_rate: int, sizes: list[int]) -> None:
    """Many small chunks give (within 4 LSB) the one-shot result and the exact length."""
    signal = sine(in_rate, 1.5)
    one_shot = np.asarray(soxr.resample(signal, in_rate, out_rate, quality="HQ"), dtype=np.int64)
    streamed = samples_of(stream_through(StreamResampler(in_rate, out_rate), signal, sizes))
    expected_len = len(signal) * out_rate / in_rate
    assert abs(len(streamed) - expected_len) <= 1
    assert len(streamed) == len(one_shot)
    assert np.abs(streamed - one_shot).max() <= 4


def test_resampler_keeps_state_so_there_are_no_dropouts() -> None:
    """Every 20 ms of output after the start-up delay carries the full sine: no gaps at chunk edges."""
    resampler = StreamResampler(8000, 16000)
    signal = sine(8000, 3.0, hz=300.0, amplitude=10000.0)
    out = samples_of(stream_through(resampler, signal, [160]))
    windows = out[640 : len(out) - 640].reshape(-1, 320)  # skip 40 ms at each end
    rms = np.sqrt((windows.astype(np.float64) ** 2).mean(axis=1))
    assert rms.min() > 0.95 * 10000 / np.sqrt(2)
    assert rms.max() < 1.05 * 10000 / np.sqrt(2)


def test_resampler_may_hold_tiny_input_and_returns_it_on_flush() -> None:
    """A few samples can produce b"" now; flush() returns the held output."""
    resampler = StreamResampler(8000, 16000)
    first = resampler.process(pcm(100, 200, 300))
    assert isinstance(first, bytes)
    assert len(first + resampler.flush()) == 12  # 3 samples -> 6 samples
    assert resampler.flush() == b""


def test_resampler_identity_when_rates_are_equal() -> None:
    """Equal rates: the same bytes object comes back, nothing is held."""
    resampler = StreamResampler(16000, 16000)
    chunk = pcm(1, 2, 3)
    assert resampler.process(chunk) is chunk
    assert resampler.flush() == b""


def test_resampler_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="even number"):
        StreamResampler(8000, 16000).process(b"\x00")
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(0, 16000)
    resampler = StreamResampler(8000, 16000)
    resampler.flush()
    with pytest.raises(RuntimeError, match="after flush"):
        resampler.process(pcm(1))


# --- read_wav -----------------------------------------------------------------


def encode_width(values: np.ndarray, width: int) -> bytes:
    """Little-endian WAV sample bytes of ``values`` (already in the width's own range)."""
    if width == 1:
        return values.astype(np.uint8).tobytes()
    if width == 3:
        return values.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    return values.astype({2: "<i2", 4: "<i4"}[width]).tobytes()


def to_int16(values: np.ndarray, width: int) -> np.ndarray:
    """What read_wav must make of one channel: 8-bit recentred, wider keep the top 16 bits."""
    values = values.astype(np.int64)
    if width == 1:
        return (values - 128) << 8
    return values >> (8 * (width - 2))


def random_channel(rng: np.random.Generator, width: int, n: int) -> np.ndarray:
    if width == 1:
        values = rng.integers(0, 256, n)
        values[:2] = [0, 255]
    else:
        low, high = -(1 << (8 * width - 1)), (1 << (8 * width - 1)) - 1
        values = rng.integers(low, high, n, endpoint=True)
        values[:2] = [low, high]
    return values


def write_wav(path: Path, frames: bytes, *, width: int, channels: int, rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(frames)


@pytest.mark.parametrize("width", [1, 2, 3, 4], ids=["8bit", "16bit", "24bit", "32bit"])
@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_read_wav_gives_expected_samples(tmp_path: Path, width: int, channels: int, rate: int) -> None:
    """Any integer PCM width, mono or stereo (averaged, floor), any rate."""
    rng = np.random.default_rng(width * 100 + channels * 10 + rate)
    n = 500
    chans = [random_channel(rng, width, n) for _ in range(channels)]
    interleaved = np.stack(chans, axis=1).reshape(-1)
    path = tmp_path / "call.wav"
    write_wav(path, encode_width(interleaved, width), width=width, channels=channels, rate=rate)

    got, got_rate = read_wav(path)

    expected = sum(to_int16(c, width) for c in chans) // channels
    assert got_rate == rate
    assert np.array_equal(samples_of(got), expected)


def extensible_wav(fmt_code: int, *, width: int, channels: int, rate: int, frames: bytes) -> bytes:
    """A WAVE_FORMAT_EXTENSIBLE file (what ffmpeg/sox write for 24-bit or >2 channels)."""
    guid = struct.pack("<H", fmt_code) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    block = width * channels
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, width * 8, 22, width * 8, 0) + guid
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(frames)) + frames
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def test_read_wav_accepts_extensible_pcm(tmp_path: Path) -> None:
    """WAVE_FORMAT_EXTENSIBLE with the PCM subformat reads like plain PCM."""
    left = np.array([0x7FFFFF, -0x800000, 0x123456, 0], dtype=np.int64)
    right = np.array([0x7FFFFF, 0, -0x123456, 0x000100], dtype=np.int64)
    frames = encode_width(np.stack([left, right], axis=1).reshape(-1), 3)
    path = tmp_path / "ext.wav"
    path.write_bytes(extensible_wav(1, width=3, channels=2, rate=48000, frames=frames))

    got, rate = read_wav(path)

    assert rate == 48000
    assert np.array_equal(samples_of(got), (to_int16(left, 3) + to_int16(right, 3)) // 2)


def test_read_wav_empty_file_gives_no_samples(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    write_wav(path, b"", width=2, channels=1, rate=8000)
    assert read_wav(path) == (b"", 8000)


def float_wav() -> bytes:
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32)
    data = np.zeros(10, dtype="<f4").tobytes()
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


@pytest.mark.parametrize(
    "content",
    [
        float_wav(),
        extensible_wav(3, width=4, channels=1, rate=8000, frames=bytes(40)),
        b"this is not a wav file at all",
        b"RIFF\x10\x00\x00\x00WAVE",
        b"",
    ],
    ids=["float", "extensible-float", "garbage", "truncated", "empty"],
)
def test_read_wav_rejects_non_pcm_or_garbage_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad-input.wav"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad-input.wav"):
        read_wav(path)


def test_read_wav_missing_file_is_a_value_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing.wav"):
        read_wav(tmp_path / "missing.wav")


# --- wav_to_mulaw_8k ------------------------------------------------------------


def test_wav_to_mulaw_8k_at_8k_is_plain_encoding(tmp_path: Path) -> None:
    """An 8 kHz file is not resampled: exactly the mu-law of its samples."""
    signal = sine(8000, 0.25)
    path = tmp_path / "8k.wav"
    write_wav(path, signal.tobytes(), width=2, channels=1, rate=8000)
    assert wav_to_mulaw_8k(path) == pcm16_to_mulaw(signal.tobytes())


@pytest.mark.parametrize("rate", [16000, 44100])
def test_wav_to_mulaw_8k_resamples_to_8k(tmp_path: Path, rate: int) -> None:
    """Other rates come out at 8000 bytes per second and keep the signal."""
    signal = sine(rate, 0.5)
    path = tmp_path / "in.wav"
    write_wav(path, signal.tobytes(), width=2, channels=1, rate=rate)

    mulaw = wav_to_mulaw_8k(path)

    assert len(mulaw) == 4000
    expected = sine(8000, 0.5).astype(np.int64)
    decoded = samples_of(mulaw_to_pcm16(mulaw))
    # Compare away from the filter's edge effects; mu-law error is ~3% at this level.
    assert np.abs(decoded[200:-200] - expected[200:-200]).max() < 1000
