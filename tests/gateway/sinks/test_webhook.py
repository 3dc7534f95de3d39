"""webhook:URL sink against a real HTTP server on 127.0.0.1 (trio + h11), and through a real gateway."""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import UTC, datetime

import orjson
import pytest
import trio

from actors.backoff import Backoff
from gateway.simulator import simulate_call
from gateway.sinks import JsonlSink, open_sink_hub
from gateway.sinks.base import SinkDeliveryError, SinkSpecError, parse_sink_spec
from gateway.sinks.webhook import SECRET_ENV, WebhookWriter, from_spec, retry_after_seconds
from providers.scripted import ScriptedProvider
from tests.conftest import running_gateway
from tests.fakes.webhook_server import Answer, WebhookServer
from tests.helpers import call_ids, tone

CALL_LIMIT = 30  # seconds: a bound on each test, never an assertion on speed
SECRET = "whsec-test-0123456789"


def verified(secret: str, received) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, received.headers["x-earpiece-signature"])


def events(n: int, call: int = 1) -> list[dict]:
    sid, stream = call_ids(call)
    return [{"type": "transcript", "kind": "committed", "text": f"line {i}", "call_sid": sid, "stream_sid": stream,
             "seq": i, "provider": "scripted", "audio_start_ms": i * 100, "audio_end_ms": i * 100 + 90,
             "emitted_at": "2026-12-03T06:00:00.000Z"} for i in range(1, n + 1)]


def writer(url: str, **kwargs) -> WebhookWriter:
    writer = from_spec(parse_sink_spec(f"webhook:{url}"), {SECRET_ENV: SECRET})
    return WebhookWriter(writer.url, secret=SECRET, **kwargs)


async def test_500_three_times_then_200_delivers_the_batch_once_signed_after_backoff(autojump_clock):
    server = WebhookServer([Answer(500)] * 3)
    batch = events(5)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        sink = writer(url, backoff=Backoff(1.0, 30.0))
        start = trio.current_time()
        await sink.write(batch)
        await sink.aclose()
        nursery.cancel_scope.cancel()
    assert len(server.received) == 4
    assert {r.body for r in server.received} == {b"[" + b",".join(orjson.dumps(e) for e in batch) + b"]"}
    assert orjson.loads(server.received[-1].body) == batch
    assert all(verified(SECRET, r) for r in server.received)
    assert {(r.method, r.target, r.headers["content-type"]) for r in server.received} == {
        ("POST", "/hook", "application/json")}
    # backoff 1, 2, 4 s, each shortened by at most half (jitter) and never longer
    times = [start] + [r.at for r in server.received]
    gaps = [b - a for a, b in zip(times[1:], times[2:])]
    assert all(ceiling / 2 <= gap <= ceiling for gap, ceiling in zip(gaps, (1.0, 2.0, 4.0))), gaps


def batches_of(lines: list[bytes], bodies: list[bytes]) -> list[int]:
    """Where each body starts in ``lines``; each body must be a run of consecutive lines,
    exactly as the JSONL sink wrote them, as one JSON array."""
    starts = []
    for body in bodies:
        first = orjson.dumps(orjson.loads(body)[0])
        start = lines.index(first)
        count = len(orjson.loads(body))
        assert body == b"[" + b",".join(lines[start:start + count]) + b"]"
        starts.append(start)
    return starts


