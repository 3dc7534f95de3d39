"""The per-call runtime (run_call and its actors), in virtual time over memory channels."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing

from actors.call import run_call
from actors.config import CallConfig
from providers.base import MULAW_8K, AudioFormat
from providers.events import ProviderClosed, ProviderEvent
from providers.scripted import ScriptedProvider
from tests.helpers import ListSink, call_ids, play, task_count, tone, twilio_script


async def _run(script, provider, sink, *, config=None, realtime=True, close=True):
    send, receive = trio.open_memory_channel[str](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: play(send, script, close=close, realtime=realtime))
        outcome = await run_call(receive, provider, [sink], config=config)
        nursery.cancel_scope.cancel()
    return outcome


async def test_stop_delivers_every_byte_and_the_final_transcript(autojump_clock):
    provider, sink = ScriptedProvider(), ListSink()
    audio = tone(5000)
    before = task_count()
    with trio.fail_after(30):
        outcome = await _run(twilio_script(audio), provider, sink)
    assert task_count() == before
    assert outcome.reason == "stop"
    assert bytes(provider.sessions[0].received) == audio
    assert sink.committed() == ["audio 0 to 2000", "audio 2000 to 4000", "audio 4000 to 5000"]
    types = sink.types()
    assert types[0] == "call_started" and types[-1] == "call_ended"
    assert [e["seq"] for e in sink.events] == list(range(1, len(sink.events) + 1))
    ended = sink.events[-1]
    assert (ended["reason"], ended["audio_ms"], ended["forwarded_ms"], ended["dropped_ms"]) == ("stop", 5000, 5000, 0)
    committed = [e for e in sink.events if e["type"] == "transcript" and e["kind"] == "committed"]
    assert [(e["audio_start_ms"], e["audio_end_ms"]) for e in committed] == [(0, 2000), (2000, 4000), (4000, 5000)]
    call_sid, stream_sid = call_ids(1)
    assert all(e["call_sid"] == call_sid and e["stream_sid"] == stream_sid for e in sink.events)
    assert sink.events[0]["custom_parameters"] == {"From": "+15005550006"}


async def test_partials_arrive_while_audio_flows(autojump_clock):
    provider, sink = ScriptedProvider(), ListSink()
    await _run(twilio_script(tone(1500)), provider, sink)
    partials = [e["text"] for e in sink.events if e.get("kind") == "partial"]
    assert partials == ["audio 0 to 500", "audio 0 to 1000", "audio 0 to 1500"]


async def test_socket_dropped_without_stop_still_flushes_the_final(autojump_clock):
    provider, sink = ScriptedProvider(), ListSink()
    outcome = await _run(twilio_script(tone(3000), stop=False), provider, sink)
    assert outcome.reason == "disconnect"
    assert sink.committed() == ["audio 0 to 2000", "audio 2000 to 3000"]
    assert sink.events[-1]["reason"] == "disconnect"


async def test_dtmf_is_an_event_at_its_audio_position(autojump_clock):
    provider, sink = ScriptedProvider(), ListSink()
    await _run(twilio_script(tone(1000), dtmf={400: "5"}), provider, sink)
    dtmf = [e for e in sink.events if e["type"] == "dtmf"]
    assert [(e["digit"], e["audio_ms"]) for e in dtmf] == [("5", 400)]


@pytest.mark.parametrize(
    ("bad", "detail"),
    [
        ("{not json", "JSON"),
        ("[1, 2]", ""),
        ('{"event": "media", "sequenceNumber": "3", "streamSid": "MZ00000000000000000000000000000001",'
         ' "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "@@@"}}', "payload"),
    ],
)
async def test_malformed_message_ends_only_that_call_with_error(autojump_clock, bad, detail):
    provider, sink = ScriptedProvider(), ListSink()
    script = list(twilio_script(tone(1000)))
    script.insert(5, (bad, False))
    outcome = await _run(iter(script), provider, sink, close=False)
    assert outcome.reason == "error"
    assert detail in outcome.detail
    ended = sink.events[-1]
    assert ended["type"] == "call_ended" and ended["reason"] == "error" and ended["detail"]


async def test_media_before_start_ends_the_call_without_a_call(autojump_clock):
    provider, sink = ScriptedProvider(), ListSink()
    script = list(twilio_script(tone(100)))
    del script[1]  # no start
    outcome = await _run(iter(script), provider, sink, close=False)
    assert outcome.reason == "error"
    assert sink.events == []


async def test_pcm16_provider_gets_resampled_audio_with_exact_accounting(autojump_clock):
    provider, sink = ScriptedProvider(audio_format=AudioFormat("pcm16", 16000)), ListSink()
    await _run(twilio_script(tone(3000)), provider, sink)
    received = len(provider.sessions[0].received)
    assert abs(received - 3000 * 32) <= 64  # 16 kHz × 2 bytes; soxr's delay is flushed at the end
    ended = sink.events[-1]
    assert (ended["audio_ms"], ended["forwarded_ms"], ended["dropped_ms"]) == (3000, 3000, 0)


# --- a provider that stops taking audio: the Twilio edge must keep reading -------------


@attrs.define
class StuckSession:
    sent: int = 0
    accept: int = 3  # batches accepted before blocking forever

    async def send_audio(self, audio: bytes) -> None:
        if self.sent >= self.accept:
            await trio.sleep_forever()
        self.sent += 1

    async def finalize(self) -> None:
        await trio.sleep_forever()

    async def keepalive(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive(self) -> ProviderEvent:
        await trio.sleep_forever()
        return ProviderClosed(1006)  # pragma: no cover


@attrs.define
class StuckProvider:
    name: str = "stuck"
    audio_format: AudioFormat = MULAW_8K
    chunk_ms: int | None = None
    keepalive_interval: float | None = None
    session: StuckSession = attrs.field(factory=StuckSession)

    @asynccontextmanager
    async def open_session(self) -> AsyncIterator[StuckSession]:
        yield self.session


async def test_stuck_provider_never_blocks_twilio_and_loss_is_counted_exactly(autojump_clock):
    provider, sink = StuckProvider(), ListSink()
    config = CallConfig(edge_buffer_ms=1000, drain_timeout=2.0)
    start = trio.current_time()
    outcome = await _run(twilio_script(tone(10_000)), provider, sink, config=config)
    # Twilio's 10 s were read at Twilio's pace: nothing waited on the provider.
    assert trio.current_time() - start == pytest.approx(10.0 + 2.0, abs=0.1)
    ended = sink.events[-1]
    assert ended["audio_ms"] == 10_000
    assert ended["forwarded_ms"] == 300
    assert ended["dropped_ms"] == 9_700
    assert "final transcript not received within 2 s" in outcome.detail


async def test_two_calls_are_isolated(autojump_clock):
    provider, sink = ScriptedProvider(), ListSink()

    async def one(n, script):
        send, receive = trio.open_memory_channel[str](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: play(send, script, close=False))
            await run_call(receive, provider, [sink])
            nursery.cancel_scope.cancel()

    script_bad = list(twilio_script(tone(2000, seed=2), n=2))
    script_bad.insert(30, ("garbage", False))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, 1, twilio_script(tone(4000, seed=1), n=1))
        nursery.start_soon(one, 2, iter(script_bad))
    good, bad = call_ids(1)[0], call_ids(2)[0]
    assert sink.committed(good) == ["audio 0 to 2000", "audio 2000 to 4000"]
    assert sink.of_call(good)[-1]["reason"] == "stop"
    assert sink.of_call(bad)[-1]["reason"] == "error"
    by_len = sorted(provider.sessions, key=lambda s: len(s.received))
    assert bytes(by_len[1].received) == tone(4000, seed=1)
