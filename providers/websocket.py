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

from .base import SttCodec
from .errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderStalledError,
    error_for_close_code,
    error_for_http_status,
)
from .events import Finalized, ProviderClosed, ProviderEvent, ProviderFailed
from .wsclient import MAX_MESSAGE_SIZE, ConnectTimeout, open_client_websocket
from .wsconnection import ClientWebSocket, CloseReason, ConnectionClosed, HandshakeError, HandshakeRejected

__all__ = ["WebSocketSession", "open_websocket_session", "END_TIMEOUT"]

log = logging.getLogger("earpiece.provider")

CONNECT_TIMEOUT = 10.0
SEND_TIMEOUT = 5.0
DISCONNECT_TIMEOUT = 2.0
END_TIMEOUT = 1.0  # how far past its caller's deadline a session's graceful end may run


class WebSocketSession:
    """``SttSession`` over a WebSocket.  ``send_audio`` raises
    ``ProviderStalledError`` when the provider has not taken a message within
    ``send_timeout`` seconds (a peer that stopped reading), and, once the socket is
    gone, the error the codec gives its close (``connection_closed``: a vendor's close
    codes keep their meaning, fatal or retryable, whichever side saw the close).  A caller whose own deadline
    ends sooner (SttSender's ``send_timeout``) is the one that reports the stall: the
    session then opens no cancel scope of its own.

    Each send is one checkpoint: the batch's messages go out as masked frames in one
    write, waiting (and then bounded by ``send_timeout``) only while the kernel's
    buffer is full.  ``receive`` reads the socket itself; when nobody is receiving, a
    send reads what the socket holds first, so that it sees the server's close."""

    def __init__(self, provider: str, codec: SttCodec, ws: ClientWebSocket,
                 send_timeout: float = SEND_TIMEOUT) -> None:
        self.provider = provider
        self.codec = codec
        self._ws = ws
        self._send_timeout = send_timeout
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

    async def _flush(self, *, receiving: bool = False) -> None:
        """Send what the codec has queued (``receiving``: called by ``receive`` right after
        a read, which was this call's checkpoint when there is nothing to send)."""
        # Cheap on the path taken ten times a second per call: the lock is taken without
        # a trip through the scheduler when it is free (the receive side flushing a codec
        # reply is the only contender); every message of the batch goes out in one write
        # that waits only when the kernel's buffer is full, and only then under a cancel
        # scope of our own, and only when the caller's deadline ends later than ours
        # would (SttSender bounds every session operation with its send_timeout: two
        # deadlines would mean the same thing).  One checkpoint in all.
        await trio.lowlevel.checkpoint_if_cancelled()
        ws = self._ws
        lock = ws.send_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        waited = True
        try:
            if not (receiving or ws.receiving) and self._closed is None and ws.closed is None:
                self._take(ws.poll())  # nobody reads the socket: a close must still be seen here
            if self._closed is None and ws.closed is not None:
                self._connection_closed(ws.closed)
            messages = self.codec.data_to_send()
            if self._closed is not None:
                await self._write_quietly(b"")  # a close reply owed, if any
                self._raise_closed()
                return
            if not messages and not ws.owes:  # the codec holds the audio back: still a checkpoint,
                if not receiving:  # so that a replay loop lets the reply it waits for in (a read was one)
                    await trio.lowlevel.checkpoint()
                return
            written = await self._write(ws, messages)
            if written is None:  # closed under us, and a finalized session's end: nothing more
                return
            waited = written
            self.messages_sent += len(messages)
            self.bytes_sent += sum(map(len, messages))
        finally:
            lock.release()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def _write(self, ws: ClientWebSocket, messages: list[str | bytes]) -> bool | None:
        """Every message as a frame, in one write; True when the kernel's buffer was full
        and the rest had to wait (bounded by ``send_timeout``); None when the socket was
        closed and the close is no error (the codec's close error is raised otherwise)."""
        frame = ws.frame
        data = frame(messages[0]) if len(messages) == 1 else b"".join(frame(m) for m in messages)
        try:
            rest = ws.write_nowait(data)
            if rest is None:
                return False
            timeout = self._send_timeout
            bounded = trio.current_effective_deadline() <= trio.current_time() + timeout
            try:
                await ws.send_rest(rest, None if bounded else timeout)
            except trio.TooSlowError:
                raise ProviderStalledError(
                    self.provider, f"provider did not take audio for {timeout:g} s") from None
            return True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if not ws.receiving:
                self._take(ws.poll())  # the server's close may be waiting to be read
            self._connection_closed(ws.closed or CloseReason(1006, ""))
            self._raise_closed()
            return None

    def _take(self, messages: list[str | bytes]) -> None:
        """Messages read from the socket, through the codec, into the event queue."""
        receive, events = self.codec.receive, self._events
        for message in messages:
            events.extend(receive(message))

    async def _write_quietly(self, data: bytes) -> None:
        """Best effort, the caller holding the send lock: ``data`` (and any control frame
        owed) unless a write was cut half way; a broken stream or a peer that does not
        read for ``send_timeout`` ends the attempt."""
        ws = self._ws
        if not ws.stream.intact or not (data or ws.owes):
            return
        try:
            await ws.write(data, self._send_timeout)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass

    def _raise_closed(self) -> None:
        """A send found the socket closed: raise what the codec made of the close (nothing
        when it was the end of a finalized session: the rest is not needed)."""
        if self._close_error is not None:
            raise self._close_error

    def _connection_closed(self, reason: CloseReason) -> None:
        """The socket is closed: ask the codec what that means, once, for both sides."""
        if self._closed is not None:
            return
        code, text = reason.code, reason.reason
        events = self.codec.connection_closed(code, text)
        self._closed = next((e for e in events if isinstance(e, ProviderClosed)), ProviderClosed(code, text))
        self._events.extend(e for e in events if not isinstance(e, ProviderClosed))
        failure = next((e.error for e in events if isinstance(e, ProviderFailed)), None)
        if failure is None and not any(isinstance(e, Finalized) for e in events):
            failure = error_for_close_code(self.provider, code, text)
        self._close_error = failure

    async def receive(self) -> ProviderEvent:
        ws = self._ws
        while not self._events:
            if self._closed is not None:
                return self._closed
            if ws.closed is not None:  # seen by a send's read
                self._connection_closed(ws.closed)
                continue
            with trio.CancelScope() as waiting:  # ws.receive is cancel-safe: nothing is lost
                self._waiting = waiting
                try:
                    messages = await ws.receive()
                except ConnectionClosed as exc:
                    self._connection_closed(exc.reason)
                    await self._reply_to_close()
                    continue
                finally:
                    self._waiting = None
            if waiting.cancelled_caught:
                continue
            self._take(messages)
            if ws.closed is not None:  # the close came with these messages: they go first
                self._connection_closed(ws.closed)
                await self._reply_to_close()
            else:
                await self._flush(receiving=True)  # a reply the codec owes (e.g. session.update), a pong
        return self._events.popleft()

    async def _reply_to_close(self) -> None:
        """Our side of the close the server began (or of a violation it made)."""
        ws = self._ws
        if ws.owes:
            async with ws.send_lock:
                await self._write_quietly(b"")

    async def end(self) -> None:
        """End the session as its vendor expects, whatever cut it short: the codec's
        end-of-stream messages if ``finalize`` never ran (or never got them out), then a
        close handshake with 1000 (our close frame, then the server's, what comes
        between unread).  The session's users must be gone (sender and receiver
        returned or cancelled).  Unbounded: the caller bounds it.

        Not sent: audio the codec still holds from a send cut short (its batch was not
        accepted, so the call counts it as dropped), and anything at all once a write
        was cut half way (the peer may hold part of a frame) or the socket is closed."""
        ws = self._ws
        if ws.closed is not None or self._closed is not None:
            return
        if not ws.stream.intact:
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
        messages = codec.data_to_send()
        try:
            async with ws.send_lock:
                await ws.write(b"".join(map(ws.frame, messages)) + ws.close_frame(1000), None)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        self.messages_sent += len(messages)
        self.bytes_sent += sum(map(len, messages))
        while True:  # the server's close frame (or end of file) ends the handshake
            try:
                await ws.receive()
            except ConnectionClosed:
                return


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
            ws = await stack.enter_async_context(open_client_websocket(
                url, encoded, connect_timeout=connect_timeout, ssl_context=ssl_context,
                max_message_size=MAX_MESSAGE_SIZE))
        except HandshakeRejected as exc:
            body = exc.body[:200].decode("utf-8", "replace").strip()
            raise error_for_http_status(provider, exc.status_code, body) from None
        except ConnectTimeout:
            raise ProviderConnectionError(provider, f"no answer within {connect_timeout:g} s") from None
        except (HandshakeError, OSError) as exc:
            raise ProviderConnectionError(provider, f"could not connect: {type(exc).__name__}: {exc}") from None
        session = WebSocketSession(provider, codec, ws, send_timeout)
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
