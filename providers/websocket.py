"""The one place that touches a provider's socket: a thin I/O shell around a codec.

``open_websocket_session`` connects (auth header, no key in the URL), then drives an
``SttCodec``: audio and commands go through the codec into ``data_to_send``, which is
written in order under one lock; messages read are fed to ``codec.receive``; a dropped
or closed socket becomes the codec's ``connection_closed`` events.  Handshake failures
become typed errors (401 → ``ProviderAuthError``, 503 → ``ProviderConnectionError``...).
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio
import trio_websocket

from .base import SttCodec
from .errors import (
    ProviderConnectionError,
    ProviderStalledError,
    error_for_close_code,
    error_for_http_status,
)
from .events import ProviderClosed, ProviderEvent

__all__ = ["WebSocketSession", "open_websocket_session"]

CONNECT_TIMEOUT = 10.0
SEND_TIMEOUT = 5.0
DISCONNECT_TIMEOUT = 2.0
MAX_MESSAGE_SIZE = 4 * 1024 * 1024


class WebSocketSession:
    """``SttSession`` over a WebSocket.  ``send_audio`` raises
    ``ProviderStalledError`` when the provider has not taken a message within
    ``send_timeout`` seconds (a peer that stopped reading), and
    ``ProviderConnectionError`` once the socket is gone.  A caller whose own deadline
    ends sooner (SttSender's ``send_timeout``) is the one that reports the stall: the
    session then opens no cancel scope of its own."""

    def __init__(self, provider: str, codec: SttCodec, ws: trio_websocket.WebSocketConnection,
                 send_timeout: float = SEND_TIMEOUT) -> None:
        self.provider = provider
        self.codec = codec
        self._ws = ws
        self._send_timeout = send_timeout
        self._send_lock = trio.Lock()
        self._events: deque[ProviderEvent] = deque()
        self._closed: ProviderClosed | None = None
        self._waiting: trio.CancelScope | None = None  # receive() blocked on the socket
        self.messages_sent = 0
        self.bytes_sent = 0

    async def send_audio(self, audio: bytes) -> None:
        self.codec.send_audio(audio)
        await self._flush()

    async def finalize(self) -> None:
        local = self.codec.finalize()
        await self._flush()
        if local:  # e.g. Finalized when nothing was left to commit: wake receive()
            self._events.extend(local)
            if self._waiting is not None:
                self._waiting.cancel()

    async def keepalive(self) -> None:
        self.codec.keepalive()
        await self._flush()

    async def _flush(self) -> None:
        # Cheap on the path taken ten times a second per call: the lock is taken without
        # a trip through the scheduler when it is free (the receive side flushing a codec
        # reply is the only contender), and no cancel scope of our own is opened when the
        # caller's deadline ends no later than ours would (SttSender bounds every session
        # operation with its send_timeout: two deadlines would mean the same thing).
        await trio.lowlevel.checkpoint_if_cancelled()
        lock = self._send_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            messages = self.codec.data_to_send()
            if not messages:  # the codec holds the audio back: still a checkpoint, so that a
                await trio.lowlevel.checkpoint()  # replay loop lets the reply it waits for in
                return
            timeout = self._send_timeout
            bounded = trio.current_effective_deadline() <= trio.current_time() + timeout
            for message in messages:
                if self._closed is not None:
                    raise error_for_close_code(self.provider, self._closed.code, self._closed.reason)
                try:
                    if bounded:
                        await self._ws.send_message(message)
                    else:
                        with trio.fail_after(timeout):
                            await self._ws.send_message(message)
                except trio.TooSlowError:
                    raise ProviderStalledError(
                        self.provider, f"provider did not take audio for {timeout:g} s") from None
                except trio_websocket.ConnectionClosed as exc:
                    code = exc.reason.code if exc.reason else 1006
                    raise error_for_close_code(self.provider, code, (exc.reason.reason or "") if exc.reason else "") from None
                self.messages_sent += 1
                self.bytes_sent += len(message)
        finally:
            lock.release()

    async def receive(self) -> ProviderEvent:
        while not self._events:
            if self._closed is not None:
                return self._closed
            with trio.CancelScope() as waiting:  # get_message is cancel-safe: nothing is lost
                self._waiting = waiting
                try:
                    message = await self._ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    code = (exc.reason.code if exc.reason else None) or 1006
                    reason = (exc.reason.reason if exc.reason else None) or ""
                    events = self.codec.connection_closed(code, reason)
                    self._closed = next((e for e in events if isinstance(e, ProviderClosed)),
                                        ProviderClosed(code, reason))
                    self._events.extend(e for e in events if not isinstance(e, ProviderClosed))
                    continue
                finally:
                    self._waiting = None
            if waiting.cancelled_caught:
                continue
            self._events.extend(self.codec.receive(message))
            await self._flush()  # a reply the codec owes (e.g. session.update after session.created)
        return self._events.popleft()


@asynccontextmanager
async def open_websocket_session(
    provider: str,
    codec: SttCodec,
    url: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    send_timeout: float = SEND_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocketSession]:
    """Connect to ``url`` and yield a session driving ``codec``.  Closes with 1000."""
    if url.startswith("wss://") and ssl_context is None:
        ssl_context = ssl.create_default_context()
    encoded = [(k.encode(), v.encode()) for k, v in headers]
    manager = trio_websocket.open_websocket_url(
        url, ssl_context, extra_headers=encoded, connect_timeout=connect_timeout,
        disconnect_timeout=DISCONNECT_TIMEOUT, max_message_size=MAX_MESSAGE_SIZE, message_queue_size=16)
    try:
        ws = await manager.__aenter__()
    except trio_websocket.ConnectionRejected as exc:
        await _close_rejected_stream(exc)
        body = (exc.body or b"")[:200].decode("utf-8", "replace").strip()
        raise error_for_http_status(provider, exc.status_code, body) from None
    except trio_websocket.ConnectionTimeout:
        raise ProviderConnectionError(provider, f"no answer within {connect_timeout:g} s") from None
    except (trio_websocket.HandshakeError, OSError) as exc:
        raise ProviderConnectionError(provider, f"could not connect: {type(exc).__name__}: {exc}") from None
    session = WebSocketSession(provider, codec, ws, send_timeout)
    try:
        try:
            yield session
        except BaseException as exc:
            if not await manager.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await manager.__aexit__(None, None, None)
    finally:
        # trio-websocket 0.12 never closes a client's TCP stream when the server closed
        # first (the client "waits for the server's TCP close", then leaves the socket
        # to the garbage collector).  Close it; only the private attribute reaches it.
        await trio.aclose_forcefully(ws._stream)  # noqa: SLF001


async def _close_rejected_stream(exc: trio_websocket.ConnectionRejected) -> None:
    """trio-websocket 0.12 raises ``ConnectionRejected`` from its reader task without
    closing the TCP stream, and the connection is then reachable only from the
    traceback: close its stream rather than leave the socket to the garbage collector."""
    tb = exc.__traceback__
    while tb is not None:
        connection = tb.tb_frame.f_locals.get("self")
        if isinstance(connection, trio_websocket.WebSocketConnection):
            await trio.aclose_forcefully(connection._stream)  # noqa: SLF001
            return
        tb = tb.tb_next
