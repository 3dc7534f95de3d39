"""SinkHub: every call's events to every sink, without ever making a call wait.

```
TranscriptEmitter ──emit (no checkpoint)──▶ SinkHub ─┬─ lane: bounded queue ─▶ task ─▶ writer.write(batch)
                                                      ├─ lane ...
                                                      └─ lane ...
```

One lane per sink: a bounded queue and one task.  ``emit`` applies each sink's ``types=``
filter and appends to its queue; it never awaits anything, so a slow, dead or restarting
sink cannot delay a call, another call, or another sink.  A full queue drops partial
transcripts first (the oldest queued partial, or the new one when none is queued), and
only then the oldest event; every drop is counted per sink and reported in one log line
per ``log_interval`` with the counts.

A lane's task takes everything queued (up to ``batch_limit``) and calls
``writer.write(batch)``.  ``SinkDeliveryError`` loses that batch (or the part it names)
and counts it as failed; any other exception is logged and counted the same way, never
fatal to the hub or to a call.  A writer that is also an async context manager
(``__aenter__``/``__aexit__``, e.g. one holding a connection pool) is entered by its own
lane task before the first write and exited after ``aclose``; that is an optional
extension of ``SinkWriter``.

Shutdown (leaving ``open_sink_hub``): each lane gets ``flush_timeout`` seconds to deliver
what is queued; whatever is left is counted as dropped and logged.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import attrs
import trio

from .base import Event, SinkDeliveryError, SinkSpec, SinkWriter

__all__ = ["SinkHub", "SinkStatistics", "open_sink_hub", "QUEUE_SIZE", "BATCH_LIMIT", "FLUSH_TIMEOUT"]

log = logging.getLogger("earpiece.sinks")

#: events one sink may hold while it cannot keep up (a few minutes of 100 calls' commits)
QUEUE_SIZE = 10_000
#: most events handed to one ``write``
BATCH_LIMIT = 500
#: seconds each sink gets to deliver its queue at shutdown
FLUSH_TIMEOUT = 5.0
#: seconds between two log lines about one sink's drops or failures
LOG_INTERVAL = 10.0


@attrs.frozen
class SinkStatistics:
    """One sink's counters since the hub started (events, not batches)."""

    name: str
    #: waiting in the queue now
    queued: int
    #: handed to the writer, which returned without error
    delivered: int
    #: partial transcripts dropped because the queue was full (or left at shutdown)
    dropped_partials: int
    #: other events dropped because the queue was full (or left at shutdown)
    dropped_other: int
    #: lost by the writer: ``SinkDeliveryError`` or an unexpected exception
    failed: int

    @property
    def dropped(self) -> int:
        """Everything this sink lost: what ``earpiece_sink_events_dropped_total`` counts."""
        return self.dropped_partials + self.dropped_other + self.failed


def _is_partial(event: Event) -> bool:
    return event.get("type") == "transcript" and event.get("kind") == "partial"


class _Lane:
    """One sink's queue and counters.  The queue is two deques (partials, the rest)
    tagged with an arrival number, so dropping the oldest partial is O(1) and a batch
    is still taken in arrival order."""

    def __init__(self, spec: SinkSpec | None, writer: SinkWriter, size: int, log_interval: float) -> None:
        self.spec = spec
        self.writer = writer
        self.name = writer.name
        self.size = size
        self._partials: deque[tuple[int, Event]] = deque()
        self._others: deque[tuple[int, Event]] = deque()
        self._arrivals = 0
        self.wakeup = trio.Event()
        self.closing = False
        self.scope = trio.CancelScope(shield=True)
        self.delivered = 0
        self.dropped_partials = 0
        self.dropped_other = 0
        self.failed = 0
        self._log_interval = log_interval
        self._last_report = -float("inf")
        self._reported = (0, 0, 0)
        self._last_failure_log = -float("inf")

    def __len__(self) -> int:
        return len(self._partials) + len(self._others)

    def put(self, event: Event) -> None:
        """Queue one event, dropping by the policy above when full.  Never blocks."""
        partial = _is_partial(event)
        if len(self) >= self.size:
            if self._partials:
                self._partials.popleft()
                self.dropped_partials += 1
            elif partial:
                self.dropped_partials += 1
                self.report()
                return
            else:
                self._others.popleft()
                self.dropped_other += 1
            self.report()
        self._arrivals += 1
        (self._partials if partial else self._others).append((self._arrivals, event))
        self.wakeup.set()

    def take(self, limit: int) -> list[Event]:
        """The oldest ``limit`` queued events, in arrival order."""
        batch: list[Event] = []
        partials, others = self._partials, self._others
        while len(batch) < limit and (partials or others):
            if not others or (partials and partials[0][0] < others[0][0]):
                batch.append(partials.popleft()[1])
            else:
                batch.append(others.popleft()[1])
        return batch

    def drop_rest(self) -> int:
        left_partials, left_others = len(self._partials), len(self._others)
        self._partials.clear()
        self._others.clear()
        self.dropped_partials += left_partials
        self.dropped_other += left_others
        return left_partials + left_others

    def report(self, force: bool = False) -> None:
        """One log line per interval with what was lost since the last line."""
        now = trio.current_time()
        if not force and now - self._last_report < self._log_interval:
            return
        counts = (self.dropped_partials, self.dropped_other, self.failed)
        new = [c - r for c, r in zip(counts, self._reported, strict=True)]
        if not any(new):
            return
        self._last_report = now
        self._reported = counts
        log.warning("sink %s lost events: %d partials and %d other events dropped (queue full at %d), "
                    "%d failed to deliver; totals %d/%d/%d", self.name, new[0], new[1], self.size, new[2], *counts)

    def failure_worth_logging(self) -> bool:
        """At most one detailed failure line (reason, traceback) per interval; the
        counts still reach the log through ``report``."""
        now = trio.current_time()
        if now - self._last_failure_log < self._log_interval:
            return False
        self._last_failure_log = now
        return True

    def statistics(self) -> SinkStatistics:
        return SinkStatistics(name=self.name, queued=len(self), delivered=self.delivered,
                              dropped_partials=self.dropped_partials, dropped_other=self.dropped_other,
                              failed=self.failed)


