"""Load shedding: while the event loop runs late, the gateway takes no new calls.

One gateway process is one trio thread on one core.  Past what that core can carry,
every live call falls behind together (its audio waits in its replay buffer, its words
arrive late).  Admitting one more call then harms all of them, so the guard watches
how late a 100 ms timer fires: while the smoothed lateness is over ``max_lag`` seconds
the registry is ``overloaded`` — the voice webhook answers ``<Reject reason="busy"/>``,
``/readyz`` 503 and a stream upgrade 503, exactly as when ``--max-calls`` is reached —
and once it is back under half of that, calls are taken again.  Live calls are never
touched.  A load balancer that watches ``/readyz`` sends the next call elsewhere.
"""

from __future__ import annotations

import logging

import trio

from .calls import CallRegistry

__all__ = ["LoopLagGuard", "TICK"]

log = logging.getLogger("earpiece.gateway")

TICK = 0.1  # seconds between two looks at the loop
SMOOTHING = 0.3  # weight of the newest lateness in the running average


class LoopLagGuard:
    """``run`` forever; ``late`` is the smoothed lateness (seconds) of the last ticks."""

    def __init__(self, registry: CallRegistry, max_lag: float) -> None:
        self.registry = registry
        self.max_lag = max_lag
        self.late = 0.0

    async def run(self) -> None:
        registry = self.registry
        while True:
            before = trio.current_time()
            await trio.sleep(TICK)
            self.late += SMOOTHING * (trio.current_time() - before - TICK - self.late)
            if not registry.overloaded and self.late > self.max_lag:
                registry.overloaded = True
                log.warning("overloaded: the event loop runs %.0f ms late; refusing new calls (%d live)",
                            self.late * 1000, len(registry.calls))
            elif registry.overloaded and self.late < self.max_lag / 2:
                registry.overloaded = False
                log.info("no longer overloaded (event loop %.0f ms late); taking calls again", self.late * 1000)
