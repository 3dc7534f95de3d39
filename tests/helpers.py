"""Shared test helpers: Twilio message scripts, capturing sinks, task accounting."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_websocket
from urllib.parse import urlsplit

from providers.twilio import (
    encode_connected,
    encode_dtmf,
    encode_media_event,
    encode_start,
    encode_stop,
)

ACCOUNT_SID = "AC" + "0" * 31 + "1"


def call_ids(n: int) -> tuple[str, str]:
    return f"CA{n:032x}", f"MZ{n:032x}"


def tone(ms: int, seed: int = 0) -> bytes:
    """Deterministic non-silent mu-law bytes, 8 per ms, different per seed."""
    return bytes(((i * 7 + seed * 13) % 251) for i in range(ms * 8))


def twilio_script(audio: bytes, *, n: int = 1, dtmf: Mapping[int, str] | None = None,
                  stop: bool = True, params: Mapping[str, str] | None = None,
                  first_timestamp: int = 0) -> Iterator[tuple[str, bool]]:
    """Yields (message, is_media) exactly as Twilio would send them for ``audio``."""
    call_sid, stream_sid = call_ids(n)
    dtmf = dict(dtmf or {})
    yield encode_connected(), False
    yield encode_start(stream_sid=stream_sid, account_sid=ACCOUNT_SID, call_sid=call_sid,
                       custom_parameters=dict(params or {"From": "+15005550006"})), False
    seq = 1
    for chunk, offset in enumerate(range(0, len(audio), 160), start=1):
        frame = audio[offset:offset + 160]
        if len(frame) < 160:
            frame = frame + b"\xff" * (160 - len(frame))
        ms = offset // 8
        if ms in dtmf:
            seq += 1
            yield encode_dtmf(stream_sid=stream_sid, sequence_number=seq, digit=dtmf[ms]), False
        seq += 1
        yield encode_media_event(stream_sid=stream_sid, sequence_number=seq, chunk=chunk,
                                 timestamp=first_timestamp + ms, payload=frame), True
    if stop:
        seq += 1
        yield encode_stop(stream_sid=stream_sid, sequence_number=seq, account_sid=ACCOUNT_SID,
                          call_sid=call_sid), False


async def play(send: trio.MemorySendChannel[str], script: Iterator[tuple[str, bool]],
               *, close: bool = True, realtime: bool = True) -> None:
    """Send a script into a call at Twilio's pace (20 ms per media frame, virtual time)."""
    async with send if close else _nullcontext():
        for message, is_media in script:
            await send.send(message)
            if is_media and realtime:
                await trio.sleep(0.02)


class _nullcontext:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


class ListSink:
    """Captures rendered events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def emit(self, event: Mapping[str, Any]) -> None:
        self.events.append(dict(event))

    async def aclose(self) -> None:
        return None

    def of_call(self, call_sid: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("call_sid") == call_sid]

    def types(self, call_sid: str | None = None) -> list[str]:
        events = self.events if call_sid is None else self.of_call(call_sid)
        return [e["type"] for e in events]

    def committed(self, call_sid: str | None = None) -> list[str]:
        events = self.events if call_sid is None else self.of_call(call_sid)
        return [e["text"] for e in events if e["type"] == "transcript" and e["kind"] == "committed"]


def task_count() -> int:
    """Every live trio task in this run (to prove a call left nothing behind)."""
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(child) for nursery in task.child_nurseries for child in nursery.child_tasks)
    return walk(trio.lowlevel.current_root_task())



@asynccontextmanager
async def open_stream_socket(url: str) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A raw WebSocket to the gateway whose TCP stream is closed on every path
    (trio-websocket's ``open_websocket_url`` can leave it open when the server closes
    first), for tests that send what no simulator would."""
    parts = urlsplit(url)
    async with trio.open_nursery() as nursery:
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        try:
            ws = await trio_websocket.wrap_client_stream(nursery, stream, parts.netloc, parts.path)
            yield ws
            with trio.move_on_after(2):
                await ws.aclose()
        finally:
            await trio.aclose_forcefully(stream)
            nursery.cancel_scope.cancel()
