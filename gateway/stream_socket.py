"""The Twilio stream's own socket: an upgraded connection read without a framework.

```
socket ──bytes──▶ ServerFrameReader ──text──▶ SocketTextSource.receive() ──▶ TwilioReader
   ▲                     │ ping / close
   └── pong / close ◀────┘
```

``SocketTextSource`` is the call's ``TextSource`` (what TwilioReader reads).  It reads
as much as the kernel holds in one ``recv`` and hands out the messages one by one, so a
loaded gateway pays one wake-up for many frames.  It also takes the reader's hint (``expect``: how many more messages
make the next batch) and, on a plain TCP socket, sets ``SO_RCVLOWAT`` so that the
kernel wakes it once that much has arrived: one wake-up per batch instead of one per
20 ms frame.  A stream that goes quiet before the mark is reached (the last frames, a
``stop``, a pause) is read anyway after ``expect``'s worth of audio time plus slack, so
the mark never holds a message back for long.

``SocketStreamUpgrade`` is the endpoint's view of one upgrade (a
``gateway.stream_endpoint.StreamUpgrade``): answer it (``deny`` with an HTTP status,
``accept`` with 101), then ``close`` with the code the call ended with.
"""

from __future__ import annotations

import errno
import socket
from collections import deque

import trio

from providers.twilio import TwilioProtocolError

from providers.wsframes import (
    CloseReceived,
    Ping,
    ServerFrameReader,
    WebSocketError,
    close_frame,
    handshake_response,
    http_response,
    pong_frame,
)

__all__ = ["SocketStreamUpgrade", "SocketTransport", "SocketTextSource", "StreamTransport"]

RECV_BYTES = 64 * 1024
SEND_TIMEOUT = 5.0  # seconds for a control frame or an HTTP answer to leave
CLOSE_TIMEOUT = 2.0  # seconds to wait for the peer's close frame after ours
FRAME_SECONDS = 0.020  # Twilio's media pacing
MARK_SLACK = 0.030  # how late a frame may be before a read stops waiting for the mark
_SO_RCVLOWAT = getattr(socket, "SO_RCVLOWAT", None)
_GONE = (errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT, errno.ENOTCONN, errno.ESHUTDOWN)


