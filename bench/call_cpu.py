"""CPU and scheduler work per call-second of the call pipeline: in-process, virtual time.

    .venv/bin/python bench/call_cpu.py                          # 100 calls x 20 s, best of 5
    .venv/bin/python bench/call_cpu.py --tree /tmp/other        # another checkout's actors (A/B)

N calls run through the real ``actors.call.run_call`` with the offline ``scripted``
provider (a commit every ``--commit-ms``, partials at its default pace between), each fed Twilio JSON messages at
Twilio's pace (one ``media`` per 20 ms, as ``bench/call_memory.py`` does), under
``trio.testing.MockClock(autojump_threshold=0)``: the same run every time, no sockets,
no wall-clock waits.  Measured per call-second of audio:

* CPU: this thread's CPU time (``time.thread_time``: time preempted by other processes
  is not counted, so a shared machine still gives comparable figures), best of
  ``--repeat`` runs;
* task steps: how often trio ran a task (a trio ``Instrument``'s ``after_task_step``):
  the scheduler work, exact and the same on every run;
* tasks: how many tasks were alive at the peak, per call (the load's own two per call
  included: its nursery's and the Twilio side's; trio's own tasks not);
* the cyclic collector: passes per generation and the CPU they took (``gc.callbacks``),
  with the served gateway's settings (everything before the calls frozen with
  ``gc.freeze()``, thresholds ``(--gc0, 10, 100)`` as ``gateway/cli.py`` sets them but
  for ``--gc0``: try another young-generation threshold).

What it leaves out: sockets, the WebSocket layers, the provider client (``bench/send_path.py``
and the seed-bench harness measure those).  ``--tree`` runs the same load against another
checkout's ``actors``/``providers`` (e.g. ``git archive <commit> | tar -x -C /tmp/x``):
the load itself (the Twilio side, the scripted provider) is that tree's too, so compare
trees whose ``providers/scripted`` and ``providers/twilio`` are alike.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per call (default 20)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--commit-ms", type=int, default=5000)
    parser.add_argument("--gc0", type=int, default=700, help="young-generation threshold (served: 700)")
    parser.add_argument("--tree", help="a checkout whose actors/providers to run (default: this one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    root = Path(args.tree).resolve() if args.tree else Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    here = str(Path(__file__).resolve().parent)
    sys.path.insert(1, here)

    import trio
    import trio.testing

    from actors.call import run_call
    from providers.scripted import ScriptedProvider
    from call_memory import NullSink, _play  # the same Twilio side as the memory bench

    class Steps(trio.abc.Instrument):
        def __init__(self) -> None:
            self.steps = 0
            self.live = 0
            self.peak = 0
            self.base = 0

        def after_task_step(self, task: Any) -> None:
            self.steps += 1

        def task_spawned(self, task: Any) -> None:
            self.live += 1
            self.peak = max(self.peak, self.live)

        def task_exited(self, task: Any) -> None:
            self.live -= 1

    async def load(calls: int, seconds: float, instrument: Steps) -> list[Any]:
        outcomes: list[Any] = []
        instrument.peak = instrument.base = instrument.live  # trio's own tasks and this one

        async def one_call(n: int) -> None:
            send, receive = trio.open_memory_channel[str](0)
            provider = ScriptedProvider(commit_ms=args.commit_ms, record=False)
            async with trio.open_nursery() as nursery:
                # starts spread over one second, so calls are not in lock step
                nursery.start_soon(_play, send, n, 1.0 + (n % 50) * 0.02, seconds)
                outcomes.append(await run_call(receive, provider, [NullSink()]))

        async with trio.open_nursery() as nursery:
            for n in range(calls):
                nursery.start_soon(one_call, n)
        return outcomes

    passes = [0, 0, 0]
    gc_time = [0.0]
    started = [0.0]

    def collected(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.thread_time()
        else:
            passes[info["generation"]] += 1
            gc_time[0] += time.thread_time() - started[0]

    thresholds = gc.get_threshold()
    call_seconds = args.calls * args.seconds
    best = float("inf")
    best_gc = float("inf")
    steps = peak = 0
    for _ in range(args.repeat):
        gc.collect()
        gc.freeze()
        gc.set_threshold(args.gc0, 10, 100)
        passes[:] = [0, 0, 0]
        gc_time[0] = 0.0
        gc.callbacks.append(collected)
        instrument = Steps()
        t0 = time.thread_time()
        try:
            outcomes = trio.run(load, args.calls, args.seconds, instrument,
                                clock=trio.testing.MockClock(autojump_threshold=0), instruments=[instrument])
        finally:
            spent = time.thread_time() - t0
            gc.callbacks.remove(collected)
            gc.unfreeze()
            gc.set_threshold(*thresholds)
        best_gc = min(best_gc, gc_time[0])
        bad = [o for o in outcomes if o.reason != "stop" or o.statistics.dropped_ms]
        if len(outcomes) != args.calls or bad:
            raise SystemExit(f"{len(bad)} of {len(outcomes)} calls did not end cleanly: {bad[:1]}")
        best = min(best, spent)
        steps, peak = instrument.steps, instrument.peak - instrument.base
    print(f"tree {root}: {args.calls} calls x {args.seconds:g} s, best of {args.repeat}, gc thresholds "
          f"({args.gc0}, 10, 100)")
    print("| CPU ms / call-s (best) | task steps / call-s | tasks / call (peak, incl. the load's) "
          "| gc passes gen0/1/2 (last run) | gc CPU ms / call-s (best) |")
    print("|---:|---:|---:|---|---:|")
    print(f"| {best * 1000 / call_seconds:.3f} | {steps / call_seconds:.1f} | {peak / args.calls:.2f} "
          f"| {passes[0]}/{passes[1]}/{passes[2]} | {best_gc * 1000 / call_seconds:.4f} |")


if __name__ == "__main__":
    main()
