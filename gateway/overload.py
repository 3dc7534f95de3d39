"""Load shedding: a gateway at the end of its core takes no new calls.

One gateway process is one trio thread on one core.  Past what that core can carry,
every live call falls behind together: its audio waits in its replay buffer and its
words reach the next layer late.  Admitting one more call would make all of them
later, so twice a second the guard looks at two things:

* how busy the event loop's thread is (its CPU time over the last look's wall time):
  over ``max_busy`` (0.9 of a core) the gateway is at capacity before any call is late
  — the early signal, so that a burst of new calls is refused in time;
* with ``--max-lag``, each live call's backlog too: audio Twilio delivered that no
  provider session has accepted yet (``audio_ms - forwarded_until_ms``).  While the
  median call is more than ``max_lag`` seconds behind, the gateway is not keeping up,
  whatever the cause — a core shared with other processes shows here, not in our CPU
  time — but so does a vendor-wide provider outage, whose calls the replay buffer
  would carry through: so it is off by default.  The median, not the worst call, so
  that one call's provider reconnect sheds nothing.

While either holds, the registry is ``overloaded``: the voice webhook answers
``<Reject reason="busy"/>``, ``/readyz`` 503 and a stream upgrade 503, exactly as at
``--max-calls``; once both are clear with a margin (busy under ``max_busy - 0.1``,
median under half of ``max_lag``), calls are taken again.  Live calls are never
touched.  A load balancer that watches ``/readyz`` sends the next call elsewhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from statistics import median_low

import trio

from .calls import CallRegistry

__all__ = ["OverloadGuard", "TICK"]

log = logging.getLogger("earpiece.gateway")

TICK = 0.5  # seconds between two looks
BUSY_MARGIN = 0.1  # busy must fall this far under max_busy before calls are taken again


class OverloadGuard:
    """``run`` forever.  After each look: ``busy`` (0..1, the loop thread's share of a
    core since the previous look) and ``behind_ms`` (the median live call's backlog).
    ``cpu_time``: the loop thread's CPU clock (tests pass their own)."""

    def __init__(self, registry: CallRegistry, max_lag: float | None, max_busy: float | None,
                 cpu_time: Callable[[], float] = time.thread_time) -> None:
        self.registry = registry
        self.max_lag_ms = max_lag * 1000 if max_lag is not None else None
        self.max_busy = max_busy
        self.busy = 0.0
        self.behind_ms = 0
        self._cpu_time = cpu_time
        self._last: tuple[float, float] | None = None  # (trio time, cpu time) of the last look

    def look(self) -> None:
        now, cpu = trio.current_time(), self._cpu_time()
        if self._last is not None and now > self._last[0]:
            self.busy = (cpu - self._last[1]) / (now - self._last[0])
        self._last = (now, cpu)
        if self.max_lag_ms is not None:  # a look at every call only when it is asked for
            backlogs = [stats.audio_ms - stats.forwarded_until_ms
                        for stats in (record.stats for record in self.registry.calls.values()) if stats is not None]
            self.behind_ms = median_low(backlogs) if backlogs else 0
        if self.max_busy is None and self.max_lag_ms is None:
            return  # measuring only (for /metrics): whether to refuse calls is not ours to say
        busy = self.max_busy is not None and self.busy > self.max_busy
        behind = self.max_lag_ms is not None and self.behind_ms > self.max_lag_ms
        registry = self.registry
        if not registry.overloaded and (busy or behind):
            registry.overloaded = True
            log.warning("overloaded (event loop %.0f%% busy, median call %d ms behind real time): refusing "
                        "new calls, %d live", self.busy * 100, self.behind_ms, len(registry.calls))
        elif registry.overloaded and self._clear():
            registry.overloaded = False
            log.info("no longer overloaded (event loop %.0f%% busy, median call %d ms behind): taking calls again",
                     self.busy * 100, self.behind_ms)

    def _clear(self) -> bool:
        calm = self.max_busy is None or self.busy < self.max_busy - BUSY_MARGIN
        caught_up = self.max_lag_ms is None or self.behind_ms < self.max_lag_ms / 2
        return calm and caught_up

    async def run(self) -> None:
        while True:
            self.look()
            await trio.sleep(TICK)
