"""``WS /twilio/stream``: admission, the call, the close code — whoever carries the socket.

The socket itself is elsewhere: normally ``gateway.edge`` upgrades the stream on its own
socket (``gateway.stream_socket.SocketStreamUpgrade``); an upgrade that reaches Hypercorn
instead (e.g. on a kept-alive HTTP connection) comes through the ASGI entry
(``AsgiStreamUpgrade``, here).  Both are a ``StreamUpgrade`` and go through
``TwilioStreamEndpoint.serve``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import trio

from actors.call import run_call
from actors.config import CallConfig
from actors.ports import Sink, TextSource
from providers.chain import ProviderChain
from providers.twilio import TwilioProtocolError

from .calls import CallRegistry
from .metrics import GatewayMetrics
from .logs import peer_label, printable

__all__ = ["AsgiStreamUpgrade", "AsgiTextSource", "StreamUpgrade", "TwilioStreamEndpoint", "FORBIDDEN"]

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


class StreamUpgrade(Protocol):
    """One ``/twilio/stream`` upgrade, however it is carried (ASGI, or our own socket)."""

    async def deny(self, status: int, body: str) -> None: ...

    async def accept(self) -> TextSource: ...

    async def close(self, code: int, reason: str) -> None:
        """Close the socket with ``code`` unless the peer went away already."""


class AsgiStreamUpgrade:
    """A ``StreamUpgrade`` over an ASGI websocket scope (Hypercorn's own WebSocket layer)."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._source: AsgiTextSource | None = None

    async def deny(self, status: int, body: str) -> None:
        """Answer the upgrade with a plain HTTP response (``websocket.http.response``)."""
        await self._send({"type": "websocket.http.response.start", "status": status,
                          "headers": [(b"content-type", b"text/plain")]})
        await self._send({"type": "websocket.http.response.body", "body": body.encode()})

    async def accept(self) -> AsgiTextSource:
        await self._send({"type": "websocket.accept"})
        self._source = AsgiTextSource(self._receive)
        return self._source

    async def close(self, code: int, reason: str) -> None:
        if self._source is not None and not self._source.disconnected:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


class TwilioStreamEndpoint:
    """Accepts a Media Stream, runs the call, closes the socket with a code that says
    how it ended (1000 normal, 1001 shutdown, 1008 bad input or a limit, 1011 provider;
    1002/1007/1009 for a WebSocket protocol violation on our own socket).

    Before the upgrade: ``authorize(scope)`` (the signature check) returns a refusal
    reason for the log, or None; a refused upgrade is answered 403.  Then admission: a
    gateway that is full, draining or overloaded answers 503.  Both are one log line each, and both
    happen before any ``await``, so concurrent upgrades can never be admitted past
    ``max_calls``.

    ``chain``: every call's providers.  ``metrics``: admissions and refusals are counted
    here; calls run with each provider of the chain counted as its sessions open, and
    with a ``CallObserver`` as their first sink (``gateway.metrics``).
    """

    def __init__(self, chain: ProviderChain, sinks: Sequence[Sink], registry: CallRegistry,
                 config: CallConfig, authorize: Callable[[dict[str, Any]], str | None] | None = None,
                 *, metrics: GatewayMetrics) -> None:
        self.chain = chain
        self.sinks = sinks
        self.registry = registry
        self.config = config
        self.authorize = authorize  # returns a refusal reason, or None when allowed
        self.metrics = metrics
        self._counted_chain = chain.map(metrics.counted)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """The ASGI entry (an upgrade Hypercorn parsed; see ``gateway.edge`` for ours)."""
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        await self.serve(scope, AsgiStreamUpgrade(receive, send))

    async def serve(self, scope: dict[str, Any], upgrade: StreamUpgrade) -> None:
        """One upgrade request, described by an ASGI-shaped ``scope``."""
        if self.authorize is not None:
            refusal = self.authorize(scope)
            if refusal is not None:
                self.metrics.call_refused("signature")
                log.warning("refused a media stream from %s: %s", peer_label(scope), printable(refusal))
                await upgrade.deny(403, FORBIDDEN)
                return
        # No checkpoint between authorize and admit: admission is atomic under trio.
        record = self.registry.admit(self.chain.primary.name)
        if record is None:
            self.metrics.call_refused(self.registry.refusal_reason())
            why = self.registry.why_not_ready()
            log.warning("refused a media stream from %s: gateway %s", peer_label(scope), why)
            await upgrade.deny(503, f"gateway {why}\n")
            return
        self.metrics.call_admitted()
        try:
            source = await upgrade.accept()

            def started(stream: Any, stats: Any) -> None:
                record.stream, record.stats = stream, stats

            sinks = [self.metrics.observe_call(lambda: record.stats), *self.sinks]
            outcome = await run_call(source, self._counted_chain, sinks, config=self.config,
                                     reader_scope=record.reader_scope, on_started=started)
            await upgrade.close(outcome.close_code, _close_reason(outcome.detail))
        finally:
            self.registry.release(record)
            self.metrics.call_released()


FORBIDDEN = "forbidden: missing or invalid X-Twilio-Signature\n"


def _close_reason(detail: str) -> str:
    """A close reason fits in 123 bytes of UTF-8."""
    return detail.encode()[:120].decode("utf-8", "ignore")
