"""The one place that touches a provider's socket: a thin I/O shell around a codec.

``open_websocket_session`` connects (auth header, no key in the URL), then drives an
``SttCodec``: audio and commands go through the codec into ``data_to_send``, which is
written in order under one lock; messages read are fed to ``codec.receive``; a dropped
or closed socket becomes the codec's ``connection_closed`` events, whether the receive
or the send side saw it first.  Handshake failures become typed errors (401 →
``ProviderAuthError``, 503 → ``ProviderConnectionError``...).

However the session ends (finalized, failed, or cut by its caller's deadline, e.g. the
call's drain), the vendor gets its end-of-stream message if it has not had it and a
close handshake (1000), within ``END_TIMEOUT`` s of the caller's deadline and shielded
from the cancellation that cut it (``WebSocketSession.end``).
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import trio
import trio_websocket

from .base import SttCodec
from .errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderStalledError,
    error_for_close_code,
    error_for_http_status,
)
from .events import Finalized, ProviderClosed, ProviderEvent, ProviderFailed
from .wsclient import WatchedStream, open_client_websocket

__all__ = ["WebSocketSession", "open_websocket_session", "END_TIMEOUT"]

log = logging.getLogger("earpiece.provider")

CONNECT_TIMEOUT = 10.0
SEND_TIMEOUT = 5.0
DISCONNECT_TIMEOUT = 2.0
END_TIMEOUT = 1.0  # how far past its caller's deadline a session's graceful end may run
MAX_MESSAGE_SIZE = 4 * 1024 * 1024


class WebSocketSession:
    """``SttSession`` over a WebSocket.  ``send_audio`` raises
    ``ProviderStalledError`` when the provider has not taken a message within
    ``send_timeout`` seconds (a peer that stopped reading), and, once the socket is
    gone, the error the codec gives its close (``connection_closed``: a vendor's close
    codes keep their meaning, fatal or retryable, whichever side saw the close).  A caller whose own deadline
    ends sooner (SttSender's ``send_timeout``) is the one that reports the stall: the
    session then opens no cancel scope of its own.

    ``stream``: the connection's ``WatchedStream``, when there is one, tells ``end``
    whether a write was cut half way (then no frame can follow)."""

    def __init__(self, provider: str, codec: SttCodec, ws: trio_websocket.WebSocketConnection,
                 send_timeout: float = SEND_TIMEOUT, *, stream: WatchedStream | None = None) -> None:
        self.provider = provider
        self.codec = codec
        self._ws = ws
        self._stream = stream
        self._send_timeout = send_timeout
        self._send_lock = trio.Lock()
        self._events: deque[ProviderEvent] = deque()
        self._closed: ProviderClosed | None = None
        self._close_error: ProviderError | None = None  # what a send after the close raises
        self._waiting: trio.CancelScope | None = None  # receive() blocked on the socket
        self._finalizing = False  # codec.finalize() was called: its end sequence is under way
        self.messages_sent = 0
        self.bytes_sent = 0

    async def send_audio(self, audio: bytes) -> None:
        self.codec.send_audio(audio)
        await self._flush()

    async def finalize(self) -> None:
        self._finalizing = True
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
                    self._raise_closed()
                    return
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
                    self._connection_closed(exc.reason)
                    self._raise_closed()
                    return
                self.messages_sent += 1
                self.bytes_sent += len(message)
        finally:
            lock.release()

    def _raise_closed(self) -> None:
        """A send found the socket closed: raise what the codec made of the close (nothing
        when it was the end of a finalized session: the rest is not needed)."""
        if self._close_error is not None:
            raise self._close_error

    def _connection_closed(self, reason: trio_websocket.CloseReason | None) -> None:
        """The socket is closed: ask the codec what that means, once, for both sides."""
        if self._closed is not None:
            return
        code = (reason.code if reason else None) or 1006
        text = (reason.reason if reason else None) or ""
        events = self.codec.connection_closed(code, text)
        self._closed = next((e for e in events if isinstance(e, ProviderClosed)), ProviderClosed(code, text))
        self._events.extend(e for e in events if not isinstance(e, ProviderClosed))
        failure = next((e.error for e in events if isinstance(e, ProviderFailed)), None)
        if failure is None and not any(isinstance(e, Finalized) for e in events):
            failure = error_for_close_code(self.provider, code, text)
        self._close_error = failure

    async def receive(self) -> ProviderEvent:
        while not self._events:
            if self._closed is not None:
                return self._closed
            with trio.CancelScope() as waiting:  # get_message is cancel-safe: nothing is lost
                self._waiting = waiting
                try:
                    message = await self._ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    self._connection_closed(exc.reason)
                    continue
                finally:
                    self._waiting = None
            if waiting.cancelled_caught:
                continue
            self._events.extend(self.codec.receive(message))
            await self._flush()  # a reply the codec owes (e.g. session.update after session.created)
        return self._events.popleft()

    async def end(self) -> None:
        """End the session as its vendor expects, whatever cut it short: the codec's
        end-of-stream messages if ``finalize`` never ran (or never got them out), then a
        close handshake with 1000.  The session's users must be gone (sender and
        receiver returned or cancelled).  Unbounded: the caller bounds it.

        Not sent: audio the codec still holds from a send cut short (its batch was not
        accepted, so the call counts it as dropped), and anything at all once a write
        was cut half way (the peer may hold part of a frame) or the socket is closed."""
        ws = self._ws
        if ws.closed is not None or self._closed is not None:
            return
        if self._stream is not None and not self._stream.intact:
            log.info("%s: a write was cut half way; closing the connection without a close frame", self.provider)
            return
        codec = self.codec
        if not self._finalizing:
            self._finalizing = True
            codec.data_to_send()  # the rest of a send cut short, if any: not sent (counted as dropped)
            codec.finalize()
        end_stream = getattr(codec, "end_stream", None)  # a codec whose end waits on an answer
        if end_stream is not None:
            end_stream()
        try:
            for message in codec.data_to_send():
                await ws.send_message(message)
                self.messages_sent += 1
                self.bytes_sent += len(message)
        except trio_websocket.ConnectionClosed:
            return
        await ws.aclose(1000)


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
    """Connect to ``url`` and yield a session driving ``codec``.  On the way out, however
    the body ended (cancelled included), the session ``end``s gracefully, shielded, for
    at most ``DISCONNECT_TIMEOUT`` s and never more than ``END_TIMEOUT`` s past the
    caller's own deadline; then the TCP stream is closed."""
    encoded = [(k.encode(), v.encode()) for k, v in headers]
    async with AsyncExitStack() as stack:
        try:
            client = await stack.enter_async_context(open_client_websocket(
                url, encoded, connect_timeout=connect_timeout, ssl_context=ssl_context,
                max_message_size=MAX_MESSAGE_SIZE, message_queue_size=16))
        except trio_websocket.ConnectionRejected as exc:
            body = (exc.body or b"")[:200].decode("utf-8", "replace").strip()
            raise error_for_http_status(provider, exc.status_code, body) from None
        except trio_websocket.ConnectionTimeout:
            raise ProviderConnectionError(provider, f"no answer within {connect_timeout:g} s") from None
        except (trio_websocket.HandshakeError, OSError) as exc:
            raise ProviderConnectionError(provider, f"could not connect: {type(exc).__name__}: {exc}") from None
        session = WebSocketSession(provider, codec, client.ws, send_timeout, stream=client.stream)
        try:
            yield session
        finally:
            await _end_gracefully(session)


async def _end_gracefully(session: WebSocketSession) -> None:
    now = trio.current_time()
    caller_deadline = trio.current_effective_deadline()  # -inf once the caller is cancelled
    deadline = min(now + DISCONNECT_TIMEOUT, max(now, caller_deadline) + END_TIMEOUT)
    with trio.CancelScope(deadline=deadline, shield=True) as scope:
        try:
            await session.end()
        except trio.BrokenResourceError:
            pass  # the connection died under the close: the stream is closed next anyway
        except Exception:  # best effort: never let the goodbye hide why the session ended
            log.warning("%s: the session's graceful end failed; closing the connection", session.provider,
                        exc_info=True)
    if scope.cancelled_caught:
        log.info("%s: no close handshake within %.1f s; closing the connection", session.provider, deadline - now)
