"""Provider resilience end to end on a real Hypercorn server (127.0.0.1, port 0), driven
by the Twilio simulator: what a Twilio call and a sink see when the providers fail."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial

import trio

from gateway.app import Gateway
from gateway.config import Settings
from gateway.serve import serve_gateway
from gateway.simulator import simulate_call
from providers.base import SttProvider
from providers.chain import ProviderChain
from providers.scripted import Close, RefuseHandshake, ScriptedProvider
from tests.conftest import RunningGateway, running_gateway
from tests.helpers import ListSink, call_ids, task_count, tone

CALL_LIMIT = 30  # seconds: a bound on each test, never an assertion on speed


@asynccontextmanager
async def serving(providers: ProviderChain | SttProvider, sinks: Sequence, grace: float = 5.0,
                  **settings) -> AsyncIterator[tuple[RunningGateway, trio.Event]]:
    """Like ``conftest.running_gateway``, with a provider chain and the shutdown
    trigger in the test's hands."""
    settings.setdefault("max_busy", None)  # load shedding has its own tests (test_overload.py)
    chain = ProviderChain.of(providers)
    gateway = Gateway(Settings(port=0, provider=chain.primary.name, **settings), chain, sinks)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve_gateway, gateway, shutdown_trigger=stop.wait, grace=grace))
        http = next(b for b in binds if b.startswith("http://127.0.0.1"))
        try:
            yield RunningGateway(gateway, http), stop
        finally:
            stop.set()


def committed_spans(events: list[dict]) -> list[tuple[int, int]]:
    return [(e["audio_start_ms"], e["audio_end_ms"]) for e in events if e.get("kind") == "committed"]


def assert_tiles(events: list[dict], end_ms: int) -> None:
    got = committed_spans(events)
    assert got and got[0][0] == 0 and got[-1][1] == end_ms, got
    assert all(x[1] == y[0] for x, y in zip(got, got[1:])), got


async def test_every_provider_down_keeps_the_twilio_socket_open_and_counts_all_audio_dropped():
    always_503 = ScriptedProvider(name="primary", faults=lambda attempt: [RefuseHandshake(503)])
    always_401 = ScriptedProvider(name="fallback", faults=lambda attempt: [RefuseHandshake(401)])
    sink = ListSink()
    call_sid, stream_sid = call_ids(9)
    before = task_count()
    with trio.fail_after(CALL_LIMIT):
        async with serving(ProviderChain(always_503, always_401), [sink]) as (gw, _):
            result = await simulate_call(gw.ws_url, tone(3000), call_sid=call_sid, stream_sid=stream_sid)
            await gw.idle()
    assert task_count() == before
    assert not result.closed_by_gateway and result.frames_sent == 150  # Twilio streamed to its stop
    assert result.close_code == 1000
    events = sink.of_call(call_sid)
    types = [e["type"] for e in events]
    assert types[0] == "call_started" and types[-1] == "call_ended" and "transcript" not in types
    errors = [(e["provider"], e["fatal"]) for e in events if e["type"] == "provider_error"]
    # primary: 5 attempts (0.1 + 0.2 + 0.4 + 0.8 s backoff, ±jitter); fallback: fatal at once;
    # then the primary is probed every ~5 s while the call lasts
    assert errors[:6] == [("primary", False)] * 5 + [("fallback", True)]
    assert all(p == "primary" for p, _ in errors[6:])
    failovers = [(e["from"], e["to"]) for e in events if e["type"] == "provider_failover"]
    assert failovers[:2] == [("primary", "fallback"), ("fallback", "primary")]
    ended = events[-1]
    assert (ended["reason"], ended["audio_ms"], ended["forwarded_ms"], ended["dropped_ms"]) == ("stop", 3000, 0, 3000)


async def test_a_single_provider_refusing_every_session_still_ends_the_call_with_stop():
    provider = ScriptedProvider(faults=lambda attempt: [RefuseHandshake(503)])
    sink = ListSink()
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            result = await simulate_call(gw.ws_url, tone(2000), call_sid=call_ids(3)[0])
            await gw.idle()
    assert not result.closed_by_gateway
    ended = sink.events[-1]
    assert (ended["reason"], ended["audio_ms"], ended["forwarded_ms"], ended["dropped_ms"]) == ("stop", 2000, 0, 2000)
    assert ended["provider_errors"] == len([e for e in sink.events if e["type"] == "provider_error"]) >= 5


