"""Where a call's audio is converted into its providers' formats, as the providers see it.

The rule (``actors.convert``): a chain whose providers all take one format is converted
once, by the Resampler, so a reconnect replays the very bytes sent before; a chain of
mixed formats keeps the call's mu-law and each session converts it for its provider.

soxr's HQ filter is not bit-reproducible from one run to the next (its SIMD path moves
results by up to 2 LSB, same length), so converted audio is compared with an
independent conversion sample by sample within ``SOXR_LSB``; audio that is not
converted, and replayed audio against what was sent before, are compared byte for byte.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import soxr
import trio

from actors.call import run_call
from actors.config import CallConfig
from actors.convert import CallAudioConverter, replay_format, session_converter
from actors.dsp import mulaw_to_pcm16
from providers.base import MULAW_8K, AudioFormat
from providers.chain import ProviderChain
from providers.scripted import Close, RefuseHandshake, ScriptedProvider
from tests.helpers import ListSink, play, twilio_script

PCM16_16K = AudioFormat("pcm16", 16000)
PCM16_24K = AudioFormat("pcm16", 24000)
SOXR_LSB = 2
LIMIT = 120  # virtual seconds: a bound on each test, never an assertion


def noise(ms: int, seed: int = 7) -> bytes:
    """Non-periodic mu-law (8 bytes per ms): a replayed run of it matches in one place only."""
    return random.Random(seed).randbytes(ms * 8)


def converted(mulaw: bytes, rate: int, batch_ms: int = 100) -> np.ndarray:
    """``mulaw`` resampled to ``rate`` straight with soxr, fed a batch at a time as a
    session is, then flushed: what a provider taking pcm16 at ``rate`` should hear."""
    stream = soxr.ResampleStream(8000, rate, 1, dtype="int16", quality="HQ")
    step = batch_ms * 8
    parts = [stream.resample_chunk(np.frombuffer(mulaw_to_pcm16(mulaw[i:i + step]), "<i2"))
             for i in range(0, len(mulaw), step)]
    parts.append(stream.resample_chunk(np.zeros(0, "<i2"), last=True))
    return np.concatenate(parts).astype(np.int64)


def samples(pcm16: bytes) -> np.ndarray:
    return np.frombuffer(pcm16, "<i2").astype(np.int64)


async def call(chain: ProviderChain, audio: bytes) -> ListSink:
    sink = ListSink()
    send, receive = trio.open_memory_channel[str](0)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(play, send, twilio_script(audio))
            await run_call(receive, chain, [sink], config=CallConfig(backoff_jitter=0))
            nursery.cancel_scope.cancel()
    return sink


def accounting(sink: ListSink) -> tuple[str, int, int, int]:
    ended = sink.events[-1]
    assert ended["type"] == "call_ended"
    return ended["reason"], ended["audio_ms"], ended["forwarded_ms"], ended["dropped_ms"]


def committed_spans(sink: ListSink) -> list[tuple[int, int]]:
    return [(e["audio_start_ms"], e["audio_end_ms"]) for e in sink.events
            if e["type"] == "transcript" and e["kind"] == "committed"]


def reconnect(sink: ListSink) -> dict:
    [event] = [e for e in sink.events if e["type"] == "provider_reconnected"]
    return event


# --- the rule ------------------------------------------------------------------------------


def test_one_format_for_the_whole_chain_is_what_the_call_holds_and_mixed_formats_hold_mulaw():
    pcm, mulaw = ScriptedProvider(audio_format=PCM16_16K), ScriptedProvider()
    assert replay_format(ProviderChain(pcm)) == PCM16_16K
    assert replay_format(ProviderChain(pcm, ScriptedProvider(audio_format=PCM16_16K))) == PCM16_16K
    assert replay_format(ProviderChain(mulaw, mulaw)) == MULAW_8K
    assert replay_format(ProviderChain(mulaw, pcm)) == MULAW_8K
    assert replay_format(ProviderChain(pcm, ScriptedProvider(audio_format=PCM16_24K))) == MULAW_8K


def test_a_session_converts_only_from_the_calls_mulaw_and_only_when_its_provider_needs_it():
    assert session_converter(PCM16_16K, PCM16_16K) is None
    assert session_converter(MULAW_8K, MULAW_8K) is None
    converter = session_converter(MULAW_8K, PCM16_24K)
    assert isinstance(converter, CallAudioConverter) and converter.target == PCM16_24K
    with pytest.raises(ValueError, match="only the call's mulaw/8000"):
        session_converter(PCM16_16K, PCM16_24K)


def test_the_converter_takes_pcm16_targets_only():
    with pytest.raises(ValueError, match="cannot convert call audio"):
        CallAudioConverter(MULAW_8K)
    with pytest.raises(ValueError, match="cannot convert call audio"):
        CallAudioConverter(AudioFormat("mulaw", 16000))


def test_the_converter_streams_what_soxr_makes_of_the_whole_input():
    audio = noise(1000)
    converter = CallAudioConverter(PCM16_16K)
    out = b"".join(converter.convert(audio[i:i + 800]) for i in range(0, len(audio), 800)) + converter.flush()
    expected = converted(audio, 16000)
    assert len(samples(out)) == len(expected) == 16000
    assert np.abs(samples(out) - expected).max() <= SOXR_LSB


# --- one format: converted once, a reconnect replays the very bytes --------------------------


async def test_a_one_format_chain_replays_the_bytes_it_sent_before_after_a_reconnect(autojump_clock):
    provider = ScriptedProvider(audio_format=PCM16_16K, faults={0: [Close(1011, after_ms=2500)]})
    audio = noise(5000)
    sink = await call(ProviderChain(provider), audio)
    first, second = (bytes(s.received) for s in provider.sessions)
    assert reconnect(sink)["offset_ms"] == 2000
    # The second session starts with the bytes the first was sent from 2000 ms on: the
    # same bytes again (a re-conversion would differ), at least the 500 ms tail.
    cut = first.find(second[:3200])
    assert cut > 0 and len(first) - cut >= 500 * 32 and first[cut:] == second[:len(first) - cut]
    # the call's audio was converted once, as one stream: what was sent is that stream
    whole = first[:cut] + second
    expected = converted(audio, 16000)
    assert len(samples(whole)) == len(expected)
    assert np.abs(samples(whole) - expected).max() <= SOXR_LSB
    assert committed_spans(sink)[:2] == [(0, 2000), (2000, 4000)]
    assert accounting(sink) == ("stop", 5000, 5000, 0)


# --- mixed formats: the buffer keeps mu-law, each session converts ---------------------------


async def test_failing_over_from_mulaw_to_pcm16_converts_the_replayed_mulaw_for_the_fallback(autojump_clock):
    primary = ScriptedProvider(name="primary", faults={0: [Close(1011, after_ms=2500)], 1: [RefuseHandshake(401)]})
    fallback = ScriptedProvider(name="fallback", audio_format=PCM16_16K)
    audio = noise(5000)
    sink = await call(ProviderChain(primary, fallback), audio)
    assert bytes(primary.sessions[0].received) == audio[:2500 * 8]  # mu-law as it came, no conversion
    offset = reconnect(sink)["offset_ms"]
    assert offset == 2000  # the uncommitted tail on
    heard = samples(bytes(fallback.sessions[0].received))
    expected = converted(audio[offset * 8:], 16000)  # a conversion of its own, from the tail on
    assert len(heard) == len(expected) == 3000 * 16
    assert np.abs(heard - expected).max() <= SOXR_LSB
    assert committed_spans(sink) == [(0, 2000), (2000, 4000), (4000, 5000)]
    assert accounting(sink) == ("stop", 5000, 5000, 0)


async def test_failing_over_from_pcm16_to_mulaw_gives_the_fallback_the_calls_own_bytes(autojump_clock):
    primary = ScriptedProvider(name="primary", audio_format=PCM16_16K,
                               faults={0: [Close(1011, after_ms=2500)], 1: [RefuseHandshake(401)]})
    fallback = ScriptedProvider(name="fallback")
    audio = noise(5000)
    sink = await call(ProviderChain(primary, fallback), audio)
    offset = reconnect(sink)["offset_ms"]
    assert bytes(fallback.sessions[0].received) == audio[offset * 8:]  # never converted and back
    heard = samples(bytes(primary.sessions[0].received))
    expected = converted(audio, 16000)[:len(heard)]  # the primary's session converted from the start
    assert len(heard) > 2000 * 16 and np.abs(heard - expected).max() <= SOXR_LSB
    assert accounting(sink) == ("stop", 5000, 5000, 0)


async def test_each_session_of_a_three_format_chain_hears_its_own_format(autojump_clock):
    a = ScriptedProvider(name="a", faults={0: [Close(1011, after_ms=2500)], 1: [RefuseHandshake(401)]})
    b = ScriptedProvider(name="b", audio_format=PCM16_16K,
                         faults={0: [Close(1011, after_ms=1500)], 1: [RefuseHandshake(401)]})
    c = ScriptedProvider(name="c", audio_format=PCM16_24K)
    audio = noise(7000)
    sink = await call(ProviderChain(a, b, c), audio)
    [to_b, to_c] = [e["offset_ms"] for e in sink.events if e["type"] == "provider_reconnected"]
    assert bytes(a.sessions[0].received) == audio[:2500 * 8]
    heard_c = samples(bytes(c.sessions[0].received))
    expected_c = converted(audio[to_c * 8:], 24000)
    assert len(heard_c) == len(expected_c) == (7000 - to_c) * 24
    assert np.abs(heard_c - expected_c).max() <= SOXR_LSB
    heard_b = samples(bytes(b.sessions[0].received))
    assert np.abs(heard_b - converted(audio[to_b * 8:], 16000)[:len(heard_b)]).max() <= SOXR_LSB
    assert [e["to"] for e in sink.events if e["type"] == "provider_failover"] == ["b", "c"]
    assert accounting(sink) == ("stop", 7000, 7000, 0)
