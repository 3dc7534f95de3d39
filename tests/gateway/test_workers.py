"""``earpiece serve --workers 2`` as a real process tree on a free loopback port: both
workers carry calls, a killed worker costs only its own calls and is replaced, and
SIGTERM drains (``/readyz`` 503 at once, live calls finish, exit status 0)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from gateway.app import STREAM_PATH
from gateway.simulator import simulate_call
from providers.scripted import ScriptedProvider
from tests.conftest import running_gateway
from tests.helpers import ACCOUNT_SID, ListSink, call_ids, tone

pytestmark = pytest.mark.slow

TEST_LIMIT = 120  # seconds: a bound on each test, never an assertion on speed
CALL_MS = 6000  # long enough that every call is still live once the last one started, even on a busy machine


class GatewayTree:
    """``earpiece serve --workers 2`` and what its stderr says, line by line."""

    def __init__(self, process: trio.Process, jsonl: Path) -> None:
        self.process = process
        self.jsonl = jsonl
        self.lines: list[str] = []
        self._changed = trio.Event()
        self.http_url = ""

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for chunk in self.process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            self.lines.extend(line.decode(errors="replace") for line in lines)
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, pattern: str, count: int = 1) -> list[re.Match[str]]:
        """The first ``count`` matches of ``pattern`` in stderr, once there are that many."""
        while True:
            found = [m for m in map(re.compile(pattern).search, self.lines) if m]
            if len(found) >= count:
                return found[:count]
            if self.process.returncode is not None:
                raise AssertionError("the gateway exited:\n" + "\n".join(self.lines[-30:]))
            await self._changed.wait()

    @property
    def ws_url(self) -> str:
        return self.http_url.replace("http://", "ws://", 1) + STREAM_PATH

    def worker_pids(self) -> dict[int, int]:
        """Worker index → pid of its latest process."""
        pids: dict[int, int] = {}
        for line in self.lines:
            m = re.search(r"worker (\d+) started \(pid (\d+)\)", line)
            if m:
                pids[int(m.group(1))] = int(m.group(2))
        return pids

    def ended_by_pid(self) -> dict[str, int]:
        """call_sid → pid of the worker that logged its end."""
        return {m.group(2): int(m.group(1)) for m in
                map(re.compile(r"earpiece\.call\[(\d+)\]: \[(CA\w+)\] call ended").search, self.lines) if m}

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.jsonl.read_bytes().splitlines()]


@asynccontextmanager
async def gateway_tree(tmp_path: Path, *flags: str) -> AsyncIterator[GatewayTree]:
    """The process tree, listening; killed (and its pipe closed) on the way out."""
    jsonl = tmp_path / "events.jsonl"
    command = [sys.executable, "-m", "gateway.cli", "serve", "--workers", "2", "--port", "0", "--provider",
               "scripted", "--sink", f"jsonl:{jsonl}", "--max-busy", "0", *flags]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EARPIECE_", "PROMETHEUS_"))}
    process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                               env=env, cwd=str(Path(__file__).resolve().parents[2]))
    tree = GatewayTree(process, jsonl)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tree.read_stderr)
            [m] = await tree.wait_for(r"earpiece on (http://127\.0\.0\.1:\d+) with 2 workers")
            tree.http_url = m.group(1)
            await tree.wait_for(r"earpiece\[\d+\]: earpiece on", count=2)  # both workers listen
            yield tree
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            for pid in tree.worker_pids().values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            assert process.stderr is not None
            await process.stderr.aclose()


def without_time(event: dict[str, Any], call_sid: str) -> bytes:
    """An event as its JSONL line, with the wall-clock stamp and the call's ids neutral."""
    event = {k: v for k, v in event.items() if k != "emitted_at"}
    return orjson.dumps(event).replace(call_sid.encode(), b"CA").replace(
        ("MZ" + call_sid[2:]).encode(), b"MZ")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def reference_lines(ms: int) -> list[bytes]:
    """What one call of ``ms`` of audio gives on a gateway nobody disturbs (in process)."""
    sink = ListSink()
    call_sid, stream_sid = call_ids(10_000)
    async with running_gateway(ScriptedProvider(), [sink]) as gw:
        await simulate_call(gw.ws_url, tone(ms), fast=True, call_sid=call_sid, stream_sid=stream_sid,
                            account_sid=ACCOUNT_SID)
        await gw.idle()
    return [without_time(e, call_sid) for e in sink.events]


