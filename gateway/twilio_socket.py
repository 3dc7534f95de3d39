"""``WS /twilio/stream`` as a raw ASGI handler (no framework on the per-frame path)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from actors.call import run_call
from actors.config import CallConfig
from actors.ports import Sink
from providers.base import SttProvider
from providers.twilio import TwilioProtocolError

from .calls import CallRegistry

__all__ = ["AsgiTextSource", "TwilioStreamEndpoint"]

log = logging.getLogger("earpiece.gateway")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class AsgiTextSource:
    """A ``TextSource`` over an accepted ASGI WebSocket: text frames in order;
    ``trio.EndOfChannel`` when the peer went away; a binary frame is a protocol error."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.disconnected = False

    async def receive(self) -> str:
        if self.disconnected:
            raise trio.EndOfChannel
        message = await self._receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            if text is None:
                raise TwilioProtocolError("Twilio sends text frames only; got a binary frame", field=None)
            return text
        self.disconnected = True  # websocket.disconnect
        raise trio.EndOfChannel


class TwilioStreamEndpoint:
    """Accepts a Media Stream, runs the call, closes the socket with a code that says
    how it ended (1000 normal, 1001 shutdown, 1008 bad input, 1013 full)."""

    def __init__(self, provider: SttProvider, sinks: Sequence[Sink], registry: CallRegistry,
                 config: CallConfig, authorize: Callable[[dict[str, Any]], str | None] | None = None) -> None:
        self.provider = provider
        self.sinks = sinks
        self.registry = registry
        self.config = config
        self.authorize = authorize  # returns a refusal reason, or None when allowed

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        if self.authorize is not None:
            refusal = self.authorize(scope)
            if refusal is not None:
                log.warning("refused a media stream from %s: %s", _peer(scope), refusal)
                await send({"type": "websocket.http.response.start", "status": 403,
                            "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "websocket.http.response.body", "body": refusal.encode()})
                return
        record = self.registry.admit(self.provider.name)
        if record is None:
            log.warning("refused a media stream from %s: gateway full or draining", _peer(scope))
            await send({"type": "websocket.close", "code": 1013})
            return
        try:
            await send({"type": "websocket.accept"})
            source = AsgiTextSource(receive)

            def started(stream: Any, stats: Any) -> None:
                record.stream, record.stats = stream, stats

            outcome = await run_call(source, self.provider, self.sinks, config=self.config,
                                     reader_scope=record.reader_scope, on_started=started)
            if not source.disconnected:
                await send({"type": "websocket.close", "code": outcome.close_code,
                            "reason": outcome.detail[:120]})
        finally:
            self.registry.release(record)


def _peer(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown peer"
