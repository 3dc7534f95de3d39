"""Load shedding: while live calls fall behind real time, the gateway takes no new calls.

One gateway process is one trio thread on one core.  Past what that core can carry,
every live call falls behind together: its audio waits in its replay buffer and its
words reach the next layer late.  Admitting one more call would make all of them
later, so the guard looks at each live call's backlog — audio Twilio delivered that no
provider session has accepted yet (``audio_ms - forwarded_until_ms``) — twice a second.
While the median call is more than ``max_lag`` seconds behind, the registry is
``overloaded``: the voice webhook answers ``<Reject reason="busy"/>``, ``/readyz`` 503
and a stream upgrade 503, exactly as at ``--max-calls``; once the median is back under
half of that, calls are taken again.  Live calls are never touched.  The median, not
the worst call, so that one call's provider reconnect sheds nothing; a vendor-wide
outage does (no new call could be transcribed either) until its calls catch up or fail
over.  A load balancer that watches ``/readyz`` sends the next call elsewhere.
"""

from __future__ import annotations

import logging
from statistics import median_low

import trio

from .calls import CallRegistry

__all__ = ["LagGuard", "TICK"]

log = logging.getLogger("earpiece.gateway")

TICK = 0.5  # seconds between two looks at the live calls


class LagGuard:
    """``run`` forever; ``behind_ms`` is the median live call's backlog at the last look."""

    def __init__(self, registry: CallRegistry, max_lag: float) -> None:
        self.registry = registry
        self.max_lag_ms = max_lag * 1000
        self.behind_ms = 0

    def look(self) -> None:
        registry = self.registry
        backlogs = [stats.audio_ms - stats.forwarded_until_ms
                    for stats in (record.stats for record in registry.calls.values()) if stats is not None]
        self.behind_ms = median_low(backlogs) if backlogs else 0
        if not registry.overloaded and self.behind_ms > self.max_lag_ms:
            registry.overloaded = True
            log.warning("overloaded: the median call is %d ms behind real time; refusing new calls (%d live)",
                        self.behind_ms, len(registry.calls))
        elif registry.overloaded and self.behind_ms < self.max_lag_ms / 2:
            registry.overloaded = False
            log.info("caught up (the median call is %d ms behind); taking calls again", self.behind_ms)

    async def run(self) -> None:
        while True:
            await trio.sleep(TICK)
            self.look()
