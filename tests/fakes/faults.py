"""A wire-level scripted provider: a loopback WebSocket server that plays the
``providers.scripted.faults`` fault values on real sockets, and a tiny codec + provider
that reach it through the real ``providers/websocket.py`` shell.

The protocol (ours, JSON text + binary audio), so no vendor's codec is under test here::

    client → server   binary: mu-law audio          text: {"type": "finalize"} | {"type": "keepalive"}
    server → client   {"type": "started"}
                      {"type": "partial" | "final", "text": "audio 0 to 1000", "start_ms": 0, "end_ms": 1000}
                      {"type": "finalized"}
                      {"type": "error", "fatal": bool, "code": "rate_limited", "message": "..."}

Script (times are ms of audio this connection received): a partial every
``partial_ms``, a final every ``commit_ms`` and at ``finalize``.  Faults, per
connection attempt (``RefuseHandshake`` answers the upgrade with that HTTP status;
``Close(1006)`` drops TCP without a close frame; ``Close(code)`` closes with it;
``Garbage`` sends non-JSON; ``ErrorMessage`` sends an error message; ``Stall`` stops
answering, with ``stop_reading`` stops reading too; ``SlowConsumer`` reads at ``rate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

import attrs
import orjson
import trio
import trio_websocket

from providers.base import MULAW_8K, AudioFormat, SttSession
from providers.errors import ProviderFatalError, ProviderProtocolError, ProviderRetryableError
from providers.events import (
    Finalized,
    FinalTranscript,
    PartialTranscript,
    ProviderClosed,
    ProviderEvent,
    ProviderFailed,
    SessionStarted,
)
from providers.scripted.faults import (
    Close,
    ErrorMessage,
    Fault,
    FaultScript,
    Garbage,
    RefuseHandshake,
    SlowConsumer,
    Stall,
)
from providers.websocket import open_websocket_session

__all__ = ["WireCodec", "WireProvider", "FakeWireServer", "WireConnection", "PATH"]

PATH = "/v1/listen"


# --- the client side: a sans-I/O codec and a provider over the real shell ------------------


class WireCodec:
    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._out: list[str | bytes] = []

    def send_audio(self, audio: bytes) -> None:
        self._out.append(audio)

    def finalize(self) -> list[ProviderEvent] | None:
        self._out.append('{"type":"finalize"}')
        return None

    def keepalive(self) -> None:
        self._out.append('{"type":"keepalive"}')

    def data_to_send(self) -> list[str | bytes]:
        out, self._out = self._out, []
        return out

    def receive(self, message: str | bytes) -> list[ProviderEvent]:
        try:
            data = orjson.loads(message)
            kind = data["type"]
            if kind in ("partial", "final"):
                cls = FinalTranscript if kind == "final" else PartialTranscript
                return [cls(str(data["text"]), int(data["start_ms"]), int(data["end_ms"]))]
            if kind == "started":
                return [SessionStarted()]
            if kind == "finalized":
                return [Finalized()]
            if kind == "error":
                error = ProviderFatalError if data["fatal"] else ProviderRetryableError
                return [ProviderFailed(error(self.provider, f"{data['code']}: {data['message']}",
                                             vendor_type=str(data["code"])))]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            pass
        raise ProviderProtocolError(self.provider, f"not a message of ours: {str(message)[:60]!r}")

    def connection_closed(self, code: int, reason: str) -> list[ProviderEvent]:
        return [ProviderClosed(code, reason)]


@attrs.define
class WireProvider:
    url: str  # ws://127.0.0.1:PORT
    name: str = "wire"
    audio_format: AudioFormat = MULAW_8K
    chunk_ms: int | None = None
    keepalive_interval: float | None = None

    def open_session(self) -> AbstractAsyncContextManager[SttSession]:
        return open_websocket_session(self.name, WireCodec(self.name), self.url + PATH, connect_timeout=5)


# --- the server side ------------------------------------------------------------------------


@attrs.define
class WireConnection:
    """What one connection attempt saw and did."""

    attempt: int
    refused: int | None = None  # the HTTP status it was refused with
    audio: bytearray = attrs.field(factory=bytearray)
    sent: list[str] = attrs.field(factory=list)
    ended_by: str = ""  # "client" | "close <code>" | "drop" | "stall"

    @property
    def audio_ms(self) -> int:
        return len(self.audio) // 8


class FakeWireServer:
    def __init__(self, faults: FaultScript | None = None, *, partial_ms: int = 500, commit_ms: int = 1000) -> None:
        self.faults: FaultScript = faults or {}
        self.partial_ms = partial_ms
        self.commit_ms = commit_ms
        self.connections: list[WireConnection] = []

    def faults_of(self, attempt: int) -> Sequence[Fault]:
        return self.faults(attempt) if callable(self.faults) else self.faults.get(attempt, ())

    @property
    def accepted(self) -> list[WireConnection]:
        return [c for c in self.connections if c.refused is None]

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        log = WireConnection(len(self.connections))
        self.connections.append(log)
        faults = list(self.faults_of(log.attempt))
        for fault in faults:
            if isinstance(fault, RefuseHandshake):
                log.refused = fault.status
                await request.reject(fault.status, body=b'{"error":"scripted refusal"}')
                return
        ws = await request.accept()
        try:
            await _Connection(self, ws, log, faults).run()
        except trio_websocket.ConnectionClosed:
            log.ended_by = log.ended_by or "client"


class _Connection:
    def __init__(self, server: FakeWireServer, ws: trio_websocket.WebSocketConnection, log: WireConnection,
                 faults: list[Fault]) -> None:
        self.ws, self.log = ws, log
        self.partial_ms, self.commit_ms = server.partial_ms, server.commit_ms
        self.pending = [f for f in faults if isinstance(f, Close | Garbage | ErrorMessage | Stall)]
        slow = [f.rate for f in faults if isinstance(f, SlowConsumer)]
        self.rate = slow[0] if slow else None
        self.stalled = False
        self.committed = 0
        self.next_partial = server.partial_ms
        self.next_commit = server.commit_ms

    async def send(self, message: dict) -> None:
        if not self.stalled:
            text = orjson.dumps(message).decode()
            self.log.sent.append(text)
            await self.ws.send_message(text)

    async def run(self) -> None:
        await self.send({"type": "started"})
        while True:
            message = await self.ws.get_message()
            if isinstance(message, str):
                if orjson.loads(message).get("type") == "finalize":
                    await self.final(self.log.audio_ms)
                    await self.send({"type": "finalized"})
                continue
            if self.rate is not None:
                await trio.sleep(len(message) / 8 / 1000 / self.rate)
            self.log.audio += message
            now = self.log.audio_ms
            while now >= self.next_commit:
                await self.final(self.next_commit)
                self.next_commit += self.commit_ms
            if now >= self.next_partial:
                while self.next_partial <= now:
                    self.next_partial += self.partial_ms
                if now > self.committed:
                    await self.send({"type": "partial", "text": f"audio {self.committed} to {now}",
                                     "start_ms": self.committed, "end_ms": now})
            if await self.play_faults(now):
                return

    async def final(self, end: int) -> None:
        if end > self.committed:
            await self.send({"type": "final", "text": f"audio {self.committed} to {end}",
                             "start_ms": self.committed, "end_ms": end})
            self.committed = end

    async def play_faults(self, now: int) -> bool:
        """True when the connection is over."""
        due = [f for f in self.pending if f.after_ms <= now]  # type: ignore[union-attr]
        self.pending = [f for f in self.pending if f not in due]
        for fault in due:
            if isinstance(fault, Close):
                if fault.code == 1006:
                    self.log.ended_by = "drop"
                    await trio.aclose_forcefully(self.ws._stream)  # noqa: SLF001 - no public abrupt close
                else:
                    self.log.ended_by = f"close {fault.code}"
                    await self.ws.aclose(fault.code, fault.reason)
                return True
            if isinstance(fault, Garbage):
                self.log.sent.append(fault.message)
                await self.ws.send_message(fault.message)
            elif isinstance(fault, ErrorMessage):
                await self.send({"type": "error", "fatal": fault.fatal, "code": fault.vendor_type,
                                 "message": fault.detail})
            elif isinstance(fault, Stall):
                self.stalled = True
                self.log.ended_by = "stall"
                if fault.stop_reading:
                    await trio.sleep_forever()
        return False