async def call(url: str, n: int, ms: int, results: dict[str, Any], fast: bool = False,
               done_at: dict[str, float] | None = None) -> None:
    call_sid, stream_sid = call_ids(n)
    try:
        results[call_sid] = await simulate_call(url, tone(ms), fast=fast, call_sid=call_sid, stream_sid=stream_sid,
                                                account_sid=ACCOUNT_SID)
    except Exception as exc:  # a killed worker's socket: reset or cut off
        results[call_sid] = exc
    if done_at is not None:
        done_at[call_sid] = trio.current_time()


async def test_two_workers_share_the_calls_and_a_killed_one_costs_only_its_own(tmp_path, capsys):
    expected = await reference_lines(CALL_MS)
    metrics_port = free_port()
    with trio.fail_after(TEST_LIMIT):
        async with gateway_tree(tmp_path, "--metrics-port", str(metrics_port)) as tree:
            victim = tree.worker_pids()[0]
            results: dict[str, Any] = {}
            async with trio.open_nursery() as calls:
                for n in range(1, 41):  # 40 calls of 6 s at Twilio's pace, starting over 0.8 s
                    calls.start_soon(call, tree.ws_url, n, CALL_MS, results)
                    await trio.sleep(0.02)
                while len({e["call_sid"] for e in tree.events() if e["type"] == "call_started"}) < 40:
                    await trio.sleep(0.05)
                os.kill(victim, signal.SIGKILL)  # every call is live: none has sent its 6 s yet
            await tree.wait_for(rf"worker 0 \(pid {victim}\) died \(killed by SIGKILL\)")
            await tree.wait_for(r"worker 0 started \(pid \d+\)", count=2)
            replacement = tree.worker_pids()[0]
            await tree.wait_for(rf"earpiece\[{replacement}\]: earpiece on")
            after: dict[str, Any] = {}
            async with trio.open_nursery() as calls:
                for n in range(101, 121):  # 20 short calls after the restart
                    calls.start_soon(call, tree.ws_url, n, 1000, after, True)
            async with httpx.AsyncClient() as http:  # the parent's port, and the main port (either worker) twice
                scrapes = [(await http.get(url)).text for url in (
                    f"http://127.0.0.1:{metrics_port}/metrics", tree.http_url + "/metrics",
                    tree.http_url + "/metrics")]
            tree.process.send_signal(signal.SIGTERM)
            assert await tree.process.wait() == 0

    survivor = tree.worker_pids()[1]
    events = tree.events()
    by_call: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_call.setdefault(event["call_sid"], []).append(event)
    first = {call_ids(n)[0] for n in range(1, 41)}
    ended_by = tree.ended_by_pid()
    killed = {sid for sid in first if "call_ended" not in [e["type"] for e in by_call[sid]]}
    survived = first - killed
    # both workers carried calls: the victim's never ended, the survivor logged the end of every other
    assert killed and survived, (len(killed), len(survived))
    assert {ended_by[sid] for sid in survived} == {survivor}
    assert not killed & ended_by.keys()
    # the survivor's calls are byte for byte what an undisturbed gateway gives
    for sid in survived:
        assert [without_time(e, sid) for e in by_call[sid]] == expected, sid
        assert not isinstance(results[sid], Exception) and not results[sid].closed_by_gateway
    # the killed worker's calls were cut off, mid-stream
    assert all(isinstance(results[sid], Exception) or results[sid].closed_by_gateway for sid in killed)
    # the replacement takes calls, and they are whole
    later = {call_ids(n)[0] for n in range(101, 121)}
    assert replacement in {ended_by[sid] for sid in later}
    assert Counter(e["reason"] for e in events if e["type"] == "call_ended" and e["call_sid"] in later) == {
        "stop": 20}
    # every scrape sums over the workers: the calls every worker ended, none live
    stops = sum(e["type"] == "call_ended" and e["reason"] == "stop" for e in events)
    assert stops == len(survived) + 20
    for text in scrapes:
        assert f'earpiece_calls_total{{reason="stop"}} {stops}.0' in text, text
        assert "earpiece_calls_active 0.0" in text
    with capsys.disabled():
        print(f"\n40 calls: {len(killed)} on the killed worker (cut off), {len(survived)} on the other (whole); "
              f"after the restart {sum(ended_by[sid] == replacement for sid in later)}/20 on the new worker")