class SinkHub:
    """The one ``Sink`` every call emits to (satisfies ``actors.ports.Sink``).

    ``emit`` never blocks and never raises for a sink's sake.  Lanes run in
    ``open_sink_hub``'s nursery; ``statistics()`` is a frozen snapshot per sink.
    """

    def __init__(self, writers: Sequence[tuple[SinkSpec | None, SinkWriter]], *, queue_size: int = QUEUE_SIZE,
                 batch_limit: int = BATCH_LIMIT, flush_timeout: float = FLUSH_TIMEOUT,
                 log_interval: float = LOG_INTERVAL) -> None:
        if queue_size < 1 or batch_limit < 1 or flush_timeout < 0:
            raise ValueError("queue_size and batch_limit must be positive, flush_timeout not negative")
        self._lanes = tuple(_Lane(spec, writer, queue_size, log_interval) for spec, writer in writers)
        self._batch_limit = batch_limit
        self._flush_timeout = flush_timeout
        self._closed = False
        self._closing = trio.Event()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(lane.name for lane in self._lanes)

    async def emit(self, event: Event) -> None:
        """Queue ``event`` for every sink whose ``types=`` wants it; no checkpoint."""
        for lane in self._lanes:
            if lane.spec is not None and not lane.spec.wants(event):
                continue
            if self._closed:  # a straggler after shutdown began: said, not silently lost
                lane.dropped_partials += _is_partial(event)
                lane.dropped_other += not _is_partial(event)
                lane.report()
                continue
            lane.put(event)

    def statistics(self) -> tuple[SinkStatistics, ...]:
        return tuple(lane.statistics() for lane in self._lanes)

    def dropped_by_sink(self) -> dict[str, int]:
        """Events each sink will never deliver (dropped from a full queue, or given up
        by its writer), by sink name: ``earpiece_sink_events_dropped_total{sink}``."""
        counts: dict[str, int] = {}
        for stats in self.statistics():
            counts[stats.name] = counts.get(stats.name, 0) + stats.dropped
        return counts

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every lane until ``close()`` (or cancellation, which closes too), then
        give each ``flush_timeout`` to deliver what it holds."""
        async with trio.open_nursery() as nursery:
            for lane in self._lanes:
                nursery.start_soon(self._run_lane, lane, name=f"sink {lane.name}")
            task_status.started()
            try:
                await self._closing.wait()
            finally:
                self.close()

    def close(self) -> None:
        """Stop taking events; each lane delivers what it holds within ``flush_timeout``
        (counted as dropped beyond it) and closes its writer."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        deadline = trio.current_time() + self._flush_timeout
        for lane in self._lanes:
            lane.closing = True
            lane.scope.deadline = deadline
            lane.wakeup.set()

    async def _run_lane(self, lane: _Lane) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                if isinstance(lane.writer, contextlib.AbstractAsyncContextManager):
                    await stack.enter_async_context(lane.writer)
                # Shielded until close() gives it a deadline: a cancelled server still
                # hands its sinks what the calls produced, within the bound.
                with lane.scope:
                    await self._deliver(lane)
                with trio.CancelScope(shield=True, deadline=trio.current_time() + self._flush_timeout):
                    await lane.writer.aclose()
        except Exception:
            log.exception("sink %s failed to start or close", lane.name)
        finally:
            left = lane.drop_rest()
            if left:
                log.warning("sink %s: %d events still queued after %.1f s at shutdown were dropped",
                            lane.name, left, self._flush_timeout)
            lane.report(force=True)

    async def _deliver(self, lane: _Lane) -> None:
        while True:
            if len(lane):
                await self._write(lane, lane.take(self._batch_limit))
            elif lane.closing:
                return
            else:
                await lane.wakeup.wait()
                lane.wakeup = trio.Event()

    async def _write(self, lane: _Lane, batch: list[Event]) -> None:
        try:
            await lane.writer.write(batch)
        except SinkDeliveryError as exc:
            lost = len(batch) if exc.lost is None else min(exc.lost, len(batch))
            lane.failed += lost
            lane.delivered += len(batch) - lost
            if lane.failure_worth_logging():
                log.warning("sink %s gave up on %d of %d events: %s", lane.name, lost, len(batch), exc)
            lane.report()
        except trio.Cancelled:
            # The flush deadline passed mid-write: the batch is lost, and said so.
            lane.failed += len(batch)
            raise
        except Exception:
            lane.failed += len(batch)
            if lane.failure_worth_logging():
                log.exception("sink %s failed on a batch of %d events (counted as failed; the sink goes on)",
                              lane.name, len(batch))
            lane.report()
        else:
            lane.delivered += len(batch)


@contextlib.asynccontextmanager
async def open_sink_hub(writers: Sequence[tuple[SinkSpec | None, SinkWriter]], **options: Any
                        ) -> AsyncIterator[SinkHub]:
    """A running ``SinkHub`` over ``writers``; leaving flushes each sink (bounded) and
    closes its writer."""
    hub = SinkHub(writers, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        try:
            yield hub
        finally:
            hub.close()