async def test_a_call_through_the_gateway_reaches_the_webhook_in_order_despite_500s(tmp_path):
    """Every event the JSONL sink wrote arrives exactly once answered 200, signed, in order."""
    server = WebhookServer([Answer(500)] * 3)
    jsonl_path = tmp_path / "events.jsonl"
    with trio.fail_after(CALL_LIMIT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(server.run)
            sinks = [(None, JsonlSink(jsonl_path)), (None, writer(url, backoff=Backoff(0.01, 0.05)))]
            async with open_sink_hub(sinks) as hub, running_gateway(ScriptedProvider(), [hub]) as gw:
                sid, stream = call_ids(3)
                await simulate_call(gw.ws_url, tone(4100), fast=True, call_sid=sid, stream_sid=stream)
                await gw.idle()
            nursery.cancel_scope.cancel()
    lines = jsonl_path.read_bytes().splitlines()
    _, hook = hub.statistics()
    assert (hook.queued, hook.delivered, hook.dropped) == (0, len(lines), 0)
    delivered = server.received[3:]  # the first batch was answered 500 three times
    assert len({r.body for r in server.received[:4]}) == 1
    assert batches_of(lines, [server.received[0].body]) == [0]
    # the batches answered 200, joined, are the JSONL file: every event once, in order
    assert [e for r in delivered for e in orjson.loads(r.body)] == [orjson.loads(line) for line in lines]
    assert batches_of(lines, [r.body for r in delivered]) == sorted(set(batches_of(lines, [r.body for r in delivered])))
    assert all(verified(SECRET, r) for r in server.received)
    assert orjson.loads(lines[-1])["type"] == "call_ended"


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422])
async def test_a_client_error_is_not_retried_and_the_batch_is_given_up(autojump_clock, status):
    server = WebhookServer([Answer(status)])
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        sink = writer(url)
        with pytest.raises(SinkDeliveryError, match=f"answered HTTP {status}; not retried"):
            await sink.write(events(2))
        await sink.write(events(1))  # the writer goes on with the next batch
        await sink.aclose()
        nursery.cancel_scope.cancel()
    assert [orjson.loads(r.body)[0]["seq"] for r in server.received] == [1, 1]
    assert len(server.received[0].body) > len(server.received[1].body)


async def test_a_redirect_is_not_followed(autojump_clock):
    server = WebhookServer([Answer(307, (("Location", "/elsewhere"),))])
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        sink = writer(url)
        with pytest.raises(SinkDeliveryError, match="HTTP 307 .redirects are not followed"):
            await sink.write(events(1))
        await sink.aclose()
        nursery.cancel_scope.cancel()
    assert [r.target for r in server.received] == ["/hook"]


@pytest.mark.parametrize(("answer", "waited"), [
    (Answer(429, (("Retry-After", "7"),)), 7.0),
    (Answer(503, (("Retry-After", "12"),)), 12.0),
    (Answer(429, (("Retry-After", "3600"),)), 20.0),  # capped
    (Answer(408), None),  # no Retry-After: backoff (1 s, jittered)
])
async def test_retry_after_is_honoured_within_the_cap(autojump_clock, answer, waited):
    server = WebhookServer([answer])
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        sink = writer(url, backoff=Backoff(1.0, 30.0), retry_after_cap=20.0)
        await sink.write(events(3))
        await sink.aclose()
        nursery.cancel_scope.cancel()
    first, second = server.received
    assert first.body == second.body
    if waited is None:
        assert 0.5 <= second.at - first.at <= 1.0
    else:
        assert second.at - first.at == pytest.approx(waited)