async def test_failover_through_the_gateway_gives_the_fallback_the_replayed_tail():
    primary = ScriptedProvider(name="primary", faults={0: [Close(1011, after_ms=2500)],
                                                       **{a: [RefuseHandshake(401)] for a in range(1, 3)}})
    fallback = ScriptedProvider(name="fallback")
    audio = tone(4000)
    sink = ListSink()
    with trio.fail_after(CALL_LIMIT):
        async with serving(ProviderChain(primary, fallback), [sink]) as (gw, _):
            await simulate_call(gw.ws_url, audio, fast=True)
            await gw.idle()
    assert bytes(primary.sessions[0].received) == audio[:2500 * 8]
    assert bytes(fallback.sessions[0].received) == audio[2000 * 8:]
    assert [e["provider"] for e in sink.events if e.get("kind") == "committed"] == ["primary", "fallback"]
    assert_tiles(sink.events, 4000)
    ended = sink.events[-1]
    assert (ended["reason"], ended["forwarded_ms"], ended["dropped_ms"], ended["failovers"]) == ("stop", 4000, 0, 1)


async def test_twilio_drop_while_the_provider_reconnects_ends_with_disconnect_after_the_final_flush():
    provider = ScriptedProvider(faults={0: [Close(1006, after_ms=2000)], 1: [RefuseHandshake(503)]})
    audio = tone(2500)
    sink = ListSink()
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            await simulate_call(gw.ws_url, audio, fast=True, end="drop")
            await gw.idle()
    assert bytes(provider.sessions[-1].received) == audio[2000 * 8:]
    assert_tiles(sink.events, 2500)
    ended = sink.events[-1]
    assert (ended["reason"], ended["forwarded_ms"], ended["dropped_ms"]) == ("disconnect", 2500, 0)


async def test_server_shutdown_drains_a_live_call_which_ends_with_shutdown_and_no_audio_lost():
    provider = ScriptedProvider(faults={0: [Close(1011, after_ms=1000)]})  # and a reconnect on the way
    sink = ListSink()
    call_sid = call_ids(5)[0]
    with trio.fail_after(CALL_LIMIT):
        async with serving(provider, [sink], grace=5.0) as (gw, shutdown):
            async with trio.open_nursery() as nursery:
                results = []

                async def caller() -> None:
                    results.append(await simulate_call(gw.ws_url, tone(20_000), call_sid=call_sid))

                nursery.start_soon(caller)
                while len(provider.sessions) < 2 or len(provider.sessions[-1].received) < 8 * 1500:
                    await trio.sleep(0.05)  # 1.5 s in: one reconnect done, audio flowing
                shutdown.set()
            await gw.idle()
    [result] = results
    assert result.closed_by_gateway and result.close_code == 1001  # "going away", after the drain
    events = sink.of_call(call_sid)
    ended = events[-1]
    assert ended["type"] == "call_ended" and ended["reason"] == "shutdown"
    assert 1500 <= ended["audio_ms"] < 20_000
    assert (ended["forwarded_ms"], ended["dropped_ms"]) == (ended["audio_ms"], 0)
    assert_tiles(events, ended["audio_ms"])  # the final transcript was flushed before the socket closed
    assert "provider_reconnected" in [e["type"] for e in events]


def test_the_fallback_flag_builds_the_chain_the_gateway_runs_calls_with():
    from gateway.cli import build_parser, configure

    args = build_parser().parse_args(["serve", "--provider", "scripted", "--fallback", "scripted, scripted"])
    settings, chain = configure(args, {})
    assert settings.fallback == ("scripted", "scripted") and len(chain) == 3
    assert [p.name for p in chain] == ["scripted"] * 3 and len({id(p) for p in chain}) == 3
    assert chain.fallbacks == tuple(chain)[1:]
    gateway = Gateway(settings, chain, [])
    assert gateway.chain is chain and gateway.stream_endpoint.chain is chain
