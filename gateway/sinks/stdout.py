"""``stdout``: the terminal view of a live call."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["StdoutSink", "format_line"]


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
    ``[CA…] Twilio stream started`` and ``[CA…] Twilio stream stopped``."""

    def __init__(self, stream: TextIO | None = None, partials: bool = True) -> None:
        self._stream = stream
        self._partials = partials

    async def emit(self, event: Mapping[str, Any]) -> None:
        if not self._partials and event.get("kind") == "partial":
            return
        line = format_line(event)
        if line is not None:
            stream = self._stream or sys.stdout
            stream.write(line + "\n")
            stream.flush()

    async def aclose(self) -> None:
        return None
