"""Live subscriptions: ``GET /calls``, ``GET /events``, ``GET /calls/<sid>/events`` on a real
gateway (Hypercorn on 127.0.0.1, port 0) with simulated calls, read by real streaming
clients (httpx, or a raw trio socket that stops reading); the hub's own rules on trio's
virtual clock."""

from __future__ import annotations

import socket

import httpx
import orjson
import pytest
import trio

from gateway import edge
from gateway.access import ReadAccess, is_loopback_client
from gateway.live import HEARTBEAT, EventId, LiveHub, parse_event_id, sse_stream
from gateway.simulator import simulate_call
from gateway.sinks import JsonlSink
from providers.scripted import ScriptedProvider
from tests.conftest import running_gateway
from tests.helpers import ListSink, call_ids, tone

LIMIT = 60  # seconds: a bound on each test, never an assertion on speed
TOKEN = "tok-3f9a-not-a-real-secret"


def parse_sse(body: bytes) -> list[dict[str, str]]:
    """SSE blocks with an ``id``/``event``/``data`` (comment-only blocks left out)."""
    blocks = []
    for block in body.split(b"\n\n"):
        fields: dict[str, str] = {}
        for line in block.decode().split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "data" in fields:
            blocks.append(fields)
    return blocks


class SseReader:
    """Reads one SSE response with httpx as it streams (``body`` grows)."""

    def __init__(self) -> None:
        self.status = 0
        self.body = b""
        self.opened = trio.Event()
        self.finished = trio.Event()
        self.changed = trio.Event()

    def events(self) -> list[dict[str, str]]:
        return parse_sse(self.body.rpartition(b"\n\n")[0] + b"\n\n")

    async def read(self, client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> None:
        try:
            async with client.stream("GET", url, headers=headers or {}) as response:
                self.status = response.status_code
                self.opened.set()
                async for chunk in response.aiter_raw():
                    self.body += chunk
                    self.changed.set()
                    self.changed = trio.Event()
        finally:
            self.opened.set()
            self.finished.set()

    async def wait_for(self, predicate) -> None:
        while not predicate(self.events()):
            await self.changed.wait()


def jsonl_lines(path) -> list[bytes]:
    return path.read_bytes().splitlines()


def held(lines: list[bytes]) -> list[bytes]:
    """The lines the hub still holds for resumes: a partial transcript only while no later
    transcript of its call superseded it."""
    events = [orjson.loads(line) for line in lines]
    later_transcript: set[str] = set()
    kept = []
    for line, e in zip(reversed(lines), reversed(events), strict=True):
        if e["type"] == "transcript":
            if e["kind"] == "partial" and e["call_sid"] in later_transcript:
                continue
            later_transcript.add(e["call_sid"])
        kept.append(line)
    return kept[::-1]


async def wait_until(condition) -> None:
    """Polls a gateway-side condition; every caller runs under ``trio.fail_after``."""
    while not condition():
        await trio.sleep(0.01)


async def open_raw_request(http_url: str, path: str, rcvbuf: int | None = None) -> trio.socket.SocketType:
    """A plain TCP socket that sent ``GET path`` (and reads only when the test says)."""
    sock = trio.socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", int(http_url.rsplit(":", 1)[1])))
    await sock.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock


# --- real gateway --------------------------------------------------------------------


async def test_sse_events_are_the_jsonl_lines_with_ids_and_types(tmp_path):
    path = tmp_path / "events.jsonl"
    jsonl = JsonlSink(path)
    sids = [call_ids(n)[0] for n in (1, 2)]
    with trio.fail_after(LIMIT):
        async with running_gateway(ScriptedProvider(), [jsonl]) as gw, \
                httpx.AsyncClient(base_url=gw.http_url, timeout=None) as client:
            every, one = SseReader(), SseReader()
            async with trio.open_nursery() as readers:
                readers.start_soon(every.read, client, "/events")
                readers.start_soon(one.read, client, f"/calls/{sids[1]}/events")
                await wait_until(lambda: gw.gateway.live.statistics().subscribers == 2)
                async with trio.open_nursery() as calls:
                    for n, seconds in ((1, 4.5), (2, 3.1)):
                        sid, stream_sid = call_ids(n)
                        calls.start_soon(lambda s=sid, m=stream_sid, ms=int(seconds * 1000): simulate_call(
                            gw.ws_url, tone(ms, seed=len(s)), fast=True, call_sid=s, stream_sid=m,
                            custom_parameters={"From": "+15005550006", "To": "+15005550001"}))
                await gw.idle()
                await every.wait_for(lambda evs: sum(e["event"] == "call_ended" for e in evs) == 2)
                await one.finished.wait()  # a one-call stream ends after its call_ended
                readers.cancel_scope.cancel()
    await jsonl.aclose()
    lines = jsonl_lines(path)
    events = [orjson.loads(line) for line in lines]
    assert every.status == one.status == 200
    assert [e["data"].encode() for e in every.events()] == lines
    assert [e["id"] for e in every.events()] == [f"{e['call_sid']}:{e['seq']}" for e in events]
    assert [e["event"] for e in every.events()] == [e["type"] for e in events]
    second = [line for line, e in zip(lines, events) if e["call_sid"] == sids[1]]
    assert [e["data"].encode() for e in one.events()] == second
    assert events[-1]["type"] == "call_ended" and {e["dropped_ms"] for e in events if e["type"] == "call_ended"} == {0}


async def test_last_event_id_resumes_with_exactly_the_events_after_it(tmp_path):
    path = tmp_path / "events.jsonl"
    jsonl = JsonlSink(path)
    sid1, sid2 = call_ids(1)[0], call_ids(2)[0]
    with trio.fail_after(LIMIT):
        async with running_gateway(ScriptedProvider(), [jsonl]) as gw:
            async with trio.open_nursery() as calls:
                for n in (1, 2):
                    calls.start_soon(lambda n=n: simulate_call(gw.ws_url, tone(4200, seed=n), fast=True,
                                                               call_sid=call_ids(n)[0], stream_sid=call_ids(n)[1]))
            await gw.idle()
            # superseded partials are not held: resumes get the rest, exactly
            lines = held(jsonl_lines(path))
            events = [orjson.loads(line) for line in lines]
            pick = next(i for i, e in enumerate(events) if e["call_sid"] == sid1 and e["seq"] >= 4)
            at = events[pick]["seq"]
            async with httpx.AsyncClient(base_url=gw.http_url, timeout=None) as client:
                # one call, header: that call's events after seq `at`; the stream ends at call_ended
                one = await client.get(f"/calls/{sid1}/events", headers={"Last-Event-ID": f"{sid1}:{at}"})
                # the query parameter does the same for an EventSource that cannot set headers
                by_query = await client.get(f"/calls/{sid1}/events", params={"last_event_id": f"{sid1}:{at}"})
                # the header wins over the query (an EventSource reconnects to its first URL)
                both = await client.get(f"/calls/{sid1}/events?last_event_id={sid1}:1",
                                        headers={"Last-Event-ID": f"{sid1}:{at}"})
                # nothing after the end of an ended call: 204, so an EventSource stops reconnecting
                last2 = max(e["seq"] for e in events if e["call_sid"] == sid2)
                done = await client.get(f"/calls/{sid2}/events", headers={"Last-Event-ID": f"{sid2}:{last2}"})
                replay = await client.get(f"/calls/{sid2}/events", params={"replay": "1"})
                # every call: everything published after that event, across calls, until shutdown ends it
                every = SseReader()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(every.read, client, "/events", {"Last-Event-ID": f"{sid1}:{at}"})
                    await every.wait_for(lambda evs: len(evs) == len(lines) - pick - 1)
                    gw.gateway.live.close()  # what shutdown does: the stream ends
                    await every.finished.wait()
    await jsonl.aclose()
    after_one = [line for line, e in zip(lines, events) if e["call_sid"] == sid1 and e["seq"] > at]
    assert [e["data"].encode() for e in parse_sse(one.content)] == after_one
    assert [e["data"].encode() for e in parse_sse(by_query.content)] == after_one
    assert [e["data"].encode() for e in parse_sse(both.content)] == after_one
    assert done.status_code == 204
    assert [e["data"].encode() for e in parse_sse(replay.content)] == [
        line for line, e in zip(lines, events) if e["call_sid"] == sid2]
    assert [e["data"].encode() for e in every.events()] == lines[pick + 1:]
    assert b"stream closed: the gateway is shutting down" in every.body


async def test_token_guards_calls_and_events_and_never_appears_in_answers():
    provider = ScriptedProvider()
    sid, stream_sid = call_ids(5)
    with trio.fail_after(LIMIT):
        async with running_gateway(provider, [], api_token=TOKEN) as gw, \
                httpx.AsyncClient(base_url=gw.http_url, timeout=None) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: simulate_call(  # real time: it is live while we look
                    gw.ws_url, tone(3000), call_sid=sid, stream_sid=stream_sid,
                    custom_parameters={"From": "+15005550006", "To": "+15005550001"}))
                await wait_until(lambda: any(r.stats and r.stats.audio_ms >= 200
                                             for r in gw.gateway.registry.calls.values()))
                answers = {
                    "calls, no token": await client.get("/calls"),
                    "calls, wrong token": await client.get("/calls", headers={"Authorization": "Bearer nope"}),
                    "events, no token": await client.get("/events"),
                    "call events, wrong ?token": await client.get(f"/calls/{sid}/events", params={"token": "x"}),
                }
                listed = await client.get("/calls", headers={"Authorization": f"Bearer {TOKEN}"})
                by_query = SseReader()
                nursery.start_soon(by_query.read, client, f"/calls/{sid}/events?token={TOKEN}&replay=1")
            await gw.idle()
    for what, answer in answers.items():
        assert answer.status_code == 401, what
        assert answer.headers["www-authenticate"].startswith("Bearer"), what
        assert TOKEN not in answer.text and TOKEN not in str(answer.headers), what
    assert listed.status_code == 200 and TOKEN not in listed.text
    [call] = listed.json()
    assert (call["call_sid"], call["from"], call["to"], call["provider"]) == (sid, "+15005550006", "+15005550001",
                                                                             "scripted")
    assert call["audio_ms"] >= 200 and call["dropped_ms"] == 0 and call["started"].endswith("Z")
    assert by_query.status == 200
    got = by_query.events()
    assert got[0]["event"] == "call_started" and got[-1]["event"] == "call_ended"
    assert [e["text"] for e in map(lambda e: orjson.loads(e["data"]), got) if e.get("kind") == "committed"] == [
        "audio 0 to 2000", "audio 2000 to 3000"]
    assert TOKEN not in by_query.body.decode()


