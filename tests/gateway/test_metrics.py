"""``GET /metrics``: after real calls through a real gateway (127.0.0.1, port 0), every
named series holds what the calls' own events say, read with prometheus-client's parser."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial

import httpx
import pytest
import trio
import trio_websocket
from prometheus_client.parser import text_string_to_metric_families

from actors.stats import ARRIVALS_KEPT, ArrivalClock, CallStats
from gateway.app import Gateway
from gateway.calls import CallRegistry, wait_idle
from gateway.config import Settings
from gateway.metrics import GatewayMetrics, read_refusal
from gateway.serve import serve_gateway
from gateway.simulator import simulate_call
from providers.base import SttProvider
from providers.chain import ProviderChain
from providers.scripted import Close, RefuseHandshake, ScriptedProvider
from tests.conftest import RunningGateway
from tests.helpers import ListSink, call_ids, open_stream_socket, tone, twilio_script

CALL_LIMIT = 60  # seconds: a bound on each test, never an assertion on speed

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


@asynccontextmanager
async def serving(providers: ProviderChain | SttProvider, sinks: Sequence, **settings) -> AsyncIterator[RunningGateway]:
    settings.setdefault("max_busy", None)
    chain = ProviderChain.of(providers)
    gateway = Gateway(Settings(port=0, provider=chain.primary.name, **settings), chain, sinks)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve_gateway, gateway, shutdown_trigger=stop.wait, grace=5))
        try:
            yield RunningGateway(gateway, next(b for b in binds if b.startswith("http://127.0.0.1")))
        finally:
            stop.set()


def first_partials(events: list[dict]) -> Counter[str]:
    """Per provider: partials that open an utterance (the first of the call, or the first after a commit)."""
    opened: Counter[str] = Counter()
    open_calls: set[str] = set()
    for e in events:
        if e["type"] != "transcript":
            continue
        if e["kind"] == "committed":
            open_calls.discard(e["call_sid"])
        elif e["call_sid"] not in open_calls:
            opened[e["provider"]] += 1
            open_calls.add(e["call_sid"])
    return opened


async def test_metrics_after_scripted_calls_hold_what_their_events_say():
    # attempt 0 drops mid-call (a reconnect); attempt 2 is refused with 401 (failover)
    primary = ScriptedProvider(name="primary", partial_ms=300, commit_ms=1000,
                               faults={0: [Close(1011, after_ms=1000)], 2: [RefuseHandshake(401)]})
    fallback = ScriptedProvider(name="fallback", partial_ms=300, commit_ms=1000)
    sink = ListSink()
    with trio.fail_after(CALL_LIMIT):
        async with serving(ProviderChain(primary, fallback), [sink], max_calls=1) as gw, httpx.AsyncClient() as http:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(simulate_call, gw.ws_url, tone(3000), call_sid=call_ids(1)[0]))
                while not any(r.stats for r in gw.gateway.registry.calls.values()):
                    await trio.sleep(0.01)
                refused = await http.post(gw.http_url + "/twilio/voice", data={"CallSid": call_ids(99)[0]})
                assert 'Reject reason="busy"' in refused.text
            await gw.idle()
            await simulate_call(gw.ws_url, tone(2500), fast=True, call_sid=call_ids(2)[0])
            await gw.idle()
            # a third call whose Twilio side skips two media messages (sequence gaps)
            messages = [m for i, (m, _) in enumerate(twilio_script(tone(1000), n=3)) if i not in (10, 20)]
            async with open_stream_socket(gw.ws_url) as ws:
                for message in messages:
                    await ws.send_message(message)
                with pytest.raises(trio_websocket.ConnectionClosed):
                    while True:  # until the gateway closes the stream after the call's stop
                        await ws.get_message()
            await gw.idle()
            response = await http.get(gw.http_url + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    m = parse(response.text)
    events = sink.events
    ended = [e for e in events if e["type"] == "call_ended"]
    assert len(ended) == 3

    assert series(m, "earpiece_calls_total") == {
        frozenset({("reason", r)}): float(n) for r, n in Counter(e["reason"] for e in ended).items()}
    assert series(m, "earpiece_calls_refused_total") == {frozenset({("why", "max_calls")}): 1.0}
    assert value(m, "earpiece_calls_active") == 0
    for name, field in (("received", "audio_ms"), ("forwarded", "forwarded_ms"), ("dropped", "dropped_ms")):
        assert value(m, f"earpiece_audio_{name}_seconds_total") == pytest.approx(
            sum(e[field] for e in ended) / 1000)
    assert value(m, "earpiece_audio_received_seconds_total") == pytest.approx(3.0 + 2.5 + 0.96)  # 2 frames skipped
    gaps = sum(e["sequence_gaps"] for e in ended)
    assert gaps > 0 and value(m, "earpiece_twilio_sequence_gaps_total") == gaps

    assert series(m, "earpiece_provider_sessions_total") == {
        frozenset({("provider", "primary")}): float(len(primary.sessions)),
        frozenset({("provider", "fallback")}): float(len(fallback.sessions))}
    assert (len(primary.sessions), len(fallback.sessions)) == (3, 1)
    errors = Counter((e["provider"], e["error"]) for e in events if e["type"] == "provider_error")
    assert errors == {("primary", "ProviderConnectionError"): 1, ("primary", "ProviderAuthError"): 1}
    assert series(m, "earpiece_provider_errors_total") == {
        frozenset({("provider", "primary"), ("kind", "connection")}): 1.0,
        frozenset({("provider", "primary"), ("kind", "auth")}): 1.0}
    assert series(m, "earpiece_provider_reconnects_total") == {
        frozenset({("provider", p)}): float(n)
        for p, n in Counter(e["provider"] for e in events if e["type"] == "provider_reconnected").items()}
    assert series(m, "earpiece_provider_failovers_total") == {
        frozenset({("from_provider", "primary"), ("to_provider", "fallback")}): 1.0}

    transcripts = Counter((e["provider"], e["kind"]) for e in events if e["type"] == "transcript")
    assert series(m, "earpiece_transcripts_total") == {
        frozenset({("provider", p), ("kind", k)}): float(n) for (p, k), n in transcripts.items()}
    for provider in ("primary", "fallback"):
        committed = transcripts[(provider, "committed")]
        assert committed > 0
        assert value(m, "earpiece_transcription_delay_seconds_count", provider=provider) == committed
        assert value(m, "earpiece_transcription_delay_seconds_bucket", provider=provider, le="+Inf") == committed
        assert value(m, "earpiece_first_partial_delay_seconds_count", provider=provider) == \
            first_partials(events)[provider]
    assert 0 <= value(m, "earpiece_event_loop_busy_ratio")


async def test_the_delay_runs_from_reading_the_last_audio_to_emitting_the_transcript(autojump_clock):
    metrics, stats = GatewayMetrics(), CallStats()
    observer = metrics.observe_call(lambda: stats)
    base = {"type": "transcript", "provider": "p", "audio_start_ms": 0}
    for end_ms in range(100, 1100, 100):  # a 100 ms batch read every 0.1 s from t = 10.1
        await trio.sleep_until(10 + end_ms / 1000)
        stats.arrivals.arrived(end_ms, trio.current_time())
    await trio.sleep_until(11.25)
    await observer.emit({**base, "kind": "partial", "audio_end_ms": 700})  # read at 10.7: 0.55 s
    await observer.emit({**base, "kind": "partial", "audio_end_ms": 800})  # not the first: not observed
    await observer.emit({**base, "kind": "committed", "audio_end_ms": 950})  # in the batch read at 11.0
    await observer.emit({**base, "kind": "partial", "audio_end_ms": 1000})  # opens the next utterance
    m = parse(metrics.render().decode())
    assert value(m, "earpiece_transcription_delay_seconds_count", provider="p") == 1
    assert value(m, "earpiece_transcription_delay_seconds_sum", provider="p") == pytest.approx(0.25)
    assert value(m, "earpiece_first_partial_delay_seconds_count", provider="p") == 2
    assert value(m, "earpiece_first_partial_delay_seconds_sum", provider="p") == pytest.approx(0.55 + 0.25)
    assert value(m, "earpiece_transcripts_total", provider="p", kind="partial") == 3


def test_audio_older_than_the_kept_batches_is_dated_at_real_time_pace():
    clock = ArrivalClock()
    assert clock.time_of(0) is None
    for i in range(1, ARRIVALS_KEPT + 11):  # 10 batches more than are kept
        clock.arrived(i * 100, 50.0 + i * 0.1)
    assert clock.time_of(ARRIVALS_KEPT * 100 + 1000) == pytest.approx(50.0 + (ARRIVALS_KEPT + 10) * 0.1)
    assert clock.time_of(2050) == pytest.approx(50.0 + 2.1)  # inside the ring: the batch that ended at 2100
    oldest_end = 1100  # batch 11 is the oldest kept
    assert clock.time_of(oldest_end - 500) == pytest.approx(50.0 + 1.1 - 0.5)


class Drops:
    def __init__(self) -> None:
        self.counts = {"jsonl:calls.jsonl": 0}

    def dropped_by_sink(self) -> dict[str, int]:
        return dict(self.counts)


def test_sink_drops_are_copied_in_as_they_grow():
    metrics, drops = GatewayMetrics(), Drops()
    metrics.watch_sink_drops(drops)
    drops.counts["jsonl:calls.jsonl"] = 3
    metrics.refresh()
    drops.counts["jsonl:calls.jsonl"] = 5
    metrics.refresh(busy=0.4)
    metrics.refresh()
    m = parse(metrics.render().decode())
    assert value(m, "earpiece_sink_events_dropped_total", sink="jsonl:calls.jsonl") == 5
    assert value(m, "earpiece_event_loop_busy_ratio") == 0.4


async def test_metrics_need_the_api_token_when_one_is_set():
    with trio.fail_after(CALL_LIMIT):
        async with serving(ScriptedProvider(), [], api_token="s3cret") as gw, httpx.AsyncClient() as http:
            missing = await http.get(gw.http_url + "/metrics")
            wrong = await http.get(gw.http_url + "/metrics", headers={"Authorization": "Bearer nope"})
            right = await http.get(gw.http_url + "/metrics", headers={"Authorization": "Bearer s3cret"})
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert "s3cret" not in missing.text + wrong.text
    assert "earpiece_calls_active 0.0" in right.text


def test_without_a_token_only_loopback_clients_may_read():
    assert read_refusal([], "127.0.0.1", None) is None
    assert read_refusal([], "::1", None) is None
    assert read_refusal([], "203.0.113.7", None)[0] == 403
    assert read_refusal([(b"authorization", b"Bearer t")], "203.0.113.7", "t") is None
    assert read_refusal([(b"authorization", b"Bearer t")], "127.0.0.1", "u")[0] == 401


async def test_the_metrics_port_serves_metrics_alone_on_loopback():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with trio.fail_after(CALL_LIMIT):
        async with serving(ScriptedProvider(), [], metrics_port=port, api_token="t0k") as gw, \
                httpx.AsyncClient() as http:
            await simulate_call(gw.ws_url, tone(1000), fast=True)
            await wait_idle(gw.gateway.registry)
            url = f"http://127.0.0.1:{port}"
            scraped = await http.get(url + "/metrics", headers={"Authorization": "Bearer t0k"})
            refused = await http.get(url + "/metrics")
            other = await http.get(url + "/readyz", headers={"Authorization": "Bearer t0k"})
    assert (scraped.status_code, refused.status_code, other.status_code) == (200, 401, 404)
    assert value(parse(scraped.text), "earpiece_calls_total", reason="stop") == 1


async def test_each_refusal_is_counted_with_its_reason():
    """Unsigned requests (signature), then the webhook while draining; overload and
    max_calls come from the same ``refusal_reason`` (max_calls end to end above)."""
    with trio.fail_after(CALL_LIMIT):
        async with serving(ScriptedProvider(), [], twilio_auth_token="tw-token") as gw, httpx.AsyncClient() as http:
            unsigned = await http.post(gw.http_url + "/twilio/voice", data={"CallSid": call_ids(1)[0]})
            with pytest.raises(trio_websocket.HandshakeError):
                await simulate_call(gw.ws_url, tone(200), fast=True)  # no X-Twilio-Signature on the upgrade
            gw.gateway.validator = None  # from here on the refusals are about capacity
            gw.gateway.registry.draining = True  # what a SIGTERM sets
            draining = await http.post(gw.http_url + "/twilio/voice", data={"CallSid": call_ids(3)[0]})
            ready = await http.get(gw.http_url + "/readyz")
            m = parse((await http.get(gw.http_url + "/metrics")).text)
    assert unsigned.status_code == 403 and 'Reject reason="busy"' in draining.text and ready.status_code == 503
    assert series(m, "earpiece_calls_refused_total") == {
        frozenset({("why", "signature")}): 2.0, frozenset({("why", "draining")}): 1.0}


def test_the_refusal_reason_names_what_stops_admission_first():
    registry = CallRegistry(max_calls=1)
    assert registry.refusal_reason() == ""
    registry.overloaded = True
    assert registry.refusal_reason() == "overload"
    registry.max_calls = 0
    assert registry.refusal_reason() == "max_calls"
    registry.draining = True
    assert registry.refusal_reason() == "draining"
