"""Python memory held per live call, by allocation site: in-process, virtual time, exact.

    .venv/bin/python bench/call_memory.py                      # 50 calls, commit every 5 s and never
    .venv/bin/python bench/call_memory.py --calls 100 --replay-ms 30000,10000 --top 15

N calls run through the real ``actors.call.run_call`` with the offline ``scripted``
provider (one per call, ``record=False`` like a served gateway), each fed from a memory
channel of Twilio JSON messages built with the ``providers.twilio`` encoders at Twilio's
pace (one ``media`` per 20 ms), under ``trio.testing.MockClock(autojump_threshold=0)``:
no sockets, no wall clock, the same run every time.  Call starts are staggered
(spread over ``--stagger-s``) so the calls are at different points of their commit
cycle, as on a real gateway.

``tracemalloc`` takes a snapshot just before the calls start and one while all of them
are live, ``--at-s`` seconds of audio into the last-started call (between two 20 ms
frames, after ``gc.collect()``); the difference ÷ N is the memory one live call holds,
grouped by the source line that allocated it.  Scenarios:

* ``commit 5 s``: the provider commits a transcript every 5 s of audio: the replay
  buffer holds up to 5 s of sent-but-uncommitted audio (steady state).
* ``never``: the provider never commits (partials only): the replay buffer fills to
  ``replay_ms`` and stays full (the worst case; ``--at-s`` must exceed
  ``replay_ms``/1000).

What it counts: live Python heap allocations (tracemalloc), not RSS; the allocator's
own overhead and fragmentation, sockets and the HTTP/WebSocket stack of a served call
are not in it (``bench/run.py`` measures RSS of the real gateway).  After the snapshot
the calls hang up and the run checks every call ended with ``stop`` and no audio lost.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.call import CallOutcome, run_call  # noqa: E402
from actors.config import CallConfig  # noqa: E402
from actors.stats import CallStats  # noqa: E402
from actors.messages import StreamStarted  # noqa: E402
from providers.scripted import ScriptedProvider  # noqa: E402
from providers.twilio import encode_connected, encode_media_event, encode_start, encode_stop  # noqa: E402

ACCOUNT_SID = "AC" + "0" * 31 + "1"
FRAME_MS = 20
FRAME_BYTES = 160
NEVER = 10**9  # a commit period no call reaches
#: distinct 20 ms frames cycled through (non-silent, so the stall watchdog sees speech)
FRAMES = [bytes(((i * 7 + seed * 13) % 251) for i in range(FRAME_BYTES)) for seed in range(50)]


@attrs.frozen
class Scenario:
    name: str
    commit_ms: int
    replay_ms: int


@attrs.frozen
class Site:
    where: str
    bytes_per_call: float
    blocks_per_call: float


@attrs.frozen
class Measurement:
    scenario: Scenario
    calls: int
    bytes_per_call: float
    blocks_per_call: float
    sites: list[Site]
    files: list[Site]
    replay_peak_ms: int  # mean over calls
    outcomes: list[CallOutcome]
    tracked_per_call: float = 0.0  # objects the cyclic collector tracks, per live call (its full passes scan them)
    cyclic_live: float = 0.0  # unreachable cycles found at the snapshot, per call (garbage made while live)
    cyclic_ended: float = 0.0  # unreachable cycles found once every call ended, per call


class NullSink:
    async def emit(self, event: Any) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def _play(send: trio.MemorySendChannel[str], n: int, start_at: float, seconds: float) -> None:
    """One call's Twilio side: connected, start, ``seconds`` of media at 20 ms pace, stop."""
    call_sid, stream_sid = f"CA{n:032x}", f"MZ{n:032x}"
    await trio.sleep_until(start_at)
    async with send:
        await send.send(encode_connected())
        await send.send(encode_start(stream_sid=stream_sid, account_sid=ACCOUNT_SID, call_sid=call_sid,
                                     custom_parameters={"From": "+15005550006"}))
        frames = int(seconds * 1000) // FRAME_MS
        seq = 2
        for chunk in range(1, frames + 1):
            seq += 1
            await send.send(encode_media_event(
                stream_sid=stream_sid, sequence_number=seq, chunk=chunk, timestamp=(chunk - 1) * FRAME_MS,
                payload=FRAMES[chunk % len(FRAMES)]))
            await trio.sleep_until(start_at + chunk * FRAME_MS / 1000)
        await send.send(encode_stop(stream_sid=stream_sid, sequence_number=seq + 1, account_sid=ACCOUNT_SID,
                                    call_sid=call_sid))


