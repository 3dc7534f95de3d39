"""earpiece beside the seed-bench reference gateways, in one command, one session.

```sh
.venv/bin/python bench/seed_compare.py                    # 100-500 calls, three runs at 300 (~14 min)
.venv/bin/python bench/seed_compare.py --levels 200,300 --repeat 1 --systems seed,earpiece
```

What it does:

1. sets up the seed-bench's own virtualenv with ``../shared/seed-bench/setup.sh``
   (``SEED_BENCH_VENV``, default ``bench/out/seed-venv``: the shared folder is
   read-only, nothing is written into it);
2. for each level (default 100, 200, 300, 400, 500; ``--repeat`` runs at
   ``--repeat-level``, default 3 at 300) and each system in turn — ref_seed, ref_trio,
   ref_limit, earpiece, interleaved so that background load hits them alike — runs the
   seed-bench harness ``measure.py`` for that one level: fake ElevenLabs STT and the
   Twilio load generator on core 1, the gateway pinned to core 0 (``taskset``), 15 s
   calls, ElevenLabs protocol, everything on 127.0.0.1;
3. after a level where a system fell over (lag p99 above ``--stop-lag-ms``, > 20 %
   loss or < 80 % of calls connected) that system's higher levels are skipped;
4. writes every run's JSON (``json/``), the harness logs, ``results.json`` and
   ``results.md`` (the table ``bench/RESULTS.md`` leads with: per level, per system,
   ratios to ref_seed; the summary against the targets) under ``--out``.

"Sustained" is the harness's rule (``report.py``): every call connected, loss < 0.01 %,
lag p99 < 100 ms, load generator slip p99 < 10 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SEED = Path(os.environ.get("SEED_BENCH_DIR", REPO.parent.parent / "shared" / "seed-bench"))
if not SEED.is_dir():
    SEED = Path("/work/shared/seed-bench")

# {py}: the seed-bench venv's python; {port}: the gateway's port (free, chosen per run).
SYSTEMS: dict[str, tuple[str, str, list[str]]] = {
    # name: (command template, working directory ("seed" or "repo"), extra env)
    "seed": ("{py} -m uvicorn ref_seed.app:app --host 127.0.0.1 --port {port} --log-level warning", "seed", []),
    "ref_trio": ("{py} -m hypercorn --worker-class trio --bind 127.0.0.1:{port} ref_trio.gateway:app",
                 "seed", []),
    "ref_limit": ("{py} ref_limit/gateway.py --port {port}", "seed", []),
    "earpiece": ("{repo}/.venv/bin/earpiece serve --port {port} --provider elevenlabs --sink jsonl:/dev/null "
                 "--max-busy 0", "repo", ["ELEVENLABS_API_KEY=test"]),
}
ANCHOR = "seed"


def free_port(pair: bool = False) -> int:
    """A free port on 127.0.0.1 (with ``pair``, one whose successor is free too)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not pair:
            return port
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair on 127.0.0.1")


def setup_venv(venv: Path) -> str:
    env = dict(os.environ, SEED_BENCH_VENV=str(venv))
    out = subprocess.run(["sh", str(SEED / "setup.sh")], env=env, check=True, capture_output=True, text=True)
    py = out.stdout.strip().splitlines()[-1]
    if not Path(py).exists():
        raise SystemExit(f"setup.sh printed {py!r}, which is not a python; stderr:\n{out.stderr}")
    return py


def sustained(r: dict[str, Any]) -> bool:
    lag, slip = r.get("lag_ms") or {}, r.get("slip_ms") or {}
    return ((lag.get("p99") or 1e9) < 100 and (r.get("loss_pct") or 0) < 0.01
            and r.get("connected") == r["calls"] and (slip.get("p99") or 1e9) < 10)


def fell_over(r: dict[str, Any], stop_lag_ms: float) -> bool:
    lag = r.get("lag_ms") or {}
    return ((lag.get("p99") or 0) > stop_lag_ms or (r.get("loss_pct") or 0) > 20
            or (r.get("connected") or 0) < 0.8 * r["calls"])


