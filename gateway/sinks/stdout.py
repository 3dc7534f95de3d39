"""``stdout``: the terminal view of a live call."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from .base import SinkSpec, SinkSpecError

__all__ = ["StdoutSink", "format_line", "from_spec"]


def format_line(event: Mapping[str, Any]) -> str | None:
    kind = event.get("type")
    if kind == "transcript":
        label = "PARTIAL" if event["kind"] == "partial" else "COMMITTED"
        return f"{label}: {event['text']}"
    call = f"[{event.get('call_sid', '')}]"
    if kind == "call_started":
        return f"{call} Twilio stream started"
    if kind == "call_ended":
        line = f"{call} Twilio stream stopped"
        if event.get("reason") != "stop":
            line += f" ({event.get('reason')}: {event.get('detail', '')})"
        if event.get("dropped_ms"):
            line += f" — {event['dropped_ms']} ms of audio never reached a provider"
        return line
    if kind == "dtmf":
        return f"{call} DTMF {event['digit']}"
    if kind in ("provider_error", "provider_reconnected", "provider_failover"):
        return f"{call} {kind.replace('_', ' ')}: {event.get('provider')}: {event.get('detail', '')}"
    return None


class StdoutSink:
    """Prints the seed's view: ``PARTIAL:``/``COMMITTED:`` lines between
    ``[CA…] Twilio stream started`` and ``[CA…] Twilio stream stopped``.

    A ``SinkWriter`` (``write`` a batch, flushed once); ``emit`` prints one event, for
    use without a hub."""

    name = "stdout"

    def __init__(self, stream: TextIO | None = None, partials: bool = True) -> None:
        self._stream = stream
        self._partials = partials

    def _lines(self, events: Sequence[Mapping[str, Any]]) -> str:
        lines = []
        for event in events:
            if not self._partials and event.get("kind") == "partial":
                continue
            line = format_line(event)
            if line is not None:
                lines.append(line + "\n")
        return "".join(lines)

    async def write(self, events: Sequence[Mapping[str, Any]]) -> None:
        text = self._lines(events)
        if text:
            stream = self._stream or sys.stdout
            stream.write(text)
            stream.flush()

    async def emit(self, event: Mapping[str, Any]) -> None:
        await self.write((event,))

    async def aclose(self) -> None:
        return None


def from_spec(spec: SinkSpec, env: Mapping[str, str]) -> StdoutSink:
    if spec.target or spec.options:
        raise SinkSpecError(f"bad sink {spec.shown!r}: stdout takes no target or options other than types=")
    return StdoutSink()
