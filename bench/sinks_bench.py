"""Sinks under load: 200 calls with the ``redis://`` + ``jsonl:`` sinks against the same
run without them, side by side (``bench/run.py`` does the calls and the CPU accounting).

    .venv/bin/python bench/sinks_bench.py                    # 200 calls of 20 s
    .venv/bin/python bench/sinks_bench.py --calls 100 --call-seconds 15

1. starts ``redis-server`` on a free loopback port (tools core, no persistence);
2. starts a reader (this file, ``reader``; tools core) that ``XREAD BLOCK``s the stream
   and, for every entry, takes its arrival time minus the event's ``emitted_at``: the
   delivery lag (emitted by the call → visible to a consumer of Redis);
3. runs ``bench/run.py --levels N`` with two systems on the gateway core: ``ours`` =
   ``earpiece serve --sink jsonl:… --sink redis://…``, ``baseline`` = the same gateway
   whose only sink is ``jsonl:…?types=call_ended`` (one line per call, for the loss
   accounting: "without sinks");
4. stops the reader; checks that the stream holds every event the JSONL sink wrote.

Both clocks are this machine's wall clock; ``emitted_at`` has millisecond resolution.
Output: ``<out>/sinks.json`` and ``<out>/sinks.md``, and ``bench/run.py``'s own files.
Everything on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.run import TOOLS_CORE, free_port, start, stop, wait_port  # noqa: E402

STREAM = "earpiece:bench"
OURS = ("earpiece serve --provider {provider} --port {port} --sink jsonl:{events} "
        "--sink redis://127.0.0.1:%d/0?stream=" + STREAM)
BASELINE = "earpiece serve --provider {provider} --port {port} --sink jsonl:{events}?types=call_ended"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def reader(url: str, report: Path, stream: str = STREAM) -> None:
    """XREAD BLOCK from now on; on SIGTERM write {count, lag_ms percentiles} to ``report``."""
    import coredis
    import orjson
    import trio

    lags: list[float] = []

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                async def stop_on_signal() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return
                nursery.start_soon(stop_on_signal)
                async with coredis.Redis.from_url(url) as client:
                    last = "$"
                    newest = await client.xrevrange(stream, count=1)
                    last = newest[0].identifier.decode() if newest else "0-0"
                    print("reading", flush=True)
                    while True:
                        reply = await client.xread({stream: last}, count=1000, block=1000)
                        now = time.time()
                        for entry in (reply or {}).get(stream.encode(), ()):
                            event = orjson.loads(entry.field_values[b"event"])
                            emitted = dt.datetime.strptime(event["emitted_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                                tzinfo=dt.UTC).timestamp()
                            lags.append(1000 * (now - emitted))
                            last = entry.identifier.decode()

    trio.run(main)
    report.write_text(json.dumps({"count": len(lags), "lag_ms": {
        "p50": percentile(lags, 0.50), "p99": percentile(lags, 0.99), "p999": percentile(lags, 0.999),
        "max": round(max(lags), 1) if lags else None}}))


def micro(calls: int, seconds: float, partial_ms: int, commit_ms: int, out: Path) -> dict[str, object]:
    """CPU of the sinks alone, in-process: the events of ``calls`` live calls (a partial
    every ``partial_ms``, a commit every ``commit_ms`` of audio) emitted at their real
    rate into a hub, with no sink and with ``jsonl`` + ``redis`` (redis-server is
    another process: its CPU is not counted), and the delivery lag (``emitted_at`` →
    read by a separate ``XREAD BLOCK`` process).  Robust to other load on the machine:
    ``time.process_time`` counts only this process."""
    import trio

    from actors.transcript_emitter import utc_timestamp
    from gateway.sinks import open_sinks

    port = free_port()
    redis = start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", str(out)], TOOLS_CORE, out / "redis-micro.log")
    per_s = calls * (1000 / partial_ms + 1000 / commit_ms)
    tick = 0.02
    result: dict[str, object] = {"calls": calls, "seconds": seconds, "events_per_s": per_s}

    async def run(specs: list[str]) -> tuple[float, object]:
        seqs = [0] * calls
        async with open_sinks(specs, {}) as hub:
            t0 = time.process_time()
            start_at = trio.current_time()
            sent = 0
            n = 0
            while trio.current_time() - start_at < seconds:
                due = int((trio.current_time() - start_at) * per_s)
                while sent < due:
                    call = sent % calls
                    seqs[call] += 1
                    kind = "committed" if seqs[call] % (commit_ms // partial_ms + 1) == 0 else "partial"
                    await hub.emit({"type": "transcript", "kind": kind, "text": "hello can you hear me " * 2,
                                    "call_sid": f"CA{call:032x}", "stream_sid": f"MZ{call:032x}", "seq": seqs[call],
                                    "provider": "elevenlabs", "audio_start_ms": 1200, "audio_end_ms": 3400,
                                    "emitted_at": utc_timestamp()})
                    sent += 1
                n += 1
                await trio.sleep_until(start_at + n * tick)
        return time.process_time() - t0, (sent, hub.statistics())

    lag_reader = None
    try:
        wait_port(port, redis)
        lag_reader = start([sys.executable, __file__, "reader", f"redis://127.0.0.1:{port}/0", str(out / "micro-lag.json"),
                            "--stream", "micro"], TOOLS_CORE, out / "micro-reader.log", stdout=subprocess.PIPE)
        if lag_reader.stdout.readline().decode().strip() != "reading":  # type: ignore[union-attr]
            raise RuntimeError("the lag reader did not start")
        for name, specs in (("no sinks", []), ("jsonl + redis", [f"jsonl:{out / 'micro.jsonl'}",
                                                                  f"redis://127.0.0.1:{port}/0?stream=micro"])):
            cpu, (sent, stats) = trio.run(run, specs)
            result[name] = {"cpu_s": round(cpu, 3), "events": sent,
                            "us_per_event": round(1e6 * cpu / sent, 1),
                            "cpu_ms_per_call_s": round(1000 * cpu / (calls * seconds), 3),
                            "sinks": [attrs_dict(s) for s in stats]}
            print(name, result[name], flush=True)
    finally:
        if lag_reader is not None:
            stop(lag_reader, signal.SIGTERM)
        stop(redis, signal.SIGTERM)
    result["delivery_lag"] = json.loads((out / "micro-lag.json").read_text())
    base, with_sinks = result["no sinks"], result["jsonl + redis"]
    result["added_cpu_ms_per_call_s"] = round(with_sinks["cpu_ms_per_call_s"] - base["cpu_ms_per_call_s"], 3)  # type: ignore[index]
    result["added_us_per_event"] = round(
        1e6 * (with_sinks["cpu_s"] - base["cpu_s"]) / with_sinks["events"], 1)  # type: ignore[index]
    return result


def attrs_dict(stats: object) -> dict[str, object]:
    import attrs
    return attrs.asdict(stats)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--call-seconds", type=float, default=20.0)
    parser.add_argument("--provider", default="elevenlabs", choices=("elevenlabs", "scripted"))
    parser.add_argument("--out", help="output directory (default bench/out/sinks-<time>)")
    sub = parser.add_subparsers(dest="role")
    read = sub.add_parser("reader")
    read.add_argument("url")
    read.add_argument("report")
    read.add_argument("--stream", default=STREAM)
    parser.add_argument("--micro", action="store_true",
                        help="only the in-process CPU of the sinks at the events rate of --calls calls")
    parser.add_argument("--micro-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    if args.micro:
        out = Path(args.out) if args.out else REPO / "bench" / "out" / f"sinks-micro-{dt.datetime.now():%Y%m%d-%H%M%S}"
        out.mkdir(parents=True, exist_ok=True)
        result = micro(args.calls, args.micro_seconds, 500, 5000, out)
        result["command"] = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
        (out / "micro.json").write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if k not in ("no sinks", "jsonl + redis")}, indent=1))
        return 0
    if args.role == "reader":
        reader(args.url, Path(args.report), args.stream)
        return 0
    if shutil.which("redis-server") is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else REPO / "bench" / "out" / f"sinks-{dt.datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    redis = start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", str(out)], TOOLS_CORE, out / "redis.log")
    lag_report = out / "lag.json"
    lag_reader = None
    try:
        wait_port(port, redis)
        url = f"redis://127.0.0.1:{port}/0"
        lag_reader = start([sys.executable, __file__, "reader", url, str(lag_report)], TOOLS_CORE,
                           out / "reader.log", stdout=subprocess.PIPE)
        if lag_reader.stdout.readline().decode().strip() != "reading":  # type: ignore[union-attr]
            raise RuntimeError("the lag reader did not start")
        run_argv = [sys.executable, "bench/run.py", "--levels", str(args.calls), "--call-seconds",
                    str(args.call_seconds), "--provider", args.provider, "--ours", OURS % port,
                    "--baseline", BASELINE, "--out", str(out)]
        subprocess.run(run_argv, cwd=REPO, check=True)
        xlen = int(subprocess.run(["redis-cli", "-p", str(port), "XLEN", STREAM], capture_output=True, text=True,
                                  check=True).stdout.strip() or 0)
    finally:
        if lag_reader is not None:
            stop(lag_reader, signal.SIGTERM)
        stop(redis, signal.SIGTERM)
    result = json.loads((out / "results.json").read_text())
    rows = {r["system"]: r for r in result["levels"]}
    ours, base = rows["ours"], rows["baseline"]
    events = out / "runs" / f"ours-{args.calls}.events.jsonl"
    written = sum(1 for _ in events.open("rb"))
    lag = json.loads(lag_report.read_text())
    summary = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "calls": args.calls, "call_seconds": args.call_seconds, "provider": args.provider,
        "cpu_ms_per_call_s": {"with_sinks": ours["cpu_ms_per_call_s"], "without": base["cpu_ms_per_call_s"]},
        "cpu_ratio": round(ours["cpu_ms_per_call_s"] / base["cpu_ms_per_call_s"], 3),
        "loss_ms": {"with_sinks": ours["loss_ms"], "without": base["loss_ms"]},
        "dropped_ms": {"with_sinks": ours.get("call_ended", {}).get("dropped_ms"),
                       "without": base.get("call_ended", {}).get("dropped_ms")},
        "events_jsonl": written, "events_in_redis": xlen, "events_read_by_lag_reader": lag["count"],
        "delivery_lag_ms": lag["lag_ms"],
    }
    (out / "sinks.json").write_text(json.dumps(summary, indent=1))
    md = (f"| calls | CPU ms / call-s with redis + jsonl | without sinks | ratio | audio lost (with / without) | "
          f"gw dropped_ms | events JSONL / Redis | delivery lag p50 / p99 / max ms |\n"
          f"|---:|---:|---:|---:|---|---:|---|---|\n"
          f"| {args.calls} | {ours['cpu_ms_per_call_s']:.2f} | {base['cpu_ms_per_call_s']:.2f} | "
          f"{summary['cpu_ratio']:.2f} | {ours['loss_ms']} / {base['loss_ms']} ms | "
          f"{summary['dropped_ms']['with_sinks']} | {written} / {xlen} | "
          f"{lag['lag_ms']['p50']} / {lag['lag_ms']['p99']} / {lag['lag_ms']['max']} |\n")
    (out / "sinks.md").write_text(md)
    print(md)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
