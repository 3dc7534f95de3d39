"""Live calls of this gateway process: admission, readiness, drain on shutdown."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from actors.messages import StreamStarted
from actors.stats import CallStats

__all__ = ["CallRecord", "CallRegistry", "wait_idle", "DRAIN_SETTLE"]

#: seconds calls get for their final flush once they were told to end (drain_timeout is 2 s)
DRAIN_SETTLE = 10.0


@attrs.define
class CallRecord:
    id: int
    reader_scope: trio.CancelScope
    started_at: float
    provider: str
    stream: StreamStarted | None = None
    stats: CallStats | None = None

    def summary(self) -> dict[str, Any]:
        stats = self.stats.statistics() if self.stats else None
        return {
            "call_sid": self.stream.call_sid if self.stream else None,
            "stream_sid": self.stream.stream_sid if self.stream else None,
            "state": "streaming" if self.stream else "connecting",
            "provider": self.provider,
            "audio_seconds": (stats.audio_ms / 1000) if stats else 0.0,
            "dropped_ms": stats.dropped_ms if stats else 0,
        }


class CallRegistry:
    """Counts admitted streams.  ``admit`` refuses past ``max_calls``, while draining
    and while ``overloaded`` (set by ``gateway.overload.OverloadGuard``).

    Shutdown is two steps: ``drain`` first only stops admitting (``ready`` is False at
    once, so ``/readyz`` answers 503) and lets live calls go on for up to ``grace``
    seconds, or until ``hurry`` returns (a second signal); then ``end_calls`` stops
    reading from every call still live (each ends with reason ``shutdown`` after its
    final flush) and ``drain`` waits for them up to ``settle`` seconds more."""

    def __init__(self, max_calls: int | None = None) -> None:
        self.max_calls = max_calls
        self.draining = False
        self.overloaded = False
        self.calls: dict[int, CallRecord] = {}
        self._ids = itertools.count(1)
        self._idle = trio.Event()
        self._idle.set()
        self.total_calls = 0
        self.rejected_calls = 0

    @property
    def full(self) -> bool:
        return self.max_calls is not None and len(self.calls) >= self.max_calls

    @property
    def ready(self) -> bool:
        return not self.draining and not self.full and not self.overloaded

    def why_not_ready(self) -> str:
        """Why ``admit`` refuses, for log lines and answers ("" when ready)."""
        if self.draining:
            return "draining"
        if self.full:
            return f"full ({len(self.calls)}/{self.max_calls} calls)"
        if self.overloaded:
            return f"overloaded ({len(self.calls)} calls; at the end of its CPU)"
        return ""

    def refusal_reason(self) -> str:
        """``why_not_ready`` as a metrics label: draining | max_calls | overload ("" when ready)."""
        if self.draining:
            return "draining"
        if self.full:
            return "max_calls"
        if self.overloaded:
            return "overload"
        return ""

    def admit(self, provider: str) -> CallRecord | None:
        if not self.ready:
            self.rejected_calls += 1
            return None
        record = CallRecord(next(self._ids), trio.CancelScope(), trio.current_time(), provider)
        self.calls[record.id] = record
        self.total_calls += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        return record

    def release(self, record: CallRecord) -> None:
        self.calls.pop(record.id, None)
        if not self.calls:
            self._idle.set()

    def end_calls(self) -> None:
        """Stop reading from every live call: each drains like a hang-up and ends with
        reason ``shutdown`` once its final transcript is out."""
        for record in list(self.calls.values()):
            record.reader_scope.cancel()

    async def drain(self, grace: float, hurry: Callable[[], Awaitable[None]] | None = None,
                    settle: float = DRAIN_SETTLE) -> None:
        """Stop admitting; wait for live calls to end by themselves for up to ``grace``
        seconds (or until ``hurry`` returns); then ``end_calls`` and wait up to
        ``settle`` seconds for their final flush."""
        self.draining = True
        async with trio.open_nursery() as waiting:
            if hurry is not None:
                async def hurried() -> None:
                    await hurry()
                    waiting.cancel_scope.cancel()

                waiting.start_soon(hurried)
            with trio.move_on_after(grace):
                await self._idle.wait()
            waiting.cancel_scope.cancel()
        self.end_calls()
        with trio.move_on_after(settle):
            await self._idle.wait()


async def wait_idle(registry: CallRegistry) -> None:
    """Return once no call is live (used by ``earpiece demo`` and tests)."""
    while registry.calls:
        await registry._idle.wait()