def test_retry_after_takes_seconds_or_an_http_date():
    now = datetime(2026, 12, 3, 6, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("Thu, 03 Dec 2026 06:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Thu, 03 Dec 2026 05:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


async def test_a_server_that_never_answers_costs_bounded_time_then_a_typed_error(autojump_clock, caplog):
    server = WebhookServer(then=Answer(hang=True))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        sink = writer(url, timeout=5.0, max_attempts=4, backoff=Backoff(1.0, 30.0))
        start = trio.current_time()
        with pytest.raises(SinkDeliveryError, match="gave up on 2 events after 4 attempts: no answer within 5 s"):
            await sink.write(events(2))
        elapsed = trio.current_time() - start
        await sink.aclose()
        nursery.cancel_scope.cancel()
    assert len(server.received) == 4
    assert 4 * 5.0 + (1 + 2 + 4) / 2 <= elapsed <= 4 * 5.0 + 1 + 2 + 4
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) == 3


async def test_an_unreachable_host_is_retried_then_given_up(autojump_clock):
    async with trio.open_nursery() as nursery:
        server = WebhookServer()
        url = await nursery.start(server.run)
        nursery.cancel_scope.cancel()  # nothing listens on that port any more
    sink = writer(url, max_attempts=3, backoff=Backoff(0.5, 0.5, jitter=0))
    start = trio.current_time()
    with pytest.raises(SinkDeliveryError, match="after 3 attempts: ConnectError"):
        await sink.write(events(1))
    assert trio.current_time() - start == pytest.approx(1.0)
    await sink.aclose()


async def test_a_call_finishes_whole_while_its_webhook_never_answers(tmp_path, caplog):
    """The hub never makes the call wait: no audio lost, the other sink gets everything,
    and every event the webhook could not take is counted (failed, or dropped when the
    flush timeout ends shutdown) and said in the log."""
    server = WebhookServer(then=Answer(hang=True))
    jsonl_path = tmp_path / "events.jsonl"
    with trio.fail_after(CALL_LIMIT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(server.run)
            sinks = [(None, JsonlSink(jsonl_path)),
                     (None, writer(url, timeout=0.2, max_attempts=2, backoff=Backoff(0.01, 0.01)))]
            async with open_sink_hub(sinks, flush_timeout=0.5) as hub:
                async with running_gateway(ScriptedProvider(), [hub]) as gw:
                    await simulate_call(gw.ws_url, tone(2100), fast=True)
                    await gw.idle()
                _, during = hub.statistics()
            nursery.cancel_scope.cancel()
    lines = jsonl_path.read_bytes().splitlines()
    ended = orjson.loads(lines[-1])
    assert (ended["type"], ended["reason"], ended["audio_ms"], ended["dropped_ms"]) == ("call_ended", "stop", 2100, 0)
    assert [orjson.loads(line)["text"] for line in lines if b'"committed"' in line] == [
        "audio 0 to 2000", "audio 2000 to 2100"]
    other, hook = hub.statistics()
    assert (other.queued, other.delivered, other.dropped) == (0, len(lines), 0)
    # while the calls ran, nothing reached the webhook (a batch in its stuck write is in neither count)
    assert during.delivered == 0 and during.queued + during.failed <= len(lines)
    # at shutdown, after its 0.5 s: nothing delivered, nothing left, every event counted lost
    assert (hook.queued, hook.delivered, hook.dropped) == (0, 0, len(lines))
    assert hub.dropped_by_sink() == {f"jsonl:{jsonl_path}": 0, hook.name: len(lines)}
    messages = [r.getMessage() for r in caplog.records if r.name == "earpiece.sinks"]
    assert any(f"sink {hook.name} gave up on" in m and "no answer within 0.2 s" in m for m in messages)
    assert any(f"sink {hook.name} lost events" in m and f"totals {hook.dropped_partials}/{hook.dropped_other}/"
               f"{hook.failed}" in m for m in messages)
    # what reached the server (an attempt may time out before its request is in) came in order, each at most twice
    starts = batches_of(lines, [r.body for r in server.received])
    assert starts == sorted(starts) and all(starts.count(i) <= 2 for i in starts)


async def test_without_a_secret_nothing_is_signed_and_the_secret_never_shows(autojump_clock, caplog):
    caplog.set_level(logging.INFO)
    server = WebhookServer([Answer(500)], then=Answer(400))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.run)
        unsigned = from_spec(parse_sink_spec(f"webhook:{url}?token=abc"), {})
        unsigned_error = None
        try:
            await unsigned.write(events(1))
        except SinkDeliveryError as exc:
            unsigned_error = exc
        signed = from_spec(parse_sink_spec(f"webhook:{url}"), {SECRET_ENV: SECRET})
        try:
            await signed.write(events(1))
        except SinkDeliveryError as exc:
            signed_error = exc
        await unsigned.aclose()
        await signed.aclose()
        nursery.cancel_scope.cancel()
    assert "x-earpiece-signature" not in server.received[0].headers
    assert server.received[0].target == "/hook?token=abc"
    assert verified(SECRET, server.received[-1])
    assert unsigned.name == signed.name == f"webhook:{url}"  # no query: tokens stay out of logs
    assert f"{SECRET_ENV} is not set" in caplog.text
    shown = [caplog.text, repr(signed), signed.name, str(unsigned_error), str(signed_error)]
    assert not any(SECRET in text or "abc" in text for text in shown)


@pytest.mark.parametrize(("spec", "message"), [
    ("webhook:", "expected webhook:https://host"),
    ("webhook:ftp://example.test/x", "expected webhook:https://host"),
    ("webhook:http://", "expected webhook:https://host"),
    ("webhook:crm.example/hook", "expected webhook:https://host"),
])
def test_bad_webhook_specs_say_what_to_fix(spec, message):
    with pytest.raises(SinkSpecError, match=message):
        from_spec(parse_sink_spec(spec), {})
