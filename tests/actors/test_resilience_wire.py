"""Every fault class once more on real sockets: a loopback WebSocket fake
(``tests/fakes/faults.py``) behind the real ``providers/websocket.py`` shell.

Real time (no virtual clock): Twilio is played at 4x real time to keep the tests short;
the fake commits every 1000 ms of the audio its connection received.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.call import CallOutcome, run_call
from actors.config import CallConfig
from providers.chain import ProviderChain
from providers.scripted.faults import Close, ErrorMessage, Garbage, RefuseHandshake, SlowConsumer, Stall
from tests.fakes.faults import FakeWireServer, WireProvider
from tests.fakes.ws_server import serve_fake
from tests.helpers import ListSink, task_count, tone, twilio_script

LIMIT = 30
FRAME_PACE = 0.005  # seconds per 20 ms frame: 4x real time
CONFIG = CallConfig(backoff_jitter=0, stall_timeout=0.5, drain_timeout=5.0)


class TimedSink(ListSink):
    async def emit(self, event: Any) -> None:
        self.events.append({**event, "t": trio.current_time()})


async def wire_call(audio: bytes, *servers: FakeWireServer, config: CallConfig = CONFIG
                    ) -> tuple[CallOutcome, TimedSink]:
    sink = TimedSink()
    with trio.fail_after(LIMIT):
        async with _serve_all(servers) as urls:
            providers = [WireProvider(url, name=f"wire{i}" if i else "wire") for i, url in enumerate(urls)]
            send, receive = trio.open_memory_channel[str](0)

            async def twilio() -> None:
                async with send:
                    for message, is_media in twilio_script(audio):
                        await send.send(message)
                        if is_media:
                            await trio.sleep(FRAME_PACE)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(twilio)
                outcome = await run_call(receive, ProviderChain(*providers), [sink], config=config)
    return outcome, sink


class _serve_all:
    def __init__(self, servers: tuple[FakeWireServer, ...]) -> None:
        self._servers = servers
        self._stack: list[Any] = []

    async def __aenter__(self) -> list[str]:
        urls = []
        for server in self._servers:
            manager = serve_fake(server.handler)
            urls.append(await manager.__aenter__())
            self._stack.append(manager)
        return urls

    async def __aexit__(self, *exc: object) -> None:
        while self._stack:
            await self._stack.pop().__aexit__(None, None, None)


def spans(sink: ListSink) -> list[tuple[int, int, str]]:
    return [(e["audio_start_ms"], e["audio_end_ms"], e["provider"]) for e in sink.events
            if e["type"] == "transcript" and e["kind"] == "committed"]


def assert_tiles(sink: ListSink, end_ms: int) -> None:
    got = [(a, b) for a, b, _ in spans(sink)]
    assert got and got[0][0] == 0 and got[-1][1] == end_ms, got
    assert all(x[1] == y[0] and x[0] < x[1] for x, y in zip(got, got[1:])), got


def provider_events(sink: ListSink) -> list[str]:
    return [e["type"] for e in sink.events if e["type"].startswith("provider_")]


def ended(sink: ListSink) -> tuple[str, int, int, int]:
    last = sink.events[-1]
    return last["reason"], last["audio_ms"], last["forwarded_ms"], last["dropped_ms"]


@pytest.mark.parametrize(("fault", "ended_by", "detail"), [
    (Close(1011, after_ms=1500, reason="internal"), "close 1011", "1011"),
    (Close(1006, after_ms=1500), "drop", "1006"),
    (Garbage(after_ms=1500), "client", "not a message of ours"),
    (ErrorMessage(False, after_ms=1500, vendor_type="rate_limited"), "client", "rate_limited"),
], ids=["close 1011", "TCP drop", "garbage", "retryable error"])
async def test_mid_utterance_faults_on_the_wire_reconnect_and_replay_the_tail(fault, ended_by, detail):
    server = FakeWireServer({0: [fault]})
    audio = tone(3000)
    before = task_count()
    _, sink = await wire_call(audio, server)
    assert task_count() == before
    first, second = server.connections
    assert first.ended_by == ended_by
    assert bytes(first.audio) == audio[:len(first.audio)] and first.audio_ms >= 1500
    assert bytes(second.audio) == audio[1000 * 8:]  # the uncommitted tail from 1.0 s, then the rest
    assert provider_events(sink) == ["provider_error", "provider_reconnected"]
    error = next(e for e in sink.events if e["type"] == "provider_error")
    assert error["fatal"] is False and detail in error["detail"]
    assert_tiles(sink, 3000)
    assert ended(sink) == ("stop", 3000, 3000, 0)


async def test_handshake_503_is_retried_and_401_fails_over_to_a_second_server():
    primary = FakeWireServer({0: [RefuseHandshake(503)], 1: [RefuseHandshake(401)]})
    fallback = FakeWireServer()
    audio = tone(2000)
    _, sink = await wire_call(audio, primary, fallback)
    assert [c.refused for c in primary.connections] == [503, 401]
    assert bytes(fallback.connections[0].audio) == audio
    assert provider_events(sink) == ["provider_error", "provider_error", "provider_failover", "provider_reconnected"]
    errors = [e for e in sink.events if e["type"] == "provider_error"]
    assert [(e["fatal"], e["error"]) for e in errors] == [(False, "ProviderConnectionError"),
                                                         (True, "ProviderAuthError")]
    assert [p for _, _, p in spans(sink)] == ["wire1", "wire1"]
    assert_tiles(sink, 2000)
    assert ended(sink) == ("stop", 2000, 2000, 0)


async def test_a_fatal_error_message_without_fallback_keeps_the_call_and_counts_the_loss():
    server = FakeWireServer({0: [ErrorMessage(True, after_ms=1500, vendor_type="quota_exceeded")]})
    _, sink = await wire_call(tone(3000), server)
    assert len(server.connections) == 1
    assert provider_events(sink) == ["provider_error"]
    reason, audio_ms, forwarded, dropped = ended(sink)
    assert (reason, audio_ms) == ("stop", 3000) and dropped == audio_ms - forwarded > 0
    assert forwarded >= server.connections[0].audio_ms >= 1500  # what the socket took, at least what it read
    assert spans(sink)[0] == (0, 1000, "wire")


@pytest.mark.parametrize("stop_reading", [False, True], ids=["stops answering", "stops reading too"])
async def test_a_stalled_server_is_caught_by_the_watchdog_and_replaced(stop_reading):
    server = FakeWireServer({0: [Stall(after_ms=1200, stop_reading=stop_reading)]})
    audio = tone(4000)
    _, sink = await wire_call(audio, server)
    assert server.connections[0].ended_by == "stall"
    error = next(e for e in sink.events if e["type"] == "provider_error")
    assert error["error"] == "ProviderStalledError"
    assert bytes(server.connections[1].audio) == audio[1000 * 8:]
    assert_tiles(sink, 4000)
    assert ended(sink) == ("stop", 4000, 4000, 0)


async def test_a_server_reading_at_half_real_time_is_tolerated_and_catches_up_at_the_end():
    server = FakeWireServer({0: [SlowConsumer(0.5)]})
    audio = tone(2000)
    outcome, sink = await wire_call(audio, server, config=CallConfig(drain_timeout=8.0, stall_timeout=5.0))
    assert len(server.connections) == 1 and not provider_events(sink)
    assert bytes(server.connections[0].audio) == audio
    assert_tiles(sink, 2000)
    assert ended(sink) == ("stop", 2000, 2000, 0)
    assert outcome.statistics.replay_peak_ms <= 2000