class SocketTransport:
    """A plain accepted TCP socket (non-blocking), read with ``SO_RCVLOWAT`` batching."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.batching = _SO_RCVLOWAT is not None
        self._lowat = 1

    def _set_lowat(self, mark: int) -> None:
        if mark != self._lowat:
            self.socket.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, mark)  # type: ignore[arg-type]
            self._lowat = mark

    async def receive_some(self, mark: int = 1, patience: float = 0.0) -> bytes:
        """Bytes that arrived (b"" once the peer is gone).  With ``mark`` > 1, waits up
        to ``patience`` seconds for that many bytes before taking what is there."""
        sock = self.socket
        if mark > 1 and self.batching:
            self._set_lowat(mark)
            with trio.move_on_after(patience):
                await trio.lowlevel.wait_readable(sock)
        else:
            if self._lowat != 1:
                self._set_lowat(1)
            # Always through the scheduler, even with bytes waiting: a peer that floods
            # the socket must not keep this call's reader from yielding to the others.
            await trio.lowlevel.wait_readable(sock)
        while True:
            try:
                return sock.recv(RECV_BYTES)
            except BlockingIOError:
                self._set_lowat(1)  # the mark was not reached in time: wake on any byte
                await trio.lowlevel.wait_readable(sock)
            except OSError as exc:
                if exc.errno in _GONE:
                    return b""
                raise

    async def send_all(self, data: bytes) -> bool:
        """Send ``data``; False when the peer is gone or does not read it in time."""
        view = memoryview(data)
        with trio.move_on_after(SEND_TIMEOUT):
            while view:
                try:
                    view = view[self.socket.send(view):]
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self.socket)
                except OSError:
                    return False
            return True
        return False

    async def aclose(self) -> None:
        self.socket.close()
        await trio.lowlevel.checkpoint()

    def peer_and_local(self) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
        return _address(self.socket.getpeername), _address(self.socket.getsockname)


class StreamTransport:
    """Any trio stream (TLS: ``trio.SSLStream``); no read batching."""

    batching = False

    def __init__(self, stream: trio.abc.Stream, sock: socket.socket | None = None) -> None:
        self.stream = stream
        self._sock = sock

    async def receive_some(self, mark: int = 1, patience: float = 0.0) -> bytes:
        try:
            return bytes(await self.stream.receive_some(RECV_BYTES))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    async def send_all(self, data: bytes) -> bool:
        with trio.move_on_after(SEND_TIMEOUT):
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
            return True
        return False

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

    def peer_and_local(self) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
        if self._sock is None:
            return None, None
        return _address(self._sock.getpeername), _address(self._sock.getsockname)


Transport = SocketTransport | StreamTransport


def _address(get: object) -> tuple[str, int] | None:
    try:
        address = get()  # type: ignore[operator]
    except OSError:
        return None
    return (str(address[0]), int(address[1])) if isinstance(address, tuple) else None


class SocketTextSource:
    """``TextSource`` over an upgraded connection: the text messages in order;
    ``trio.EndOfChannel`` once the peer closed or went away; ``TwilioProtocolError`` for a
    binary message or a protocol violation (``error`` then holds the close code).
    Answers pings and the peer's close frame itself."""

    def __init__(self, transport: Transport, reader: ServerFrameReader, early: bytes = b"") -> None:
        self._transport = transport
        self._reader = reader
        self._ready: deque[str | bytes] = deque()
        self._wanted = 1
        self.peer_closed: CloseReceived | None = None
        self.close_sent = False  # our close frame left: after it, no frame of ours (RFC 6455 §5.5.1)
        self.disconnected = False  # the peer closed or went away: nothing more will come
        self.error: WebSocketError | None = None
        self._early = early

    def expect(self, messages: int) -> None:
        """The reader needs ``messages`` more messages before it has work to do."""
        self._wanted = messages

    async def receive(self) -> str:
        ready = self._ready
        while not ready:
            if self.error is not None:
                raise TwilioProtocolError(f"WebSocket: {self.error.detail}", field=None)
            if self.disconnected:
                raise trio.EndOfChannel
            await self._fill()
        message = ready.popleft()
        if type(message) is not str:
            raise TwilioProtocolError("Twilio sends text frames only; got a binary frame", field=None)
        self._wanted -= 1
        return message

    async def _fill(self) -> None:
        if self._early:
            data, self._early = self._early, b""
        else:
            frame = self._reader.last_frame_bytes
            need = self._wanted
            if need > 1 and frame and self._transport.batching:
                mark = (2 * need - 1) * frame // 2 - self._reader.buffered
                data = await self._transport.receive_some(mark, need * FRAME_SECONDS + MARK_SLACK)
            else:
                data = await self._transport.receive_some()
        if not data:
            self.disconnected = True
            return
        try:
            messages = self._reader.receive_data(data)
        except WebSocketError as exc:  # what came before it still counts; then the error
            self.error, self.disconnected = exc, True
            messages = exc.messages
        for message in messages:
            kind = type(message)
            if kind is str or kind is bytes:
                self._ready.append(message)  # type: ignore[arg-type]
            elif kind is Ping:
                if not self.close_sent:  # a ping that crossed our close goes unanswered
                    await self._transport.send_all(pong_frame(message.payload))  # type: ignore[union-attr]
            elif kind is CloseReceived:
                self.peer_closed, self.disconnected = message, True  # type: ignore[assignment]
                if not self.close_sent:  # the peer closed first: answer; else this is its answer to ours
                    code = 1000 if message.code == 1005 else message.code  # type: ignore[union-attr]
                    await self.send_close(code)
                return  # nothing after a close frame counts

    async def send_close(self, code: int, reason: str = "") -> bool:
        """Send our close frame (once: later calls send nothing and return False)."""
        if self.close_sent:
            return False
        self.close_sent = True
        return await self._transport.send_all(close_frame(code, reason))

    async def wait_for_close(self) -> None:
        """After our close frame: read until the peer's close frame or the end."""
        while not self.disconnected:
            await self._fill()
            self._ready.clear()


class SocketStreamUpgrade:
    """One ``/twilio/stream`` upgrade on our own socket (see ``TwilioStreamEndpoint``)."""

    def __init__(self, transport: Transport, key: bytes, max_message_bytes: int, early: bytes = b"") -> None:
        self._transport = transport
        self._key = key
        self._source = SocketTextSource(transport, ServerFrameReader(max_message_bytes), early)
        self._accepted = False

    async def deny(self, status: int, body: str) -> None:
        await self._transport.send_all(http_response(status, body))

    async def accept(self) -> SocketTextSource:
        self._accepted = await self._transport.send_all(handshake_response(self._key))
        if not self._accepted:
            self._source.disconnected = True
        return self._source

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code`` (a protocol violation's own code wins); wait a moment for
        the peer's answer unless it closed first."""
        source = self._source
        if not self._accepted or source.peer_closed is not None:
            return  # never upgraded, or the peer's close was answered already (SocketTextSource._fill)
        if source.disconnected and source.error is None:
            return  # the connection is gone: nothing to say
        if source.error is not None:
            code, reason = source.error.close_code, source.error.detail
        with trio.CancelScope(shield=True):
            if await source.send_close(code, reason) and source.error is None:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await source.wait_for_close()