def run_one(system: str, calls: int, run: int, a: argparse.Namespace, py: str, outdir: Path) -> dict[str, Any]:
    template, where, extra_env = a.systems_map[system]
    port, stt_port = free_port(), free_port(pair=True)
    cmd = template.format(py=py, port=port, repo=REPO)
    name = f"{system}-{calls}-r{run}"
    argv = [py, str(SEED / "measure.py"), "--name", name, "--cwd", str(SEED if where == "seed" else REPO),
            "--levels", str(calls), "--duration", str(a.duration), "--ramp", str(a.ramp),
            "--stt-port", str(stt_port), "--cmd", cmd, "--url", f"ws://127.0.0.1:{port}/twilio/stream",
            "--env", "ELEVENLABS_BASE_URL={stt}", "--stop-lag-ms", str(a.stop_lag_ms),
            "--gw-cpu", a.gw_cpu, "--load-cpu", a.load_cpu]
    for kv in extra_env:
        argv += ["--env", kv]
    jsondir = outdir / "json"
    env = dict(os.environ, SEED_BENCH_OUT=str(jsondir))
    before = set(jsondir.glob(f"{name}-*.json"))
    t0 = time.monotonic()
    with open(outdir / f"{name}.out", "w") as log:
        proc = subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=a.duration + a.ramp + 240)
    new = sorted(set(jsondir.glob(f"{name}-*.json")) - before)
    row: dict[str, Any] = {"system": system, "calls": calls, "run": run, "cmd": cmd,
                           "elapsed_s": round(time.monotonic() - t0, 1), "rc": proc.returncode}
    if new:
        res = json.loads(new[-1].read_text())
        if res.get("levels"):
            row.update(res["levels"][0])
            row["idle"] = res.get("idle")
    row["sustained"] = "lag_ms" in row and sustained(row)
    return row


def plan(a: argparse.Namespace) -> list[tuple[int, int]]:
    """(calls, run number) in order: the repeats of the repeat level follow its first run."""
    out: list[tuple[int, int]] = []
    for n in (int(x) for x in a.levels.split(",") if x):
        out += [(n, r) for r in range(1, (a.repeat if n == a.repeat_level else 1) + 1)]
    return out


# ------------------------------------------------------------------------- report


def _f(v: Any, nd: int = 1) -> str:
    if v is None:
        return "–"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _ratio(x: Any, y: Any) -> str:
    return f"{x / y:.2f}" if isinstance(x, (int, float)) and isinstance(y, (int, float)) and y else "–"


