"""bench/call_cpu.py measures what it says: calls that end cleanly, their tasks, the collector."""

from __future__ import annotations

import gc

from bench.call_cpu import main


def test_call_cpu_reports_five_tasks_per_call_and_the_collector_passes(capsys):
    thresholds = gc.get_threshold()
    main(["--calls", "3", "--seconds", "1", "--repeat", "1", "--gc0", "700"])
    out = capsys.readouterr().out
    assert "3 calls x 1 s, best of 1, gc thresholds (700, 10, 100)" in out
    row = out.strip().splitlines()[-1].strip("|").split("|")
    cpu, steps, tasks, passes, gc_cpu = (cell.strip() for cell in row)
    assert float(cpu) > 0 and float(steps) > 50  # 50 frames a second each take a task step at least
    # the call's five actors, plus the load's two tasks per call (its nursery's and the Twilio side)
    assert tasks == "7.00"
    assert len(passes.split("/")) == 3 and float(gc_cpu) >= 0
    assert gc.get_threshold() == thresholds  # the process's collector is left as it was