async def test_without_a_token_loopback_reads_and_a_proxied_request_is_refused():
    with trio.fail_after(LIMIT):
        async with running_gateway(ScriptedProvider(), []) as gw, \
                httpx.AsyncClient(base_url=gw.http_url, timeout=None) as client:
            mine = await client.get("/calls")
            proxied = await client.get("/calls", headers={"X-Forwarded-For": "203.0.113.9"})
            page = await client.get("/")
    assert mine.status_code == 200 and mine.json() == []
    assert proxied.status_code == 403 and "loopback" in proxied.text
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


@pytest.mark.parametrize(("client", "headers", "allowed"), [
    (("127.0.0.1", 50000), [], True),
    (("127.8.9.10", 50000), [], True),
    (("::1", 50000, 0, 0), [], True),
    (("::ffff:127.0.0.1", 50000, 0, 0), [], True),
    (("203.0.113.5", 50000), [], False),
    (("10.0.0.7", 50000), [], False),
    (("2001:db8::1", 50000, 0, 0), [], False),
    (("127.0.0.1", 50000), [(b"x-forwarded-for", b"203.0.113.5")], False),
    (("127.0.0.1", 50000), [(b"Forwarded", b"for=203.0.113.5")], False),
    (None, [], False),
])
def test_without_a_token_only_loopback_clients_are_answered(client, headers, allowed):
    scope = {"type": "http", "client": client, "headers": headers, "query_string": b""}
    assert is_loopback_client(scope) is allowed
    assert ReadAccess(None).decide(scope).status == (200 if allowed else 403)


