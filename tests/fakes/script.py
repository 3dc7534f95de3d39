"""What the fake vendor servers share: a connection log, and scripted faults.

A fake vendor server plays its vendor's protocol faithfully; tests inject faults with
``Fault(action, after_ms=…)`` (once that much audio was received), ``Fault(action,
at_end=True)`` (instead of answering the end sequence) or ``Fault(action, at_open=True)``
(right after the handshake).  Actions: ``Send(text)`` a raw message (e.g. a vendor error),
``Close(code, reason)``, ``Drop()`` (TCP closed without a close frame: the client sees
1006), ``Stall()`` (keep reading and recording, never answer again).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

import attrs
import orjson
import trio
import trio_websocket

__all__ = ["Send", "Close", "Drop", "Stall", "Action", "Fault", "ConnectionLog", "FakeSocket", "b64decode"]


@attrs.frozen
class Send:
    message: str


@attrs.frozen
class Close:
    code: int = 1000
    reason: str = ""


@attrs.frozen
class Drop:
    pass


@attrs.frozen
class Stall:
    pass


Action = Send | Close | Drop | Stall


@attrs.frozen
class Fault:
    action: Action
    after_ms: int | None = None
    at_end: bool = False
    at_open: bool = False
    connection: int | None = None  # only on this connection (0-based); None: every one

    def applies(self, index: int) -> bool:
        return self.connection is None or self.connection == index


@attrs.define
class ConnectionLog:
    """Everything one connection did, for assertions."""

    index: int
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names; the last value wins
    received: list[str | bytes] = attrs.field(factory=list)
    sent: list[dict] = attrs.field(factory=list)
    audio: bytearray = attrs.field(factory=bytearray)
    partials: list[str] = attrs.field(factory=list)
    finals: list[str] = attrs.field(factory=list)
    accepted: bool = False
    ended_by: str = ""  # "client", "close <code>", "drop", "stall"
    close_code: int | None = None  # the code of the client's close frame; 1006: TCP ended without one

    @classmethod
    def from_request(cls, index: int, request: trio_websocket.WebSocketRequest) -> ConnectionLog:
        parts = urlsplit(request.path)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        return cls(index, parts.path, parse_qs(parts.query, keep_blank_values=True), headers)


class FakeSocket:
    """An accepted fake connection: sends JSON and performs fault actions, logging both."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, log: ConnectionLog, faults: Sequence[Fault]) -> None:
        self.ws = ws
        self.log = log
        self.faults = [f for f in faults if f.applies(log.index)]
        self.stalled = False
        self._fired: set[int] = set()

    async def send(self, message: dict) -> None:
        if self.stalled:
            return
        self.log.sent.append(message)
        await self.ws.send_message(orjson.dumps(message).decode())

    async def perform(self, action: Action) -> bool:
        """Do ``action``; True when the connection is over (closed or dropped)."""
        if isinstance(action, Send):
            self.log.sent.append({"raw": action.message})
            await self.ws.send_message(action.message)
            return False
        if isinstance(action, Stall):
            self.stalled = True
            self.log.ended_by = "stall"
            return False
        if isinstance(action, Close):
            self.log.ended_by = f"close {action.code}"
            await self.ws.aclose(action.code, action.reason)
            return True
        self.log.ended_by = "drop"
        stream = self.ws._stream  # noqa: SLF001 - trio-websocket has no public abrupt close
        await trio.aclose_forcefully(stream)
        return True

    async def fire(self, *, audio_ms: int | None = None, at_end: bool = False, at_open: bool = False) -> bool:
        """Perform the faults due now (each once); True when the connection is over."""
        for index, fault in enumerate(self.faults):
            if index in self._fired:
                continue
            due = ((at_open and fault.at_open) or (at_end and fault.at_end)
                   or (audio_ms is not None and fault.after_ms is not None and audio_ms >= fault.after_ms))
            if due:
                self._fired.add(index)
                if await self.perform(fault.action):
                    return True
        return False

    def has_end_fault(self) -> bool:
        return any(f.at_end for i, f in enumerate(self.faults) if i not in self._fired)


def b64decode(value: object) -> bytes | None:
    """Strict base64 of a JSON string, or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def span_words(start_ms: int, end_ms: int) -> list[tuple[str, int, int]]:
    """The fake's 'speech' for a span: four words evenly over it, e.g.
    ``words 0 to 1000`` → [("words", 0, 250), ("0", 250, 500), ...]."""
    tokens = ["words", str(start_ms), "to", str(end_ms)]
    step = (end_ms - start_ms) / len(tokens)
    return [(tok, round(start_ms + i * step), round(start_ms + (i + 1) * step)) for i, tok in enumerate(tokens)]


def span_text(start_ms: int, end_ms: int) -> str:
    return f"words {start_ms} to {end_ms}"
