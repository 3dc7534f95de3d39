"""CPU time and RSS of a process tree, from /proc (Linux)."""

from __future__ import annotations

import os

__all__ = ["tree_pids", "cpu_seconds", "cpu_split", "rss_kib", "core_busy", "TICK"]

TICK = os.sysconf("SC_CLK_TCK")


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its live descendants (threads are inside /proc/<pid>/stat already)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2:].split()  # fields from 3 (state) on


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its descendants, plus children they already reaped."""
    total = 0
    for p in tree_pids(pid):
        fields = _stat_fields(p)
        if fields is None:
            continue
        # fields[11..14] = utime, stime, cutime, cstime (stat fields 14..17)
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / TICK


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) seconds of ``pid``'s tree, as ``cpu_seconds`` counts them."""
    user = system = 0
    for p in tree_pids(pid):
        fields = _stat_fields(p)
        if fields is None:
            continue
        user += int(fields[11]) + int(fields[13])
        system += int(fields[12]) + int(fields[14])
    return user / TICK, system / TICK


def rss_kib(pid: int) -> int:
    """Resident set of ``pid`` and its descendants, KiB (VmRSS)."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def core_busy(core: int) -> tuple[float, float]:
    """(busy, total) seconds of one CPU since boot, from /proc/stat (busy = all but
    idle and iowait): the difference of two samples says how loaded the core was."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                values = [int(v) for v in line.split()[1:]]
                total = sum(values[:8])  # guest time is already inside user
                return (total - values[3] - values[4]) / TICK, total / TICK
    raise ValueError(f"no cpu{core} in /proc/stat")