async def poll_ready(url: str, log: list[tuple[float, int]], stop: trio.Event) -> None:
    async with httpx.AsyncClient() as http:
        while not stop.is_set():
            asked_at = trio.current_time()  # when the question was asked: a busy machine may answer late
            try:
                status = (await http.get(url + "/readyz", headers={"Connection": "close"})).status_code
            except httpx.TransportError:
                status = 0  # nobody listening any more
            log.append((asked_at, status))
            await trio.sleep(0.05)


async def test_sigterm_drains_live_calls_then_exits_0(tmp_path, capsys):
    with trio.fail_after(TEST_LIMIT):
        async with gateway_tree(tmp_path, "--drain-grace", "6") as tree, trio.open_nursery() as nursery:
            results: dict[str, Any] = {}
            done_at: dict[str, float] = {}
            ready: list[tuple[float, int]] = []
            stop_polling = trio.Event()
            nursery.start_soon(poll_ready, tree.http_url, ready, stop_polling)
            async with trio.open_nursery() as calls:
                for n in range(1, 11):  # 10 short calls (2 s) and 10 long ones (30 s), at Twilio's pace
                    calls.start_soon(call, tree.ws_url, n, 2000, results, False, done_at)
                    calls.start_soon(call, tree.ws_url, 100 + n, 30_000, results, False, done_at)
                while len({e["call_sid"] for e in tree.events() if e["type"] == "call_started"}) < 20:
                    await trio.sleep(0.05)
                sigterm_at = trio.current_time()
                tree.process.send_signal(signal.SIGTERM)
                async with httpx.AsyncClient() as http:
                    refused = await http.post(tree.http_url + "/twilio/voice", data={"CallSid": call_ids(999)[0]})
                assert 'Reject reason="busy"' in refused.text
            status = await tree.process.wait()
            exit_at = trio.current_time()
            stop_polling.set()
    assert status == 0
    events = tree.events()
    ended = {e["call_sid"]: e for e in events if e["type"] == "call_ended"}
    short, long = ({call_ids(n)[0] for n in range(1, 11)}, {call_ids(100 + n)[0] for n in range(1, 11)})
    assert {ended[sid]["reason"] for sid in short} == {"stop"}
    assert {ended[sid]["reason"] for sid in long} == {"shutdown"}
    for sid, end in ended.items():  # every committed transcript: they tile all the audio received
        spans = [(e["audio_start_ms"], e["audio_end_ms"]) for e in events
                 if e["call_sid"] == sid and e.get("kind") == "committed"]
        assert spans[0][0] == 0 and spans[-1][1] == end["audio_ms"] == end["forwarded_ms"], (sid, spans)
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert {ended[sid]["audio_ms"] for sid in short} == {2000}
    assert all(ended[sid]["audio_ms"] < 30_000 for sid in long)
    after = [(t - sigterm_at, s) for t, s in ready if t > sigterm_at]
    first_503 = next(t for t, s in after if s == 503)
    assert first_503 < 1.0 and all(s in (503, 0) for t, s in after if t >= 1.0), after
    short_done = max(done_at[sid] for sid in short) - sigterm_at
    long_done = max(done_at[sid] for sid in long) - sigterm_at
    with capsys.disabled():
        print(f"\ndrain timeline (s after SIGTERM): readyz 503 at {first_503:.2f}; short calls (stop) done by "
              f"{short_done:.2f}; long calls (shutdown at the 6 s grace) done by {long_done:.2f}; "
              f"exit 0 at {exit_at - sigterm_at:.2f}")


