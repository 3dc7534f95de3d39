"""DecodeQueue: the process-wide line of decodes waiting for one of the model's workers.

Every call's session asks for a slot before it decodes (``slot``) and gives it back
after.  At most ``workers`` decodes run at once; the others wait here, in order of
arrival, so calls take turns (each session waits for at most one decode at a time, so
a call that was just served goes to the back of the line).  Two classes:

    commit   an utterance ended: its final transcript.  Never refused, never skipped.
    partial  a live caption of the utterance in progress.  Served only when no commit
             waits, unless it has waited ``promote_after`` seconds (then it takes its
             turn with the commits, so a long utterance still gets an answer now and
             then under load).  Refused at once (``DecodeRefused``) when
             ``max_waiting_partials`` partials already wait.

Under load partials thin out first: the session counts every partial it wanted and
did not get (refused here, or withdrawn because its utterance ended while it waited).
Time comes from trio; the queue holds no trio object between waits, so one queue
serves successive ``trio.run``s (tests, the demo).  Single trio thread, no locks.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

__all__ = ["DecodeKind", "DecodeQueue", "DecodeQueueStatistics", "DecodeRefused"]


class DecodeKind(enum.Enum):
    COMMIT = "commit"
    PARTIAL = "partial"


class DecodeRefused(Exception):
    """The queue is full of partial decodes: this one is skipped."""


@attrs.frozen
class DecodeQueueStatistics:
    """A snapshot: slots, what runs and waits, and totals since the process started."""

    workers: int
    running: int
    waiting_commits: int
    waiting_partials: int
    commits_run: int
    partials_run: int
    partials_refused: int
    partials_withdrawn: int
    partials_skipped: int
    max_waiting: int


@attrs.define(eq=False)
class _Waiter:
    kind: DecodeKind
    since: float
    event: trio.Event
    granted: bool = False


class DecodeQueue:
    """See the module docstring.  ``workers`` >= 1; ``max_waiting_partials`` >= 1."""

    def __init__(self, workers: int, *, max_waiting_partials: int = 64, promote_after: float = 3.0) -> None:
        if workers < 1 or max_waiting_partials < 1:
            raise ValueError("a decode queue needs at least one worker and room for one partial")
        self.workers = workers
        self.max_waiting_partials = max_waiting_partials
        self.promote_after = promote_after
        self._running = 0
        self._waiting: list[_Waiter] = []
        self._commits_run = 0
        self._partials_run = 0
        self._partials_refused = 0
        self._partials_withdrawn = 0
        self._partials_skipped = 0
        self._max_waiting = 0

    def partial_skipped(self) -> None:
        """A session skipped a partial it wanted, for any reason (refused here, withdrawn,
        or wanted again before it ran): the process-wide count."""
        self._partials_skipped += 1

    @asynccontextmanager
    async def slot(self, kind: DecodeKind) -> AsyncIterator[None]:
        """Wait for a worker slot (in line, see above) and hold it for the body.
        Raises ``DecodeRefused`` for a partial when the line is full of partials.
        Cancelling the wait withdraws from the line (a partial counts as withdrawn)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._running < self.workers and not self._waiting:
            self._running += 1
        else:
            await self._wait_in_line(kind)
        if kind is DecodeKind.COMMIT:
            self._commits_run += 1
        else:
            self._partials_run += 1
        try:
            yield
        finally:
            self._release()

    async def _wait_in_line(self, kind: DecodeKind) -> None:
        if kind is DecodeKind.PARTIAL and self._count(DecodeKind.PARTIAL) >= self.max_waiting_partials:
            self._partials_refused += 1
            await trio.lowlevel.checkpoint()
            raise DecodeRefused
        waiter = _Waiter(kind, trio.current_time(), trio.Event())
        self._waiting.append(waiter)
        self._max_waiting = max(self._max_waiting, len(self._waiting))
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self._release()  # granted as it was cancelled: pass the slot on
            else:
                self._waiting.remove(waiter)
                if kind is DecodeKind.PARTIAL:
                    self._partials_withdrawn += 1
            raise

    def _count(self, kind: DecodeKind) -> int:
        return sum(1 for w in self._waiting if w.kind is kind)

    def _release(self) -> None:
        self._running -= 1
        if not self._waiting:
            return
        now = trio.current_time()
        chosen = next((w for w in self._waiting if w.kind is DecodeKind.COMMIT
                       or now - w.since >= self.promote_after), self._waiting[0])
        self._waiting.remove(chosen)
        chosen.granted = True
        self._running += 1
        chosen.event.set()

    def statistics(self) -> DecodeQueueStatistics:
        return DecodeQueueStatistics(
            workers=self.workers, running=self._running,
            waiting_commits=self._count(DecodeKind.COMMIT), waiting_partials=self._count(DecodeKind.PARTIAL),
            commits_run=self._commits_run, partials_run=self._partials_run,
            partials_refused=self._partials_refused, partials_withdrawn=self._partials_withdrawn,
            partials_skipped=self._partials_skipped, max_waiting=self._max_waiting)