@pytest.mark.parametrize(("headers", "query", "status"), [
    ([], b"", 401),
    ([(b"authorization", f"Bearer {TOKEN}".encode())], b"", 200),
    ([(b"authorization", f"bearer  {TOKEN} ".encode())], b"", 200),
    ([(b"authorization", b"Bearer wrong")], b"", 401),
    ([(b"authorization", f"Basic {TOKEN}".encode())], b"", 401),
    ([], f"replay=1&token={TOKEN}".encode(), 200),
    ([], b"token=" + TOKEN[:-1].encode(), 401),
    ([], b"token=", 401),
])
def test_with_a_token_any_client_needs_it(headers, query, status):
    for client in (("203.0.113.5", 1), ("127.0.0.1", 1)):
        scope = {"type": "http", "client": client, "headers": headers, "query_string": query}
        decision = ReadAccess(TOKEN).decide(scope)
        assert decision.status == status
        assert TOKEN not in decision.why and TOKEN not in repr(ReadAccess(TOKEN))


async def test_a_reader_that_went_away_frees_its_subscription():
    with trio.fail_after(LIMIT):
        async with running_gateway(ScriptedProvider(), []) as gw:
            hub = gw.gateway.live
            reader = await open_raw_request(gw.http_url, "/events")
            with reader:
                answer = b""
                while b"retry: " not in answer:
                    answer += await reader.recv(4096)
                assert answer.startswith(b"HTTP/1.1 200") and hub.statistics().subscribers == 1
            await wait_until(lambda: hub.statistics().subscribers == 0)
            await simulate_call(gw.ws_url, tone(1000), fast=True)
            await gw.idle()
    assert hub.statistics().subscribers_dropped == 0