async def test_a_second_sigterm_ends_the_calls_at_once(tmp_path):
    with trio.fail_after(TEST_LIMIT):
        async with gateway_tree(tmp_path) as tree:  # --drain-grace 300
            results: dict[str, Any] = {}
            async with trio.open_nursery() as calls:
                for n in range(1, 5):
                    calls.start_soon(call, tree.ws_url, n, 60_000, results)
                while len({e["call_sid"] for e in tree.events() if e["type"] == "call_started"}) < 4:
                    await trio.sleep(0.05)
                tree.process.send_signal(signal.SIGTERM)
                await tree.wait_for(r"shutting down: no new calls", count=2)
                tree.process.send_signal(signal.SIGTERM)
            assert await tree.process.wait() == 0
    ended = [e for e in tree.events() if e["type"] == "call_ended"]
    assert sorted(e["call_sid"] for e in ended) == sorted(call_ids(n)[0] for n in range(1, 5))
    assert {e["reason"] for e in ended} == {"shutdown"}
    assert all(e["audio_ms"] < 20_000 and e["dropped_ms"] == 0 for e in ended)


def process_gone(pid: int) -> bool:
    """Exited (a zombie not yet reaped by whoever adopted it counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


async def test_workers_whose_parent_died_drain_their_calls_and_exit(tmp_path):
    with trio.fail_after(TEST_LIMIT):
        async with gateway_tree(tmp_path, "--drain-grace", "2") as tree:
            workers = list(tree.worker_pids().values())
            results: dict[str, Any] = {}
            async with trio.open_nursery() as calls:
                for n in range(1, 5):
                    calls.start_soon(call, tree.ws_url, n, 60_000, results)
                while len({e["call_sid"] for e in tree.events() if e["type"] == "call_started"}) < 4:
                    await trio.sleep(0.05)
                tree.process.kill()  # SIGKILL: no chance to forward anything
            while not all(map(process_gone, workers)):
                await trio.sleep(0.1)
    ended = [e for e in tree.events() if e["type"] == "call_ended"]
    assert sorted(e["call_sid"] for e in ended) == sorted(call_ids(n)[0] for n in range(1, 5))
    assert {e["reason"] for e in ended} == {"shutdown"} and all(e["dropped_ms"] == 0 for e in ended)
    assert sum("the supervising parent" in line and "is gone: draining" in line for line in tree.lines) == 2


async def test_a_worker_that_keeps_dying_is_restarted_after_growing_pauses(tmp_path):
    # a sink the parent can open (it checks every sink first) and a worker cannot
    (tmp_path / "parent_only_sink.py").write_text(
        "import os\n"
        "if os.environ.get('EARPIECE_WORKER_FD'):\n"
        "    raise ImportError('this sink opens in the parent only')\n"
        "def write(event):\n"
        "    pass\n")
    command = [sys.executable, "-m", "gateway.cli", "serve", "--workers", "2", "--port", "0", "--provider",
               "scripted", "--sink", "python:parent_only_sink:write"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EARPIECE_", "PROMETHEUS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    with trio.fail_after(TEST_LIMIT):
        process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                                   env=env, cwd=str(Path(__file__).resolve().parents[2]))
        tree = GatewayTree(process, tmp_path / "unused")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tree.read_stderr)
            pauses = await tree.wait_for(r"worker 0 \(pid \d+\) died \(exit status 2\).*restarting in ([\d.]+) s",
                                         count=3)
            process.send_signal(signal.SIGTERM)
            status = await process.wait()
            nursery.cancel_scope.cancel()
        assert process.stderr is not None
        await process.stderr.aclose()
    assert [float(m.group(1)) for m in pauses] == [0.5, 1.0, 2.0]
    assert status == 0


def test_a_sink_that_cannot_be_opened_stops_the_parent_with_exit_2(tmp_path):
    """Only workers open sinks; the parent checks them first, so a bad jsonl path is one
    clear error and exit 2 instead of workers that die and are restarted in a loop."""
    missing = tmp_path / "no-such-dir" / "events.jsonl"
    command = [sys.executable, "-m", "gateway.cli", "serve", "--workers", "2", "--port", "0",
               "--provider", "scripted", "--sink", f"jsonl:{missing}"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if not k.startswith("EARPIECE_")})
    assert proc.returncode == 2, proc.stderr
    assert "cannot open jsonl sink" in proc.stderr and "does not exist" in proc.stderr
    assert "worker" not in proc.stderr  # no worker was started
