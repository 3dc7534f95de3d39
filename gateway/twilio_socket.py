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
from .security import peer_label, printable

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
    how it ended (1000 normal, 1001 shutdown, 1008 bad input or a limit, 1011 provider).

    Before the upgrade: ``authorize(scope)`` (the signature check) returns a refusal
    reason for the log, or None; a refused upgrade is answered 403.  Then admission: a
    gateway that is full or draining answers 503.  Both are one log line each, and both
    happen before any ``await``, so concurrent upgrades can never be admitted past
    ``max_calls``.
    """

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
                log.warning("refused a media stream from %s: %s", peer_label(scope), printable(refusal))
                await _deny(send, 403, FORBIDDEN)
                return
        # No checkpoint between authorize and admit: admission is atomic under trio.
        record = self.registry.admit(self.provider.name)
        if record is None:
            why = "draining" if self.registry.draining else f"full ({self.registry.max_calls} calls)"
            log.warning("refused a media stream from %s: gateway %s", peer_label(scope), why)
            await _deny(send, 503, f"gateway {why}\n")
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
                            "reason": _close_reason(outcome.detail)})
        finally:
            self.registry.release(record)


FORBIDDEN = "forbidden: missing or invalid X-Twilio-Signature\n"


async def _deny(send: Send, status: int, body: str) -> None:
    """Answer the upgrade with a plain HTTP response (ASGI ``websocket.http.response``)."""
    await send({"type": "websocket.http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "websocket.http.response.body", "body": body.encode()})


def _close_reason(detail: str) -> str:
    """A close reason fits in 123 bytes of UTF-8."""
    return detail.encode()[:120].decode("utf-8", "ignore")