def _median(rows: list[dict[str, Any]], key: str, sub: str | None = None) -> float | None:
    vals = [(r.get(key) or {}).get(sub) if sub else r.get(key) for r in rows]
    vals = [v for v in vals if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None


def markdown(result: dict[str, Any]) -> str:
    rows, systems = result["rows"], result["systems"]
    lines = [
        "| calls | run | system | CPU ms / call-s | × seed | core % | KiB / call | × seed "
        "| lag p50 / p99 / max ms | × seed (p99) | loss % | slip p99 ms | sustained |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    anchor = {(r["calls"], r["run"]): r for r in rows if r["system"] == ANCHOR}
    for r in rows:
        s = anchor.get((r["calls"], r["run"]), {})
        lag, slip = r.get("lag_ms") or {}, r.get("slip_ms") or {}
        if "lag_ms" not in r:
            lines.append(f"| {r['calls']} | {r['run']} | {r['system']} | no result (rc {r.get('rc')}) "
                         "| | | | | | | | | |")
            continue
        lines.append("| " + " | ".join([
            str(r["calls"]), str(r["run"]), r["system"], _f(r.get("cpu_ms_per_call_s"), 2),
            _ratio(r.get("cpu_ms_per_call_s"), s.get("cpu_ms_per_call_s")) if r["system"] != ANCHOR else "",
            _f(r.get("gw_cpu_pct")), _f(r.get("kib_per_call")),
            _ratio(r.get("kib_per_call"), s.get("kib_per_call")) if r["system"] != ANCHOR else "",
            f"{_f(lag.get('p50'))} / {_f(lag.get('p99'))} / {_f(lag.get('max'))}",
            _ratio(lag.get("p99"), (s.get("lag_ms") or {}).get("p99")) if r["system"] != ANCHOR else "",
            _f(r.get("loss_pct"), 2), _f(slip.get("p99"), 2), "yes" if r["sustained"] else "**no**"]) + " |")
    lines += ["", "| system | max sustained calls | CPU ms / call-s at 200 (× seed) | at 300, median (× seed) "
              "| lag p99 at 300, runs (spread) | KiB / call, median 200–300 (× seed) |",
              "|---|---:|---:|---:|---|---:|"]
    summary = result["summary"]
    sd = summary.get(ANCHOR, {})
    for system in systems:
        m = summary[system]
        p99s = m["lag_p99_300"]
        lines.append("| " + " | ".join([
            system, _f(m["max_sustained"]),
            f"{_f(m['cpu_200'], 2)} ({_ratio(m['cpu_200'], sd.get('cpu_200'))})",
            f"{_f(m['cpu_300'], 2)} ({_ratio(m['cpu_300'], sd.get('cpu_300'))})",
            (" / ".join(_f(v) for v in p99s) + (f" ({max(p99s) / min(p99s):.1f}×)" if p99s and min(p99s) > 0
                                                   else "")) if p99s else "–",
            f"{_f(m['kib'])} ({_ratio(m['kib'], sd.get('kib'))})"]) + " |")
    if "earpiece" in summary and sd:
        lines += ["", targets(result, "earpiece")]
    return "\n".join(lines) + "\n"


def targets(result: dict[str, Any], system: str) -> str:
    """The issue's targets for ``system`` against ref_seed, judged on this session."""
    rows, summary = result["rows"], result["summary"]
    me, sd = summary[system], summary[ANCHOR]

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("**met**" if ok else "**missed**")

    def ratio(a: Any, b: Any) -> float | None:
        return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

    out = ["| target (ratios to ref_seed, this session) | measured | |", "|---|---|---|"]
    for level in (200, 300):
        r = ratio(me[f"cpu_{level}"], sd[f"cpu_{level}"])
        out.append(f"| CPU per call-second ≤ 0.6× seed at {level} calls | "
                   f"{_f(me[f'cpu_{level}'], 2)} vs {_f(sd[f'cpu_{level}'], 2)} ms: {_f(r, 2)}× | "
                   f"{verdict(None if r is None else r <= 0.6)} |")
    seed_ok = sorted({r["calls"] for r in rows if r["system"] == ANCHOR and r["sustained"]})
    worse = []
    for level in seed_ok:
        mine = [(r.get("lag_ms") or {}).get("p99") for r in rows if r["system"] == system and r["calls"] == level]
        theirs = [(r.get("lag_ms") or {}).get("p99") for r in rows if r["system"] == ANCHOR and r["calls"] == level]
        mine, theirs = [v for v in mine if v is not None], [v for v in theirs if v is not None]
        if not mine or not theirs:
            continue
        m, t = statistics.median(mine), statistics.median(theirs)
        worse.append(f"{level}: {m:.1f} vs {t:.1f}")
        if m > t:
            worse[-1] += " (higher)"
    higher = any("higher" in w for w in worse)
    out.append(f"| lag p99 no higher than seed's at every level seed sustains (median of runs) | "
               f"{'; '.join(worse) or '–'} ms | {verdict(None if not worse else not higher)} |")
    p99s = [v for v in me["lag_p99_300"] if v]
    spread = max(p99s) / min(p99s) if p99s and min(p99s) > 0 else None
    out.append(f"| lag p99 stable over the runs at 300 (spread < 2×) | "
               f"{' / '.join(_f(v) for v in p99s) or '–'} ms ({_f(spread, 2)}×) | "
               f"{verdict(None if spread is None or len(p99s) < 2 else spread < 2)} |")
    out.append(f"| memory ≤ 64 KiB per live call (RSS growth, median 200–300) | {_f(me['kib'])} KiB "
               f"(seed {_f(sd['kib'])}) | {verdict(None if me['kib'] is None else me['kib'] <= 64)} |")
    r = ratio(me["max_sustained"], sd["max_sustained"])
    out.append(f"| sustained calls per core ≥ 1.5× seed's | {_f(me['max_sustained'])} vs "
               f"{_f(sd['max_sustained'])}: {_f(r, 2)}× | {verdict(None if r is None else r >= 1.5)} |")
    return "\n".join(out)


def summarize(rows: list[dict[str, Any]], systems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system in systems:
        mine = [r for r in rows if r["system"] == system and "lag_ms" in r]
        at = {n: [r for r in mine if r["calls"] == n] for n in {r["calls"] for r in mine}}
        # a level counts as sustained when every run of it was
        ok = [n for n, rs in at.items() if rs and all(r["sustained"] for r in rs)]
        out[system] = {
            "max_sustained": max(ok) if ok else None,
            "cpu_200": _median(at.get(200, []), "cpu_ms_per_call_s"),
            "cpu_300": _median(at.get(300, []), "cpu_ms_per_call_s"),
            "lag_p99_300": [(r.get("lag_ms") or {}).get("p99") for r in at.get(300, [])],
            "kib": _median(at.get(200, []) + at.get(300, []), "kib_per_call"),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--levels", default="100,200,300,400,500")
    p.add_argument("--repeat", type=int, default=3, help="runs at --repeat-level")
    p.add_argument("--repeat-level", type=int, default=300)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--earpiece", help="command template for earpiece ({port}, {repo}, {py})")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=TEMPLATE",
                   help="another system run from the repo ({port}, {repo}, {py}); added to --systems")
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--ramp", type=float, default=5.0)
    p.add_argument("--stop-lag-ms", type=float, default=5000.0)
    p.add_argument("--gw-cpu", default="0")
    p.add_argument("--load-cpu", default="1")
    p.add_argument("--order", choices=("level", "system"), default="level",
                   help="level: every system at a level before the next level (default); system: one system's "
                        "levels in a row")
    p.add_argument("--venv", default=os.environ.get("SEED_BENCH_VENV", str(REPO / "bench" / "out" / "seed-venv")))
    p.add_argument("--out", help="output directory (default bench/out/seed-<time>)")
    a = p.parse_args(argv)

    a.systems_map = dict(SYSTEMS)
    if a.earpiece:
        a.systems_map["earpiece"] = (a.earpiece, "repo", SYSTEMS["earpiece"][2])
    systems = [s for s in a.systems.split(",") if s]
    for spec in a.variant:
        name, _, template = spec.partition("=")
        a.systems_map[name] = (template, "repo", SYSTEMS["earpiece"][2])
        systems.append(name)
    unknown = [s for s in systems if s not in a.systems_map]
    if unknown:
        raise SystemExit(f"unknown systems: {unknown}")
    outdir = Path(a.out or REPO / "bench" / "out" / time.strftime("seed-%Y%m%d-%H%M%S"))
    (outdir / "json").mkdir(parents=True, exist_ok=True)
    py = setup_venv(Path(a.venv))
    print(f"seed-bench python: {py}; out: {outdir}", flush=True)

    steps = plan(a)
    order = ([(n, r, s) for n, r in steps for s in systems] if a.order == "level"
             else [(n, r, s) for s in systems for n, r in steps])
    rows: list[dict[str, Any]] = []
    down: set[str] = set()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    for calls, run, system in order:
        if system in down:
            continue
        row = run_one(system, calls, run, a, py, outdir)
        rows.append(row)
        lag = row.get("lag_ms") or {}
        print(f"{calls:4d} r{run} {system:10s} cpu {_f(row.get('cpu_ms_per_call_s'), 2)} ms/call-s "
              f"core {_f(row.get('gw_cpu_pct'))}% kib {_f(row.get('kib_per_call'))} "
              f"lag p50/p99/max {_f(lag.get('p50'))}/{_f(lag.get('p99'))}/{_f(lag.get('max'))} "
              f"loss {_f(row.get('loss_pct'), 2)}% {'ok' if row['sustained'] else 'NOT sustained'} "
              f"({row['elapsed_s']} s)", flush=True)
        if "lag_ms" not in row or fell_over(row, a.stop_lag_ms):
            down.add(system)
        result = {"command": " ".join(shlex.quote(x) for x in [sys.executable, *sys.argv]), "started": started,
                  "systems": systems, "commands": {s: a.systems_map[s][0] for s in systems},
                  "params": {"duration_s": a.duration, "ramp_s": a.ramp, "gw_cpu": a.gw_cpu,
                             "load_cpu": a.load_cpu, "levels": a.levels, "repeat": a.repeat,
                             "repeat_level": a.repeat_level, "order": a.order},
                  "rows": rows, "summary": summarize(rows, systems)}
        (outdir / "results.json").write_text(json.dumps(result, indent=1))
        (outdir / "results.md").write_text(markdown(result))
    print("\n" + (outdir / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