async def _measure(scenario: Scenario, calls: int, at_s: float, stagger_s: float, top: int,
                   frames: int) -> Measurement:
    config = CallConfig(replay_ms=scenario.replay_ms)
    step = max(FRAME_MS, int(stagger_s * 1000 / calls) // FRAME_MS * FRAME_MS) / 1000
    last_start = 1.0 + step * (calls - 1)
    measure_at = last_start + at_s + FRAME_MS / 2000  # between two frames of every call
    call_seconds = at_s + (last_start - 1.0) + 2.0  # every call is live at measure_at
    outcomes: list[CallOutcome] = []
    stats: list[CallStats] = []

    def started(_stream: StreamStarted, call_stats: CallStats) -> None:
        stats.append(call_stats)

    async def one_call(n: int) -> None:
        send, receive = trio.open_memory_channel[str](0)
        provider = ScriptedProvider(commit_ms=scenario.commit_ms, record=False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_play, send, n, 1.0 + step * n, call_seconds)
            outcomes.append(await run_call(receive, provider, [NullSink()], config=config, on_started=started))

    tracemalloc.start(frames)
    try:
        async with trio.open_nursery() as nursery:
            gc.collect()
            tracked_before = len(gc.get_objects())
            before = tracemalloc.take_snapshot()
            for n in range(calls):
                nursery.start_soon(one_call, n)
            await trio.sleep_until(measure_at)
            cyclic_live = gc.collect()
            tracked_during = len(gc.get_objects())
            during = tracemalloc.take_snapshot()
            peak_ms = sum(s.replay_peak_ms for s in stats) // max(1, len(stats))
        cyclic_ended = gc.collect()
    finally:
        tracemalloc.stop()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    before, during = before.filter_traces(ignore), during.filter_traces(ignore)

    def grouped(key: str) -> list[Site]:
        diffs = sorted(during.compare_to(before, key), key=lambda d: -d.size_diff)
        return [Site(_where(d.traceback, key), d.size_diff / calls, d.count_diff / calls)
                for d in diffs[:top] if d.size_diff > 0]

    total = during.compare_to(before, "filename")
    size = sum(d.size_diff for d in total) / calls
    count = sum(d.count_diff for d in total) / calls
    return Measurement(scenario, calls, size, count, grouped("traceback" if frames > 1 else "lineno"),
                       grouped("filename"), peak_ms, outcomes, (tracked_during - tracked_before) / calls,
                       cyclic_live / calls, cyclic_ended / calls)


def _where(traceback: tracemalloc.Traceback, key: str) -> str:
    def short(frame: tracemalloc.Frame) -> str:
        path = Path(frame.filename)
        try:
            name = str(path.relative_to(ROOT))
        except ValueError:
            parts = path.parts
            name = "/".join(parts[parts.index("site-packages") + 1:]) if "site-packages" in parts else path.name
        return name if key == "filename" else f"{name}:{frame.lineno}"
    return " ← ".join(short(f) for f in traceback)


def measure(scenario: Scenario, calls: int, at_s: float, stagger_s: float = 5.0, top: int = 12,
            frames: int = 1) -> Measurement:
    clock = trio.testing.MockClock(autojump_threshold=0)
    result = trio.run(_measure, scenario, calls, at_s, stagger_s, top, frames, clock=clock)
    bad = [o for o in result.outcomes if o.reason != "stop" or o.statistics.dropped_ms]
    if len(result.outcomes) != calls or bad:
        raise SystemExit(f"{scenario.name}: {len(bad)} of {len(result.outcomes)} calls did not end cleanly: "
                         f"{bad[:1]}")
    return result


def render(results: Sequence[Measurement]) -> str:
    lines = ["| scenario | replay_ms | calls | KiB / call | blocks / call | replay held (mean peak) "
             "| gc-tracked objects / call | cyclic garbage / call: live, ended |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r.scenario.name} | {r.scenario.replay_ms} | {r.calls} | {r.bytes_per_call / 1024:.1f} "
                     f"| {r.blocks_per_call:.0f} | {r.replay_peak_ms / 1000:.1f} s | {r.tracked_per_call:.0f} "
                     f"| {r.cyclic_live:.1f}, {r.cyclic_ended:.1f} |")
    for r in results:
        lines += ["", f"### {r.scenario.name}, replay_ms={r.scenario.replay_ms}: top allocation sites, per call",
                  "", "| site | KiB / call | blocks / call |", "|---|---:|---:|"]
        lines += [f"| `{s.where}` | {s.bytes_per_call / 1024:.2f} | {s.blocks_per_call:.1f} |" for s in r.sites]
        lines += ["", "| file | KiB / call | blocks / call |", "|---|---:|---:|"]
        lines += [f"| `{s.where}` | {s.bytes_per_call / 1024:.2f} | {s.blocks_per_call:.1f} |" for s in r.files]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--at-s", type=float, default=40.0,
                        help="seconds of audio into the last-started call when measured (default 40)")
    parser.add_argument("--stagger-s", type=float, default=5.0, help="call starts spread over this (default 5)")
    parser.add_argument("--commit-ms", default="5000,never",
                        help="comma-separated commit periods; 'never' = partials only (default 5000,never)")
    parser.add_argument("--replay-ms", default="30000", help="comma-separated CallConfig.replay_ms values")
    parser.add_argument("--top", type=int, default=12, help="allocation sites listed (default 12)")
    parser.add_argument("--frames", type=int, default=1,
                        help="traceback depth of a site (default 1: the allocating line)")
    args = parser.parse_args(argv)
    scenarios = []
    for replay in (int(v) for v in args.replay_ms.split(",")):
        for raw in args.commit_ms.split(","):
            never = raw.strip() == "never"
            name = "never commits" if never else f"commit {int(raw) / 1000:g} s"
            scenarios.append(Scenario(name, NEVER if never else int(raw), replay))
    results = []
    for scenario in scenarios:
        if scenario.commit_ms == NEVER and args.at_s * 1000 <= scenario.replay_ms:
            print(f"note: --at-s {args.at_s:g} does not fill replay_ms={scenario.replay_ms}", file=sys.stderr)
        results.append(measure(scenario, args.calls, args.at_s, args.stagger_s, args.top, args.frames))
        print(f"measured {scenario.name}, replay_ms={scenario.replay_ms}", file=sys.stderr)
    print(f"`.venv/bin/python bench/call_memory.py {' '.join(sys.argv[1:] if argv is None else argv)}`".rstrip())
    print()
    print(render(results))


if __name__ == "__main__":
    main()
