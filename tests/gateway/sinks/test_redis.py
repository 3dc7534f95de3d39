"""The redis:// sink against a real redis-server: what a downstream consumer reads."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import coredis
import orjson
import pytest
import trio

from gateway.simulator import simulate_call
from gateway.sinks import SinkHub, open_sinks
from gateway.sinks.stdout import format_line
from providers.scripted import ScriptedProvider
from tests.conftest import running_gateway
from tests.helpers import call_ids, tone
from tests.redis_server import RedisServer, redis_server  # noqa: F401 - the fixture

LIMIT = 60  # seconds: a bound on each test, never an assertion on speed

STREAM = "earpiece:test"


async def read_stream(url: str, stream: str = STREAM) -> list[Any]:
    async with coredis.Redis.from_url(url) as client:
        return list(await client.xrange(stream))


def lane(hub: SinkHub, prefix: str) -> Any:
    return next(s for s in hub.statistics() if s.name.startswith(prefix))


async def run_calls(hub: SinkHub, calls: int, ms: int, *, fast: bool = True) -> None:
    async with running_gateway(ScriptedProvider(), [hub]) as gw, trio.open_nursery() as nursery:
        for n in range(1, calls + 1):
            call_sid, stream_sid = call_ids(n)
            nursery.start_soon(lambda n=n, c=call_sid, s=stream_sid: simulate_call(
                gw.ws_url, tone(ms, seed=n), fast=fast, call_sid=c, stream_sid=s))


def entries_last_id(entries: list[Any]) -> bytes:
    return entries[-1].identifier


def jsonl_events(path: Path) -> list[dict[str, Any]]:
    """The whole lines so far (the file may be read while the sink writes it)."""
    return [orjson.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]


async def test_every_event_lands_in_the_stream_exactly_as_the_jsonl_sink_writes_it(redis_server, tmp_path):
    jsonl = tmp_path / "events.jsonl"
    with trio.fail_after(LIMIT):
        async with open_sinks([f"jsonl:{jsonl}", f"{redis_server.url}/0?stream={STREAM}&maxlen=5000"], {}) as hub:
            await run_calls(hub, calls=2, ms=4100)
        entries = await read_stream(redis_server.url)
    lines = jsonl.read_bytes().splitlines()
    assert [e.field_values[b"event"] for e in entries] == lines
    for entry, event in zip(entries, map(orjson.loads, lines), strict=True):
        assert entry.field_values[b"type"] == event["type"].encode()
        assert entry.field_values[b"call_sid"] == event["call_sid"].encode()
        assert entry.field_values[b"seq"] == str(event["seq"]).encode()
    committed = [e["text"] for e in map(orjson.loads, lines) if e.get("kind") == "committed"]
    assert sorted(committed) == sorted(["audio 0 to 2000", "audio 2000 to 4000", "audio 4000 to 4100"] * 2)
    assert lane(hub, "redis").delivered == len(lines) and lane(hub, "redis").dropped == 0


async def test_events_wait_while_redis_is_down_and_arrive_in_order_when_it_starts(tmp_path):
    server = RedisServer(tmp_path)  # not started yet
    try:
        with trio.fail_after(LIMIT):
            async with open_sinks([f"{server.url}?stream={STREAM}"], {}) as hub:
                for seq in range(1, 21):
                    await hub.emit({"type": "dtmf", "digit": "1", "call_sid": "CA1", "seq": seq})
                while lane(hub, "redis").queued + lane(hub, "redis").delivered < 20:
                    await trio.sleep(0.01)
                assert lane(hub, "redis").delivered == 0
                await trio.to_thread.run_sync(server.start)
                while lane(hub, "redis").delivered < 20:
                    await trio.sleep(0.01)
            entries = await read_stream(server.url)
        assert [int(e.field_values[b"seq"]) for e in entries] == list(range(1, 21))
    finally:
        server.stop()


async def test_redis_killed_mid_call_and_restarted_loses_no_committed_transcript(tmp_path, capsys):
    """Three live calls; SIGKILL redis-server once the first commit is in, start it again
    2 s later (AOF, fsync always: what it acknowledged survives).  Afterwards every event
    is in the stream, in order per call; a repeat carries the same (call_sid, seq)."""
    server = RedisServer(tmp_path, aof=True)
    server.start()
    jsonl = tmp_path / "events.jsonl"
    try:
        with trio.fail_after(LIMIT):
            async with open_sinks([f"jsonl:{jsonl}", f"{server.url}?stream={STREAM}"], {}) as hub:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(lambda: run_calls(hub, calls=3, ms=9000, fast=False))
                    while not any(e.get("kind") == "committed" for e in jsonl_events(jsonl)):
                        await trio.sleep(0.05)
                    server.kill()
                    killed_at = lane(hub, "redis").delivered
                    await trio.sleep(2)
                    await trio.to_thread.run_sync(server.start)
            entries = await read_stream(server.url)
    finally:
        server.stop()
    produced = jsonl_events(jsonl)
    streamed = [orjson.loads(e.field_values[b"event"]) for e in entries]
    keys = [(e["call_sid"], e["seq"]) for e in streamed]
    unique = set(keys)
    lost = [(e["call_sid"], e["seq"]) for e in produced if (e["call_sid"], e["seq"]) not in unique]
    with capsys.disabled():
        print(f"\nredis killed after {killed_at} events delivered, restarted 2 s later: "
              f"produced {len(produced)}, delivered {len(unique)}, repeated {len(keys) - len(unique)}, "
              f"lost {len(lost)}", file=sys.stderr)
    assert lost == []
    assert len({k for k in keys}) == len(unique) and all(keys.count(k) >= 1 for k in unique)
    by_key = {(e["call_sid"], e["seq"]): e for e in produced}
    assert all(by_key[(e["call_sid"], e["seq"])] == e for e in streamed)  # a repeat is the same event
    for n in (1, 2, 3):
        call_sid = call_ids(n)[0]
        firsts: list[int] = []
        for cs, seq in keys:
            if cs == call_sid and seq not in firsts:
                firsts.append(seq)
        assert firsts == sorted(firsts) == [e["seq"] for e in produced if e["call_sid"] == call_sid]
        ended = [e for e in streamed if e["call_sid"] == call_sid and e["type"] == "call_ended"]
        assert ended and ended[0]["dropped_ms"] == 0 and ended[0]["reason"] == "stop"
        assert [e["text"] for e in produced if e["call_sid"] == call_sid and e.get("kind") == "committed"] == [
            "audio 0 to 2000", "audio 2000 to 4000", "audio 4000 to 6000", "audio 6000 to 8000",
            "audio 8000 to 9000"]


async def test_an_event_redis_refuses_is_counted_as_failed_and_the_sink_goes_on(redis_server):
    with trio.fail_after(LIMIT):
        async with coredis.Redis.from_url(redis_server.url) as client:
            await client.set("not-a-stream", "x")
        async with open_sinks([f"{redis_server.url}?stream=not-a-stream", f"{redis_server.url}?stream={STREAM}"],
                              {}) as hub:
            for seq in (1, 2):
                await hub.emit({"type": "dtmf", "digit": "1", "call_sid": "CA1", "seq": seq})
        wrong, right = hub.statistics()
        assert (wrong.delivered, wrong.failed) == (0, 2)
        assert (right.delivered, right.failed) == (2, 0)
        assert [int(e.field_values[b"seq"]) for e in await read_stream(redis_server.url)] == [1, 2]


async def test_password_and_database_from_the_url_and_a_wrong_password_counted(tmp_path, caplog):
    server = RedisServer(tmp_path, extra=("--requirepass", "s3cret"))
    server.start()
    try:
        with trio.fail_after(LIMIT):
            base = f"redis://:s3cret@127.0.0.1:{server.port}"
            async with open_sinks([f"{base}/2?stream={STREAM}",
                                   f"redis://:wrong@127.0.0.1:{server.port}/0?stream={STREAM}"], {}) as hub:
                await hub.emit({"type": "dtmf", "digit": "1", "call_sid": "CA1", "seq": 1})
            right, wrong = hub.statistics()
            async with coredis.Redis.from_url(f"{base}/2") as client:
                entries = await client.xrange(STREAM)
            async with coredis.Redis.from_url(f"{base}/0") as client:
                assert await client.xlen(STREAM) == 0
            tail = await trio.run_process([sys.executable, "-m", "gateway.cli", "tail", server.url],
                                          capture_stdout=True, capture_stderr=True, check=False)
    finally:
        server.stop()
    assert [e.field_values[b"seq"] for e in entries] == [b"1"]
    assert (right.delivered, right.failed) == (1, 0)
    assert (wrong.delivered, wrong.failed) == (0, 1)
    assert "refused the connection setup" in caplog.text and "wrong" not in wrong.name
    assert "s3cret" not in caplog.text and "s3cret" not in right.name
    assert tail.returncode == 1 and tail.stdout == b""
    assert tail.stderr.decode().startswith("earpiece: error: Redis refused: ")
    assert len(tail.stderr.decode().strip().splitlines()) == 1


async def test_two_consumers_in_one_group_see_every_event_once(redis_server, tmp_path):
    with trio.fail_after(LIMIT):
        async with open_sinks([f"{redis_server.url}?stream={STREAM}"], {}) as hub:
            await run_calls(hub, calls=2, ms=3000)
        entries = await read_stream(redis_server.url)
        seen: dict[str, list[bytes]] = {"a": [], "b": []}
        async with coredis.Redis.from_url(redis_server.url) as client:
            await client.xgroup_create(STREAM, "agents", "0")
            idle = 0
            while idle < 2:  # the two take turns until neither is given anything
                idle = 0
                for consumer in ("a", "b"):
                    reply = await client.xreadgroup("agents", consumer, {STREAM: ">"}, count=3)
                    got = reply[STREAM.encode()] if reply else ()
                    idle += not got
                    seen[consumer] += [e.identifier for e in got]
                    if got:
                        await client.xack(STREAM, "agents", [e.identifier for e in got])
            pending = await client.xpending(STREAM, "agents")
    assert seen["a"] and seen["b"]
    assert sorted(seen["a"] + seen["b"]) == sorted(e.identifier for e in entries)
    assert not set(seen["a"]) & set(seen["b"])
    assert pending.pending == 0


async def _tail(url: str, *args: str, expect: int, before_stop: Any = None) -> tuple[list[str], int]:
    """``earpiece tail`` as a subprocess: its first ``expect`` lines, then (after
    ``before_stop``) SIGINT."""
    proc = await trio.lowlevel.open_process([sys.executable, "-m", "gateway.cli", "tail", url, *args],
                                            stdout=-1, stderr=-1, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    buffer = b""
    try:
        while buffer.count(b"\n") < expect:
            chunk = await proc.stdout.receive_some()
            if not chunk:
                break
            buffer += chunk
        if before_stop is not None:
            await before_stop()
    finally:
        proc.send_signal(signal.SIGINT)
        code = await proc.wait()
        await proc.stdout.aclose()
        await proc.stderr.aclose()
    return buffer.decode().splitlines(), code


async def test_tail_prints_the_stream_like_the_stdout_sink_plain_and_as_a_group(redis_server, tmp_path):
    jsonl = tmp_path / "events.jsonl"
    with trio.fail_after(LIMIT):
        async with open_sinks([f"jsonl:{jsonl}", f"{redis_server.url}?stream={STREAM}"], {}) as hub:
            await run_calls(hub, calls=2, ms=2500)
        expected = [line for line in map(format_line, jsonl_events(jsonl)) if line is not None]
        assert "COMMITTED: audio 0 to 2000" in expected and expected[-1].endswith("Twilio stream stopped")
        url = f"{redis_server.url}/0?stream={STREAM}"
        lines, code = await _tail(url, expect=len(expected))
        assert (lines, code) == (expected, 0)
        async with coredis.Redis.from_url(redis_server.url) as client:

            async def acknowledged() -> None:  # it prints, then acknowledges
                while (await client.xpending(STREAM, "crm")).pending:
                    await trio.sleep(0.02)

            lines, code = await _tail(url, "--group", "crm", "--consumer", "c1", expect=len(expected),
                                      before_stop=acknowledged)
            assert (lines, code) == (expected, 0)
            group = next(g for g in await client.xinfo_groups(STREAM) if g[b"name"] == b"crm")
        assert group[b"pending"] == 0 and group[b"last-delivered-id"] == entries_last_id(await read_stream(
            redis_server.url))


def test_tail_refuses_what_is_not_a_redis_url():
    import subprocess
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "tail", "jsonl:x.jsonl"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "earpiece: error: tail reads a Redis Stream: expected redis://HOST:PORT[/DB][?stream=NAME], not 'jsonl:x.jsonl'"]


def test_serve_refuses_a_bad_redis_spec_with_one_line_and_no_password():
    import subprocess
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--provider", "scripted", "--port", "0",
                             "--sink", "redis://:hunter2@127.0.0.1:6379?strem=x"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "earpiece: error: bad sink 'redis://:***@127.0.0.1:6379?strem=x': unknown option strem "
        "(redis takes stream=, maxlen=, types=)"]
