"""Test-only bridge from a call's ``Sink.emit`` to a ``SinkWriter`` (one event per batch).

Stand-in until the sink runtime (own task, bounded queue, drop policy) is on main; the
tests that use it should then run the writers through the runtime instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.sinks.base import SinkDeliveryError, SinkWriter


class WriterSink:
    """``emit`` → ``writer.write([event])``; a ``SinkDeliveryError`` is recorded (as the
    runtime counts it as dropped) instead of ending the call.  ``on_written`` sees each
    event once it is delivered."""

    def __init__(self, writer: SinkWriter, on_written: Callable[[Mapping[str, Any]], None] | None = None) -> None:
        self.writer = writer
        self.delivered = 0
        self.failures: list[SinkDeliveryError] = []
        self._on_written = on_written

    async def emit(self, event: Mapping[str, Any]) -> None:
        try:
            await self.writer.write([event])
        except SinkDeliveryError as exc:
            self.failures.append(exc)
            return
        self.delivered += 1
        if self._on_written is not None:
            self._on_written(event)

    async def aclose(self) -> None:
        await self.writer.aclose()
