"""Capacity runner: the gateway and a baseline, side by side, at stepped load levels.

    .venv/bin/python bench/run.py                         # ours vs bare forwarder, default levels
    .venv/bin/python bench/run.py --levels 100,200 --call-seconds 15
    .venv/bin/python bench/run.py --profile 200           # py-spy of ours at 200 calls (PYSPY_RATE samples/s, default 200)
    .venv/bin/python bench/run.py --workers 2 --levels 100,150,200,250,300   # 1 worker vs 2, same run

For every level, for every system in turn (interleaved, so background noise hits both):

1. start ``bench/fake_provider.py`` pinned to core 1 (``taskset -c 1``);
2. start the system pinned to core 0: ours is ``earpiece serve --provider elevenlabs``
   with ``ELEVENLABS_BASE_URL`` pointing at the fake (or ``--provider scripted``), the
   baseline ``bench/baselines/bare_forwarder.py``; wait until it accepts TCP;
3. sample its process tree's RSS at rest, then run ``bench/loadgen.py`` (core 1) with N
   calls of ``--call-seconds``, starts spread over ``--ramp`` s;
4. over the steady window (every call live: ramp + 1.5 s → end − 0.5 s) sample the
   tree's CPU (utime + stime from /proc/<pid>/stat of it and its children) and RSS
   (every 0.5 s), and the load generator's and fake provider's CPU;
5. stop everything; read the fake's report (per-chunk lag, stamped e2e latency, bytes
   per stream), the generator's report (frames sent, send lateness) and, for ours,
   the ``call_ended`` events of its JSONL sink (``dropped_ms``).

Per level and system: CPU ms per call-second, gateway core %, KiB per call (RSS in
the window − RSS at rest, / N), lag p50/p99/max, e2e p50/p99, audio loss (sent −
received), gateway-reported ``dropped_ms``; a level is *sustained* when every call
connected, nothing was lost and lag p99 < 100 ms.  A level where the load generator
itself ran late (send lateness p99 > ``--max-send-late`` ms) is marked
``loadgen-limited``: its lag says nothing about the gateway.  After a system's first
failing level at or above ``--count-fails-from`` calls (``--stop-after-fails``) its
higher levels are skipped.

``--workers N``: the systems are ours with ``--workers 1`` (pinned to core 0, as above)
and ours with ``--workers N`` (pinned to cores 0-1, sharing core 1 with the load tools),
no baseline; after the levels, each system runs again at 50 % and 90 % of its own
capacity (its highest sustained level), and the report gives the sustained ratio and
the ``earpiece_transcription_delay_seconds`` histogram's p50/p99 (scraped from the
gateway's ``/metrics`` after each level) at those two loads.

Output: ``<out>/results.json``, ``<out>/results.md`` (the tables for RESULTS.md),
``<out>/results.png`` (CPU and p99 lag against calls; skipped with a message when
matplotlib is missing), and every process's logs and reports under ``<out>/runs``.
Everything listens on and connects to 127.0.0.1 only; every load is bounded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.procstat import core_busy, cpu_seconds, cpu_split, rss_kib  # noqa: E402

VENV_BIN = Path(sys.executable).parent
PYTHON = sys.executable
API_KEY = "bench-dummy-key"
DEFAULT_OURS = "earpiece serve --provider {provider} --port {port} --sink jsonl:{events}"
DEFAULT_BASELINE = "python bench/baselines/bare_forwarder.py --port {port} --provider-url {provider_url}"
GATEWAY_CORE, TOOLS_CORE = "0", "1"
TARGETS = {"cpu_ms_per_call_s_at_200": 3.0, "cpu_aim": 2.0, "sustained_calls": 300, "kib_per_call": 64,
           "lag_p99_ms": 20.0, "sustained_lag_p99_ms": 100.0}


# ------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(template: str, **values: str) -> list[str]:
    argv = shlex.split(template.format(**values))
    if argv and argv[0] in ("python", "python3"):
        argv[0] = PYTHON
    elif argv and (VENV_BIN / argv[0]).exists():
        argv[0] = str(VENV_BIN / argv[0])
    return argv


def start(argv: list[str], core: str, log: Path, env: dict[str, str] | None = None,
          stdout: Any = None) -> subprocess.Popen:
    cmd = (["taskset", "-c", core] if shutil.which("taskset") else []) + argv
    err = open(log, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=stdout or err, stderr=err,
                            start_new_session=True)
    proc._bench_log = err  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    log = getattr(proc, "_bench_log", None)
    if log:
        log.close()
    return proc.returncode


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout:g} s")


def wait_workers(log: Path, count: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until ``count`` workers of ``earpiece serve --workers`` logged that they listen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode} before its workers listened")
        if len(re.findall(r"earpiece\[\d+\]: earpiece on", log.read_text(errors="replace"))) >= count:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{count} workers not listening after {timeout:g} s")


def fake_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_bench/stats", timeout=5) as r:
        return json.loads(r.read())


def sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


# ------------------------------------------------------------------------- one run


def histogram_quantiles(text: str, name: str, quantiles: tuple[float, ...] = (0.5, 0.99)) -> dict[str, Any]:
    """Quantiles (ms) of a Prometheus histogram summed over its labels, interpolated
    linearly inside the bucket they fall in (as PromQL's histogram_quantile does)."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == name + "_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    bounds = sorted(buckets)
    count = buckets.get(float("inf"), 0.0)
    out: dict[str, Any] = {"count": int(count)}
    for q in quantiles:
        key = f"p{round(q * 100)}"
        if not count:
            out[key] = None
            continue
        rank, lower, below = q * count, 0.0, 0.0
        for upper in bounds:
            if buckets[upper] >= rank:
                if upper == float("inf"):
                    out[key] = f">{lower * 1000:g}"
                else:
                    inside = buckets[upper] - below
                    share = (rank - below) / inside if inside else 1.0
                    out[key] = round(1000 * (lower + share * (upper - lower)), 1)
                break
            lower, below = upper, buckets[upper]
    return out


def scrape_delays(port: int) -> dict[str, Any] | None:
    """The gateway's transcription-delay histograms, or None (a system without /metrics)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    return {"transcription": histogram_quantiles(text, "earpiece_transcription_delay_seconds"),
            "first_partial": histogram_quantiles(text, "earpiece_first_partial_delay_seconds")}


def run_level(system: str, template: str, calls: int, args: argparse.Namespace, rundir: Path,
              profile: bool = False) -> dict[str, Any]:
    tag = f"{system.replace(' ', '_')}-{calls}"
    fake_report = rundir / f"{tag}.fake.json"
    load_report = rundir / f"{tag}.loadgen.json"
    events = rundir / f"{tag}.events.jsonl"
    for stale in rundir.glob(f"{tag}.*"):  # a rerun into the same --out starts clean
        stale.unlink()
    fake = start([PYTHON, "bench/fake_provider.py", "--port", "0", "--report", str(fake_report),
                  "--api-key", API_KEY, "--max-seconds", str(args.call_seconds + args.ramp + 120),
                  "--partial-ms", str(args.partial_ms), "--commit-ms", str(args.commit_ms)],
                 TOOLS_CORE, rundir / f"{tag}.fake.log", stdout=subprocess.PIPE)
    line = fake.stdout.readline().decode()  # type: ignore[union-attr]
    if not line.startswith("listening on "):
        stop(fake)
        raise RuntimeError(f"fake provider did not start: {line!r}")
    fake_port = int(line.split()[-1])
    provider_url = f"ws://127.0.0.1:{fake_port}"
    port = free_port()
    env = dict(os.environ, ELEVENLABS_BASE_URL=provider_url, ELEVENLABS_API_KEY=API_KEY,
               PYTHONUNBUFFERED="1")
    argv = command(template, port=str(port), provider_url=provider_url, events=str(events),
                   provider=args.provider, python=PYTHON, repo=str(REPO))
    gateway = start(argv, getattr(args, "cores", {}).get(system, GATEWAY_CORE), rundir / f"{tag}.gateway.log",
                    env=env)
    row: dict[str, Any] = {"system": system, "calls": calls, "command": " ".join(argv)}
    loadgen = None
    spies: list[subprocess.Popen] = []
    try:
        wait_port(port, gateway)
        workers = re.search(r"--workers (\d+)", " ".join(argv))
        if workers and int(workers.group(1)) > 1:  # the parent listens at once; its workers take a while
            wait_workers(rundir / f"{tag}.gateway.log", int(workers.group(1)), gateway)
        time.sleep(args.settle)
        row["rss_rest_kib"] = rss_kib(gateway.pid)
        start_at = time.monotonic() + 1.0
        loadgen = start([PYTHON, "bench/loadgen.py", "--url", f"ws://127.0.0.1:{port}/twilio/stream",
                         "--calls", str(calls), "--call-seconds", str(args.call_seconds), "--ramp", str(args.ramp),
                         "--start-at", repr(start_at), "--report", str(load_report)],
                        TOOLS_CORE, rundir / f"{tag}.loadgen.log")
        w_start = start_at + args.ramp + 1.5
        w_end = start_at + args.call_seconds - 0.5
        if w_end - w_start < 2:
            raise ValueError("--call-seconds must exceed --ramp by at least 4 s")
        sleep_until(w_start)
        if profile:
            spies = _start_profilers(gateway.pid, w_end - w_start, rundir, tag)
        bytes0 = fake_stats(fake_port)["audio_bytes"]
        t0 = time.monotonic()
        core0 = core_busy(int(GATEWAY_CORE))
        split0 = cpu_split(gateway.pid)
        cpu0 = {"gw": cpu_seconds(gateway.pid), "lg": cpu_seconds(loadgen.pid), "fp": cpu_seconds(fake.pid)}
        rss_samples = []
        while time.monotonic() < w_end:
            rss_samples.append(rss_kib(gateway.pid))
            time.sleep(min(0.5, max(0.0, w_end - time.monotonic())))
        t1 = time.monotonic()
        core1 = core_busy(int(GATEWAY_CORE))
        split1 = cpu_split(gateway.pid)
        cpu1 = {"gw": cpu_seconds(gateway.pid), "lg": cpu_seconds(loadgen.pid), "fp": cpu_seconds(fake.pid)}
        rss_samples.append(rss_kib(gateway.pid))
        forwarded_s = (fake_stats(fake_port)["audio_bytes"] - bytes0) / 8000
        window = t1 - t0
        row.update(window_s=round(window, 2),
                   gw_cpu_s=round(cpu1["gw"] - cpu0["gw"], 3),
                   gw_core_pct=round(100 * (cpu1["gw"] - cpu0["gw"]) / window, 1),
                   others_on_gw_core_pct=max(0.0, round(  # tick-granular: clamp small negatives
                       100 * ((core1[0] - core0[0]) - (cpu1["gw"] - cpu0["gw"])) / max(1e-9, core1[1] - core0[1]), 1)),
                   gw_sys_share=round((split1[1] - split0[1]) / max(1e-9, cpu1["gw"] - cpu0["gw"]), 2),
                   loadgen_core_pct=round(100 * (cpu1["lg"] - cpu0["lg"]) / window, 1),
                   fake_core_pct=round(100 * (cpu1["fp"] - cpu0["fp"]) / window, 1),
                   rss_peak_kib=max(rss_samples), rss_end_kib=rss_samples[-1],
                   forwarded_audio_s=round(forwarded_s, 1),
                   keeping_up=round(forwarded_s / (calls * window), 3) if forwarded_s else None)
        for spy in spies:
            spy.wait(timeout=window + 30)
        loadgen.wait(timeout=args.call_seconds + args.ramp + 90)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # let the providers' streams finish
            if fake_stats(fake_port)["open_streams"] == 0:
                break
            time.sleep(0.25)
        row["delay_ms"] = scrape_delays(port)
    finally:
        for spy in spies:
            stop(spy, signal.SIGINT)
        if loadgen is not None:
            stop(loadgen, signal.SIGINT)
        row["gateway_exit"] = stop(gateway, signal.SIGTERM)
        stop(fake, signal.SIGTERM)
    lg = json.loads(load_report.read_text())
    fp = json.loads(fake_report.read_text())
    row.update(_metrics(row, lg, fp, events, calls))
    return row


def _start_profilers(pid: int, duration: float, rundir: Path, tag: str) -> list[subprocess.Popen]:
    spy = VENV_BIN / "py-spy"
    if not spy.exists():
        print("  py-spy not installed in the venv (pip install py-spy): no profile", flush=True)
        return []
    seconds = str(max(1, int(duration)))
    common = ["--pid", str(pid), "--duration", seconds, "--rate", os.environ.get("PYSPY_RATE", "200"), "--nonblocking"]
    return [start([str(spy), "record", *common, "--format", fmt, "-o", str(rundir / f"{tag}.profile.{ext}")],
                  TOOLS_CORE, rundir / f"{tag}.pyspy-{ext}.log")
            for fmt, ext in (("flamegraph", "svg"), ("raw", "txt"), ("speedscope", "speedscope.json"))]


def _metrics(row: dict[str, Any], lg: dict[str, Any], fp: dict[str, Any], events: Path, calls: int) -> dict[str, Any]:
    sent_ms = lg["frames_sent"] * 20
    received_ms = round(fp["bytes"] / 8)
    ended = ([e for e in map(json.loads, events.read_text().splitlines()) if e.get("type") == "call_ended"]
             if events.exists() else [])
    provider_measured = fp["streams"] > 0
    if not provider_measured and ended:  # --provider scripted: no provider socket, take the gateway's word
        received_ms = sum(e.get("forwarded_ms", 0) for e in ended)
    loss_ms = max(0, sent_ms - received_ms)
    out: dict[str, Any] = {
        "connected": lg["connected"], "completed": lg["completed"],
        "cpu_ms_per_call_s": round(1000 * row["gw_cpu_s"] / (calls * row["window_s"]), 3),
        "cpu_ms_per_audio_s": round(1000 * row["gw_cpu_s"] / row["forwarded_audio_s"], 3)
        if row["forwarded_audio_s"] else None,
        "kib_per_call": round((row["rss_peak_kib"] - row["rss_rest_kib"]) / calls, 1),
        "lag_ms": fp["lag_ms"], "e2e_ms": fp["e2e_ms"],
        "sent_ms": sent_ms, "received_ms": received_ms, "loss_ms": loss_ms,
        "loss_pct": round(100 * loss_ms / sent_ms, 3) if sent_ms else None,
        "missing_frames": fp["missing_frames"], "duplicate_frames": fp["duplicate_frames"],
        "provider_streams": fp["streams"], "provider_closed": fp["closed"],
        "send_late_ms": lg["send_late_ms"], "loadgen_errors": lg["errors"], "close_codes": lg["close_codes"],
        "loadgen_us_per_frame": lg.get("us_per_frame"),
    }
    out["provider_measured"] = provider_measured
    if ended:
        out["call_ended"] = {
            "events": len(ended),
            "reasons": {r: sum(1 for e in ended if e["reason"] == r) for r in {e["reason"] for e in ended}},
            "dropped_ms": sum(e.get("dropped_ms", 0) for e in ended),
            "audio_ms": sum(e.get("audio_ms", 0) for e in ended),
            "forwarded_ms": sum(e.get("forwarded_ms", 0) for e in ended),
        }
    lag99 = fp["lag_ms"]["p99"]
    late99 = lg["send_late_ms"]["p99"]
    out["loadgen_limited"] = late99 is None or late99 > ARGS.max_send_late
    out["sustained"] = (lg["connected"] == calls and lg["completed"] == calls and loss_ms == 0
                        and (not provider_measured  # scripted: lag is not observable, loss is
                             or (lag99 is not None and lag99 < TARGETS["sustained_lag_p99_ms"])))
    return out


# ------------------------------------------------------------------------- reporting


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "loadavg_at_start": load,
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def summarize(rows: list[dict[str, Any]], systems: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in systems:
        mine = [r for r in rows if r["system"] == name and "error" not in r]
        ok = [r["calls"] for r in mine if r["sustained"] and not r["loadgen_limited"]]
        at200 = next((r for r in mine if r["calls"] == 200), None)
        top = max((r for r in mine if r["sustained"] and not r["loadgen_limited"]), key=lambda r: r["calls"],
                  default=None)
        summary[name] = {"max_sustained_calls": max(ok) if ok else 0,
                         # what a whole core would carry at the CPU cost of the highest sustained level
                         "cpu_projected_calls_per_core": int(1000 / top["cpu_ms_per_call_s"]) if top else None,
                         "cpu_ms_per_call_s_at_200": at200["cpu_ms_per_call_s"] if at200 else None,
                         "kib_per_call_at_200": at200["kib_per_call"] if at200 else None,
                         "lag_p99_ms_at_200": at200["lag_ms"]["p99"] if at200 else None}
    return summary


def ratios(rows: list[dict[str, Any]], a: str, b: str) -> list[dict[str, Any]]:
    out = []
    by = {(r["system"], r["calls"]): r for r in rows if "error" not in r}
    for (system, calls), ra in sorted(by.items(), key=lambda kv: kv[0][1]):
        rb = by.get((b, calls))
        if system != a or rb is None:
            continue

        def ratio(x: float | None, y: float | None) -> float | None:
            return round(x / y, 2) if x is not None and y else None

        out.append({"calls": calls,
                    "cpu": ratio(ra["cpu_ms_per_call_s"], rb["cpu_ms_per_call_s"]),
                    "cpu_per_audio_s": ratio(ra["cpu_ms_per_audio_s"], rb["cpu_ms_per_audio_s"]),
                    "kib_per_call": ratio(ra["kib_per_call"], rb["kib_per_call"]),
                    "lag_p99": ratio(ra["lag_ms"]["p99"], rb["lag_ms"]["p99"]),
                    "e2e_p50": ratio(ra["e2e_ms"]["p50"], rb["e2e_ms"]["p50"])})
    return out


def workers_summary(rows: list[dict[str, Any]], systems: list[str]) -> dict[str, Any]:
    """Capacity of each system, the ratio of the last to the first, and the delay
    quantiles at 50 % and 90 % of each system's capacity."""
    summary = summarize(rows, systems)
    out: dict[str, Any] = {}
    for name in systems:
        capacity = summary[name]["max_sustained_calls"]
        at = {}
        for share in (0.5, 0.9):
            calls = round(capacity * share)
            row = next((r for r in rows if r["system"] == name and r["calls"] == calls and "error" not in r), None)
            at[f"{share:.0%}"] = {"calls": calls, "sustained": row["sustained"] if row else None,
                                  "delay_ms": row.get("delay_ms") if row else None}
        out[name] = {"max_sustained_calls": capacity, "at": at}
    first, last = summary[systems[0]]["max_sustained_calls"], summary[systems[-1]]["max_sustained_calls"]
    out["ratio"] = round(last / first, 2) if first else None
    return out


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def markdown(result: dict[str, Any]) -> str:
    systems = result["systems"]
    lines = ["| calls | system | CPU ms / call-s | CPU ms / audio-s fwd | core % | others on core % | KiB / call | "
             "lag p50 / p99 / max ms | e2e p50 / p99 ms | loss ms (%) | gw dropped_ms | loadgen late p99 ms | verdict |",
             "|---:|---|---:|---:|---:|---:|---:|---|---|---|---:|---:|---|"]
    for r in result["levels"]:
        if "error" in r:
            lines.append(f"| {r['calls']} | {r['system']} | error: {r['error'][:60]} |||||||||||")
            continue
        lag, e2e = r["lag_ms"], r["e2e_ms"]
        verdict = "sustained" if r["sustained"] else "**fails**"
        if r["keeping_up"] is not None and r["keeping_up"] < 0.97:
            verdict += f" (behind: {100 * r['keeping_up']:.0f}% of real time)"
        if r["loadgen_limited"]:
            verdict += " (loadgen-limited)"
        dropped = r.get("call_ended", {}).get("dropped_ms")
        lines.append(
            f"| {r['calls']} | {r['system']} | {_fmt(r['cpu_ms_per_call_s'], 2)} | {_fmt(r['cpu_ms_per_audio_s'], 2)} | "
            f"{_fmt(r['gw_core_pct'])} | "
            f"{_fmt(r['others_on_gw_core_pct'])} | {_fmt(r['kib_per_call'])} | {_fmt(lag['p50'])} / {_fmt(lag['p99'])} / {_fmt(lag['max'])} | "
            f"{_fmt(e2e['p50'])} / {_fmt(e2e['p99'])} | {r['loss_ms']} ({_fmt(r['loss_pct'], 2)}) | "
            f"{_fmt(dropped)} | {_fmt(r['send_late_ms']['p99'])} | {verdict} |")
    lines.append("")
    lines.append("| system | max sustained calls (measured) | calls per core projected from CPU | "
                 "CPU ms / call-s at 200 | KiB / call at 200 | lag p99 at 200 |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for name in systems:
        s = result["summary"][name]
        lines.append(f"| {name} | {s['max_sustained_calls']} | {_fmt(s['cpu_projected_calls_per_core'])} | "
                     f"{_fmt(s['cpu_ms_per_call_s_at_200'], 2)} | "
                     f"{_fmt(s['kib_per_call_at_200'])} | {_fmt(s['lag_p99_ms_at_200'])} |")
    for other, rows in result.get("ratios", {}).items():
        lines += ["", f"Ratios {systems[0]} / {other} (same run, same levels):", "",
                  "| calls | CPU / call-s | CPU / audio-s fwd | KiB / call | lag p99 | e2e p50 |",
                  "|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['calls']} | {_fmt(r['cpu'], 2)} | {_fmt(r['cpu_per_audio_s'], 2)} | "
                  f"{_fmt(r['kib_per_call'], 2)} | {_fmt(r['lag_p99'], 2)} | "
                  f"{_fmt(r['e2e_p50'], 2)} |" for r in rows]
    delays = [r for r in result["levels"] if r.get("delay_ms")]
    if delays:
        lines += ["", "Delay a caller feels, from the gateway's own histograms (`/metrics`, all of the level's calls; "
                  "bucket-interpolated):", "",
                  "| calls | system | committed transcripts | transcription delay p50 / p99 ms | "
                  "first partial p50 / p99 ms |", "|---:|---|---:|---|---|"]
        for r in delays:
            t, f = r["delay_ms"]["transcription"], r["delay_ms"]["first_partial"]
            lines.append(f"| {r['calls']} | {r['system']} | {t['count']} | {_fmt(t['p50'])} / {_fmt(t['p99'])} | "
                         f"{_fmt(f['p50'])} / {_fmt(f['p99'])} |")
    workers = result.get("workers")
    if workers:
        lines += ["", f"Workers: sustained calls {systems[-1]} ÷ {systems[0]} = **{_fmt(workers['ratio'], 2)}×** "
                  "(same run).", "",
                  "| system | max sustained calls | at 50 %: calls, delay p50 / p99 ms | "
                  "at 90 %: calls, delay p50 / p99 ms |", "|---|---:|---|---|"]
        for name in systems:
            w = workers[name]
            cells = []
            for share in ("50%", "90%"):
                at = w["at"][share]
                d = (at["delay_ms"] or {}).get("transcription", {})
                cells.append(f"{at['calls']}: {_fmt(d.get('p50'))} / {_fmt(d.get('p99'))}"
                             + ("" if at["sustained"] in (True, None) else " (not sustained)"))
            lines.append(f"| {name} | {w['max_sustained_calls']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (.venv/bin/pip install matplotlib): plot skipped"
    fig, (ax_cpu, ax_lag) = plt.subplots(1, 2, figsize=(12, 4.8))
    for i, name in enumerate(result["systems"]):
        rows = [r for r in result["levels"] if r["system"] == name and "error" not in r]
        x = [r["calls"] for r in rows]
        color = f"C{i}"
        ax_cpu.plot(x, [r["cpu_ms_per_call_s"] for r in rows], "o-", color=color, label=f"{name}: per call-second")
        ax_cpu.plot(x, [r["cpu_ms_per_audio_s"] for r in rows], "x--", color=color, alpha=0.7,
                    label=f"{name}: per audio-second forwarded")
        ax_lag.plot(x, [max(r["lag_ms"]["p99"] or 0.1, 0.1) for r in rows], "o-", color=color, label=f"{name} lag p99")
    ax_cpu.axhline(TARGETS["cpu_ms_per_call_s_at_200"], color="red", ls="--", lw=0.8, label="target 3.0")
    ax_cpu.axhline(TARGETS["cpu_aim"], color="green", ls=":", lw=0.8, label="aim 2.0")
    ax_cpu.set_xlabel("concurrent calls")
    ax_cpu.set_ylabel("gateway CPU, ms per call-second (one core)")
    ax_cpu.set_ylim(bottom=0)
    ax_cpu.legend(fontsize=8)
    ax_cpu.grid(alpha=0.3)
    ax_lag.axhline(TARGETS["lag_p99_ms"], color="green", ls=":", lw=0.8, label="target 20 ms")
    ax_lag.axhline(TARGETS["sustained_lag_p99_ms"], color="red", ls="--", lw=0.8, label="sustained < 100 ms")
    ax_lag.set_yscale("log")
    ax_lag.set_xlabel("concurrent calls")
    ax_lag.set_ylabel("per-chunk lag p99, ms (log)")
    ax_lag.legend()
    ax_lag.grid(alpha=0.3, which="both")
    fig.suptitle(f"earpiece capacity, {result['config']['call_seconds']:g} s calls, "
                 f"gateway on one core ({result['machine']['cpu']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"


# ------------------------------------------------------------------------------ main

ARGS: argparse.Namespace


def main(argv: list[str] | None = None) -> int:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="50,100,200,300,400,500")
    parser.add_argument("--call-seconds", type=float, default=20.0)
    parser.add_argument("--ramp", type=float, default=4.0)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between listening and the load")
    parser.add_argument("--provider", choices=("elevenlabs", "scripted"), default="elevenlabs")
    parser.add_argument("--partial-ms", type=int, default=500, help="fake provider: a partial every N ms of audio")
    parser.add_argument("--commit-ms", type=int, default=5000, help="fake provider: a VAD-like commit every N ms")
    parser.add_argument("--ours", default=DEFAULT_OURS, help="command template of the system under test")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="command template; '' for none")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=COMMAND",
                        help="more systems to run side by side (e.g. bench/experiments.py variants)")
    parser.add_argument("--stop-after-fails", type=int, default=1,
                        help="skip a system's higher levels after this many failing levels ...")
    parser.add_argument("--count-fails-from", type=int, default=200,
                        help="... counting only levels from this many calls (the target level always runs)")
    parser.add_argument("--max-send-late", type=float, default=20.0,
                        help="loadgen send lateness p99 (ms) above which a level is loadgen-limited")
    parser.add_argument("--profile", type=int, metavar="CALLS", help="only profile ours at this level (py-spy)")
    parser.add_argument("--out", help="output directory (default bench/out/run-<time>)")
    parser.add_argument("--plot", help="also copy the PNG here (e.g. bench/results.png)")
    parser.add_argument("--workers", type=int, help="compare ours with --workers 1 and with this many workers")
    args = ARGS = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    out = Path(args.out) if args.out else REPO / "bench" / "out" / f"run-{dt.datetime.now():%Y%m%d-%H%M%S}"
    rundir = out / "runs"
    rundir.mkdir(parents=True, exist_ok=True)
    systems = [("ours", args.ours)]
    args.cores = {}
    if args.workers:
        one, many = "1 worker", f"{args.workers} workers"
        systems = [(one, args.ours + " --workers 1"), (many, args.ours + f" --workers {args.workers}")]
        args.cores = {one: GATEWAY_CORE, many: ",".join(str(c) for c in range(args.workers))}
    elif args.profile:
        levels, systems = [args.profile], [("ours", args.ours)]
    else:
        if args.baseline:
            systems.append(("baseline", args.baseline))
        for spec in args.variant:
            name, _, template = spec.partition("=")
            systems.append((name, template))
    names = [n for n, _ in systems]
    result: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {"levels": levels, "call_seconds": args.call_seconds, "ramp_s": args.ramp,
                   "fake_partial_ms": args.partial_ms, "fake_commit_ms": args.commit_ms,
                   "provider": args.provider, "gateway_core": GATEWAY_CORE, "tools_core": TOOLS_CORE,
                   "systems": {n: t for n, t in systems}},
        "systems": names, "levels": [],
    }
    fails = {n: 0 for n in names}
    began = time.monotonic()
    for calls in levels:
        for name, template in systems:
            if fails[name] >= args.stop_after_fails:
                continue
            print(f"[{time.monotonic() - began:6.0f}s] {name} @ {calls} calls ...", flush=True)
            try:
                row = run_level(name, template, calls, args, rundir, profile=bool(args.profile))
            except Exception as exc:  # one broken level must not lose the others
                row = {"system": name, "calls": calls, "error": f"{type(exc).__name__}: {exc}"}
                fails[name] += calls >= args.count_fails_from
                print(f"    error: {row['error']}", flush=True)
            else:
                if not row["sustained"] and not row["loadgen_limited"] and calls >= args.count_fails_from:
                    fails[name] += 1
                lag = row["lag_ms"]
                print(f"    cpu {row['cpu_ms_per_call_s']:.2f} ms/call-s ({row['gw_core_pct']:.0f}% core, others "
                      f"{row['others_on_gw_core_pct']:.0f}%, keeping up {row['keeping_up']}), "
                      f"{row['kib_per_call']:.1f} KiB/call, lag p50/p99/max {lag['p50']}/{lag['p99']}/{lag['max']} ms, "
                      f"e2e p50 {row['e2e_ms']['p50']} ms, loss {row['loss_ms']} ms, "
                      f"loadgen {row['loadgen_core_pct']:.0f}% late p99 {row['send_late_ms']['p99']} ms"
                      f"{' LOADGEN-LIMITED' if row['loadgen_limited'] else ''}"
                      f"{'' if row['sustained'] else ' NOT SUSTAINED'}", flush=True)
            result["levels"].append(row)
            (out / "results.json").write_text(json.dumps(result, indent=1))
    if args.workers:  # each system again at 50 % and 90 % of its own capacity, for the delay figures
        for name, template in systems:
            capacity = summarize(result["levels"], names)[name]["max_sustained_calls"]
            for share in (0.5, 0.9):
                calls = max(1, round(capacity * share))
                if not capacity or any(r["system"] == name and r["calls"] == calls for r in result["levels"]):
                    continue
                print(f"[{time.monotonic() - began:6.0f}s] {name} @ {calls} calls ({share:.0%} of capacity) ...",
                      flush=True)
                try:
                    row = run_level(name, template, calls, args, rundir)
                except Exception as exc:
                    row = {"system": name, "calls": calls, "error": f"{type(exc).__name__}: {exc}"}
                result["levels"].append(row)
                (out / "results.json").write_text(json.dumps(result, indent=1))
        result["workers"] = workers_summary(result["levels"], names)
    result["elapsed_s"] = round(time.monotonic() - began, 1)
    result["summary"] = summarize(result["levels"], names)
    result["ratios"] = {other: ratios(result["levels"], names[0], other) for other in names[1:]}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (out / "results.md").write_text(table)
    print(table)
    message = plot(result, out / "results.png")
    print(message)
    if args.plot and (out / "results.png").exists():
        shutil.copy(out / "results.png", args.plot)
    if args.profile:
        from bench.profile_summary import summarize_raw
        raw = rundir / f"ours-{args.profile}.profile.txt"
        if raw.exists():
            text = summarize_raw(raw)
            (out / "profile.md").write_text(text)
            print(text)
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
