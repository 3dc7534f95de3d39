"""``stdout``: the terminal view of a live call."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from .base import SinkSpec, SinkSpecError

__all__ = ["StdoutSink", "format_line", "LiveCaption", "from_spec"]

REWRITE = "\r\x1b[2K"  # back to the start of the line and clear it (VT100; every terminal today)


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


class LiveCaption:
    """What a terminal shows: every line printed for good, except the newest partial
    transcript, which stays on the bottom line and is rewritten in place (carriage
    return + clear line) as the caller speaks.  A committed transcript replaces it
    for good.  While more than one call is live, transcript lines start with a short
    call label (``[…1a2b]``: the end of the call SID) and the bottom line shows the
    newest partial of any call.  The partial is cut to the terminal's width, keeping
    its newest words, so that it never wraps (a wrapped line cannot be rewritten)."""

    def __init__(self, width: int | None = None) -> None:
        self._width = width
        self._live_calls: set[str] = set()
        self._partial: tuple[str, str] | None = None  # (call_sid, the line shown at the bottom)

    @property
    def showing_partial(self) -> bool:
        return self._partial is not None

    def _label(self, call_sid: str) -> str:
        return f"[…{call_sid[-4:]}] " if len(self._live_calls) > 1 else ""

    def _fit(self, line: str) -> str:
        width = (self._width or shutil.get_terminal_size().columns) - 1
        if len(line) <= width:
            return line
        tail = line[len(line) - width + 1:]
        cut = tail.find(" ")  # start at a whole word when there is one
        return "…" + (tail[cut:] if cut >= 0 else tail)

    def render(self, event: Mapping[str, Any], partials: bool = True) -> str:
        """The bytes (as text) to write for ``event``; "" when it changes nothing."""
        call_sid = str(event.get("call_sid", ""))
        kind = event.get("type")
        if kind == "call_started":
            self._live_calls.add(call_sid)
        line = format_line(event)
        if line is None:
            return ""
        if kind == "transcript":
            line = self._label(call_sid) + line
            if event["kind"] == "partial":
                if not partials:
                    return ""
                self._partial = (call_sid, self._fit(line))
                return REWRITE + self._partial[1]
        if kind == "call_ended":
            self._live_calls.discard(call_sid)
        shown = self._partial
        if shown is not None and (shown[0] == call_sid and kind in ("transcript", "call_ended")):
            shown = self._partial = None  # committed (or ended): that partial is superseded
        return REWRITE + line + "\n" + (shown[1] if shown else "")


class StdoutSink:
    """Prints the seed's view: ``PARTIAL:``/``COMMITTED:`` lines between
    ``[CA…] Twilio stream started`` and ``[CA…] Twilio stream stopped``.  On a
    terminal (``stream.isatty()``, or ``terminal=True``) the partial line is rewritten
    in place (``LiveCaption``); elsewhere (a file, a pipe) every line is printed as is.

    A ``SinkWriter`` (``write`` a batch, flushed once); ``emit`` prints one event, for
    use without a hub."""

    name = "stdout"

    def __init__(self, stream: TextIO | None = None, partials: bool = True, terminal: bool | None = None) -> None:
        self._stream = stream
        self._partials = partials
        self._terminal = terminal
        self._caption: LiveCaption | None = None

    def _text(self, stream: TextIO, events: Sequence[Mapping[str, Any]]) -> str:
        if self._terminal is None:
            self._terminal = _isatty(stream)
        if self._terminal:
            if self._caption is None:
                self._caption = LiveCaption()
            caption = self._caption
            return "".join(caption.render(event, self._partials) for event in events)
        lines = []
        for event in events:
            if not self._partials and event.get("kind") == "partial":
                continue
            line = format_line(event)
            if line is not None:
                lines.append(line + "\n")
        return "".join(lines)

    async def write(self, events: Sequence[Mapping[str, Any]]) -> None:
        stream = self._stream or sys.stdout
        text = self._text(stream, events)
        if text:
            stream.write(text)
            stream.flush()

    async def emit(self, event: Mapping[str, Any]) -> None:
        await self.write((event,))

    async def aclose(self) -> None:
        if self._caption is not None and self._caption.showing_partial:
            stream = self._stream or sys.stdout
            stream.write("\n")  # leave the prompt below the last partial
            stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def from_spec(spec: SinkSpec, env: Mapping[str, str]) -> StdoutSink:
    if spec.target or spec.options:
        raise SinkSpecError(f"bad sink {spec.shown!r}: stdout takes no target or options other than types=")
    return StdoutSink()