async def test_a_reader_that_stops_reading_is_dropped_and_calls_go_on(monkeypatch):
    """A raw socket asks for /events and never reads again; a second reader keeps up.
    Calls with a commit every 40 ms fill the stalled reader's socket, then its queue.
    The stalled connection stays open: the gateway still shuts down (the kernel aborts a
    connection whose peer leaves its window shut past ``PEER_STALL_TIMEOUT``)."""
    monkeypatch.setattr(edge, "PEER_STALL_TIMEOUT", 2.0)
    provider, sink = ScriptedProvider(partial_ms=20, commit_ms=40, record=False), ListSink()
    with trio.fail_after(3 * LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            hub = gw.gateway.live
            stalled = await open_raw_request(gw.http_url, "/events", rcvbuf=4096)
            head = await stalled.recv(4096)
            assert head.startswith(b"HTTP/1.1 200")
            good = SseReader()
            async with httpx.AsyncClient(base_url=gw.http_url, timeout=None) as client, \
                    trio.open_nursery() as readers:
                readers.start_soon(good.read, client, "/events")
                await wait_until(lambda: hub.statistics().subscribers == 2)
                n = 0
                while hub.statistics().subscribers_dropped == 0:
                    n += 1
                    async with trio.open_nursery() as calls:
                        for k in range(4):
                            sid, stream_sid = call_ids(100 * n + k)
                            calls.start_soon(lambda s=sid, m=stream_sid: simulate_call(
                                gw.ws_url, tone(20_000, seed=3), fast=True, call_sid=s, stream_sid=m))
                    await gw.idle()
                    assert n < 30, "the stalled reader was never dropped"
                ended = sum(e["type"] == "call_ended" for e in sink.events)
                await good.wait_for(lambda evs: sum(e["event"] == "call_ended" for e in evs) == ended)
                readers.cancel_scope.cancel()
            stats = hub.statistics()
        stalled.close()  # only now: the gateway above stopped with it still connected
    assert stats.subscribers_dropped == 1 and stats.partials_dropped > 0
    # the calls never noticed: every one complete, nothing dropped, every commit there
    ends = [e for e in sink.events if e["type"] == "call_ended"]
    assert len(ends) == 4 * n and {(e["reason"], e["audio_ms"], e["dropped_ms"]) for e in ends} == {("stop", 20_000, 0)}
    for end in ends:
        mine = sink.of_call(end["call_sid"])
        assert [e["seq"] for e in mine] == list(range(1, len(mine) + 1))
        assert len([e for e in mine if e.get("kind") == "committed"]) == 500
    # the reader that kept up lost no committed transcript and no call event
    seen = [orjson.loads(e["data"]) for e in good.events()]
    assert [e for e in seen if e.get("kind") != "partial"] == [e for e in sink.events if e.get("kind") != "partial"]


# --- the hub's rules, on virtual time --------------------------------------------------


def event(sid: str, seq: int, kind: str = "transcript", **extra) -> dict:
    body = {"type": kind, "call_sid": sid, "seq": seq, **extra}
    if kind == "transcript":
        body.setdefault("kind", "partial")
        body.setdefault("text", f"t{seq}")
    return body


async def test_full_queue_loses_oldest_partials_first_then_the_reader():
    hub = LiveHub(subscriber_queue=4)
    _, reader = hub.subscribe(label="test")
    hub.publish(event("CA1", 1, "call_started"))
    hub.publish(event("CA1", 2))  # partial
    hub.publish(event("CA1", 3, kind="committed"))
    hub.publish(event("CA1", 4))  # partial: queue full now
    hub.publish(event("CA1", 5, kind="committed"))  # evicts partial 2
    hub.publish(event("CA1", 6))  # evicts partial 4
    assert [e.seq for e in await reader.next_batch()] == [1, 3, 5, 6]
    for seq in range(7, 11):
        hub.publish(event("CA1", seq, kind="committed"))
    assert reader.closed_because is None
    hub.publish(event("CA1", 11, "call_ended"))  # four committed queued, none to drop: too slow
    assert reader.closed_because == "too slow"
    stats = hub.statistics()
    assert (stats.subscribers, stats.subscribers_dropped, stats.partials_dropped) == (0, 1, 2)
    assert [e.seq for e in await reader.next_batch()] == [7, 8, 9, 10]
    assert await reader.next_batch() == []


def committed(sid: str, seq: int) -> dict:
    return dict(event(sid, seq), kind="committed")


async def test_ring_keeps_recent_events_and_an_ended_call_for_the_retention(autojump_clock):
    hub = LiveHub(ring_events=3, ended_retention=60)
    for seq in range(1, 6):
        hub.publish(committed("CA1", seq))
    assert [e.seq for e in hub.backlog(replay=True)] == [3, 4, 5]
    hub.publish(event("CA1", 6, "call_ended", reason="stop"))
    await trio.sleep(59)
    hub.publish(event("CA2", 1, "call_started"))
    assert hub.ended("CA1") and [e.seq for e in hub.backlog(call_sid="CA1", replay=True)] == [4, 5, 6]
    await trio.sleep(2)
    hub.publish(event("CA2", 2))
    assert hub.ring_of("CA1") is None and [e.call_sid for e in hub.backlog(replay=True)] == ["CA2", "CA2"]


async def test_ended_calls_are_held_within_a_byte_budget_oldest_dropped_first():
    def call(hub: LiveHub, sid: str) -> None:
        for seq in range(1, 4):
            hub.publish(event(sid, seq, text="x" * 100))
        hub.publish(event(sid, 4, "call_ended", reason="stop"))

    one = LiveHub()
    call(one, "CA1")
    ring = one.statistics().held_bytes  # every call below holds as much
    hub = LiveHub(max_ended_bytes=int(2.5 * ring))
    for sid in ("CA1", "CA2", "CA3"):
        call(hub, sid)
    assert (hub.statistics().ended_calls, hub.statistics().held_bytes) == (3, 3 * ring)
    hub.publish(event("CA4", 1, "call_started"))  # the budget is looked at as events come
    assert [hub.ring_of(sid) is not None for sid in ("CA1", "CA2", "CA3")] == [False, True, True]
    assert hub.statistics().ended_calls == 2


async def test_the_hub_is_a_sink_writer_too():
    """The sink runtime feeds batches through ``write``; ``aclose`` ends every stream."""
    hub = LiveHub()
    stream = sse_stream(hub)
    await stream.__anext__()  # subscribed
    await hub.write([event("CA1", 1, "call_started"), event("CA1", 2, kind="committed")])
    frames = await stream.__anext__()
    assert [block.split(b"\n")[0] for block in frames.split(b"\n\n") if block] == [b"id: CA1:1", b"id: CA1:2"]
    await hub.aclose()
    assert (await stream.__anext__()).startswith(b": stream closed")
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    assert hub.name == "live" and hub.statistics().subscribers == 0


async def test_a_new_stream_of_an_ended_call_starts_a_new_ring():
    hub = LiveHub()
    hub.publish(event("CA1", 1, "call_started"))
    hub.publish(event("CA1", 2, "call_ended", reason="stop"))
    hub.publish(event("CA1", 1, "call_started", stream_sid="MZ2"))
    assert not hub.ended("CA1") and [e.type for e in hub.backlog(call_sid="CA1", replay=True)] == ["call_started"]
    assert hub.statistics().ended_calls == 0


async def test_resume_across_calls_is_at_least_once_never_a_gap():
    hub = LiveHub(ring_events=2)
    hub.publish(committed("CA1", 1))
    hub.publish(committed("CA2", 1))
    hub.publish(committed("CA1", 2))
    hub.publish(committed("CA2", 2))
    hub.publish(committed("CA1", 3))  # CA1's ring: 2, 3
    ids = lambda entries: [f"{e.call_sid}:{e.seq}" for e in entries]  # noqa: E731
    assert ids(hub.backlog(after=EventId("CA1", 2))) == ["CA2:2", "CA1:3"]
    # seq 1 of CA1 is gone: from CA1's next held event on (CA2:1 is not held either)
    assert ids(hub.backlog(after=EventId("CA1", 1))) == ["CA1:2", "CA2:2", "CA1:3"]
    assert ids(hub.backlog(after=EventId("CA9", 1))) == ["CA2:1", "CA1:2", "CA2:2", "CA1:3"]
    assert ids(hub.backlog(call_sid="CA2", after=EventId("CA2", 1))) == ["CA2:2"]
    assert [parse_event_id(raw) for raw in ("CA1:7", "CA1:x", ":7", "CA-1:7", None, "CA1:")] == [
        EventId("CA1", 7), None, None, None, None, None]


async def test_a_quiet_stream_sends_a_comment_every_heartbeat(autojump_clock):
    hub = LiveHub()
    stream = sse_stream(hub, call_sid="CA1")
    assert (await stream.__anext__()).startswith(b"retry: ")
    start = trio.current_time()
    assert await stream.__anext__() == b": keep-alive\n\n"
    assert trio.current_time() - start == HEARTBEAT
    hub.publish(event("CA1", 1, "call_ended", reason="stop"))
    assert (await stream.__anext__()).startswith(b"id: CA1:1\nevent: call_ended\ndata: {")
    with pytest.raises(StopAsyncIteration):  # a one-call stream ends at call_ended
        await stream.__anext__()
    assert hub.statistics().subscribers == 0


def test_serve_says_who_may_read_and_never_prints_the_token():
    from tests.gateway.test_cli import _free_port
    from tests.gateway.test_security_cli import _serve, _stop

    port = _free_port()
    server, lines = _serve("--port", str(port), env={"EARPIECE_API_TOKEN": TOKEN})
    try:
        refused = httpx.get(f"http://127.0.0.1:{port}/calls")
        allowed = httpx.get(f"http://127.0.0.1:{port}/calls", headers={"Authorization": f"Bearer {TOKEN}"})
    finally:
        rest = _stop(server)
    open_server, open_lines = _serve("--port", str(_free_port()))
    _stop(open_server)
    assert "live-routes=token required" in "".join(lines)
    assert "live-routes=loopback only" in "".join(open_lines)
    assert (refused.status_code, allowed.status_code, allowed.json()) == (401, 200, [])
    assert TOKEN not in "".join(lines) + rest + refused.text + allowed.text


async def test_a_partial_is_held_only_until_a_newer_transcript_of_its_call_supersedes_it():
    hub = LiveHub(ring_events=4)
    hub.publish(event("CA1", 1, "call_started"))
    hub.publish(event("CA1", 2))  # partial
    hub.publish(event("CA2", 1, "call_started"))
    hub.publish(event("CA1", 3, "dtmf", digit="5"))
    hub.publish(event("CA1", 4))  # a newer partial supersedes 2
    ids = lambda entries: [f"{e.call_sid}:{e.seq}" for e in entries]  # noqa: E731
    assert ids(hub.backlog(call_sid="CA1", replay=True)) == ["CA1:1", "CA1:3", "CA1:4"]
    hub.publish(event("CA2", 2))  # another call's partial supersedes nothing of CA1
    hub.publish(committed("CA1", 5))  # a commit supersedes 4
    assert ids(hub.backlog(call_sid="CA1", replay=True)) == ["CA1:1", "CA1:3", "CA1:5"]
    assert ids(hub.backlog(replay=True)) == ["CA1:1", "CA2:1", "CA1:3", "CA2:2", "CA1:5"]
    # a reader that saw a superseded partial misses nothing after it (events before it
    # since the call's previous held event may come again: at least once)
    assert ids(hub.backlog(after=EventId("CA1", 4))) == ["CA2:2", "CA1:5"]
    assert ids(hub.backlog(after=EventId("CA1", 2))) == ["CA2:1", "CA1:3", "CA2:2", "CA1:5"]
    assert ids(hub.backlog(call_sid="CA1", after=EventId("CA1", 2))) == ["CA1:3", "CA1:5"]
    # the ring's bound counts held events only; the bytes held follow what is held
    for seq in range(6, 9):
        hub.publish(event("CA1", seq))
    assert ids(hub.backlog(call_sid="CA1", replay=True)) == ["CA1:1", "CA1:3", "CA1:5", "CA1:8"]
    assert hub.ring_of("CA1").size == sum(len(e.frame) for e in hub.ring_of("CA1").entries)
    for seq in range(9, 13):
        hub.publish(committed("CA1", seq))  # 8 is superseded, then 1, 3, 5 leave the ring's left end
    hub.publish(event("CA1", 13))
    assert ids(hub.backlog(call_sid="CA1", replay=True)) == ["CA1:10", "CA1:11", "CA1:12", "CA1:13"]
    assert hub.ring_of("CA1").size == sum(len(e.frame) for e in hub.ring_of("CA1").entries)
    # a partial pushed out of the ring's left end by other events is not removed twice
    small = LiveHub(ring_events=2)
    small.publish(event("CA3", 1))
    small.publish(event("CA3", 2, "dtmf", digit="1"))
    small.publish(event("CA3", 3, "dtmf", digit="2"))  # partial 1 leaves the ring
    small.publish(committed("CA3", 4))
    assert ids(small.backlog(call_sid="CA3", replay=True)) == ["CA3:3", "CA3:4"]
    assert small.ring_of("CA3").size == sum(len(e.frame) for e in small.ring_of("CA3").entries)
