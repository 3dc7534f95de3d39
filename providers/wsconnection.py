"""A provider WebSocket, client side, with no task of its own: frames written straight
to the stream by the sender, frames read by whoever calls ``receive``.

A general WebSocket library costs a provider session, per call: a reader task, a
message channel and the library's state, and, per 100 ms batch, an event object, a
lock, a stream lock and two passes of trio's run loop before the bytes reach the
kernel.  Here a batch is one masked frame (``providers.wsframes.client_frame``) and one
non-blocking write; the session's receive side reads the socket itself.

The parts:

* ``client_handshake``: the upgrade over a stream we opened (h11 for the HTTP, our own
  key check), the bytes that came after the ``101`` kept for the frame reader;
* ``ClientWebSocket.write``: frames out, after any control frame owed the server (a
  pong, the reply to its close);
* ``ClientWebSocket.receive``: one read, its complete data messages out (pings
  answered, a close or a protocol violation turned into ``closed``);
* ``ClientWebSocket.poll``: what the socket already holds, read by the send side when
  nobody is in ``receive`` (so that a send still sees the server's close).

Closing is the caller's: ``closed`` says the connection is over for frames (a close
frame received, a violation, end of file); the stream is closed by whoever opened it.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import h11
import trio

from .wsframes import (
    CloseReceived,
    ClientFrameReader,
    Ping,
    WebSocketError,
    accept_key,
    client_close_frame,
    client_frame,
    OP_BINARY,
    OP_PONG,
    OP_TEXT,
)

if TYPE_CHECKING:
    from .wsclient import WatchedStream  # the stream wrapper lives with the connect code

__all__ = [
    "CloseReason",
    "ConnectionClosed",
    "HandshakeError",
    "HandshakeRejected",
    "ClientWebSocket",
    "client_handshake",
    "READ_SIZE",
]

READ_SIZE = 16384  # bytes per read: a provider's messages are small JSON texts
MAX_REJECTION_BODY = 4096  # bytes of a refusal's body kept for the error message


@attrs.frozen
class CloseReason:
    """Why the connection is over: the server's close code (1005: its frame had none),
    the code we closed with after a protocol violation, or 1006 (no close frame: end of
    file, a broken stream)."""

    code: int
    reason: str


class ConnectionClosed(Exception):
    """The connection is over (``reason``); nothing more can be sent or received."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(f"WebSocket closed: {reason.code} {reason.reason}")
        self.reason = reason


class HandshakeError(Exception):
    """The server's answer to the upgrade was not a WebSocket: malformed HTTP, a wrong
    accept key, a subprotocol or extension we did not ask for, or no answer at all."""


class HandshakeRejected(HandshakeError):
    """The server answered the upgrade with an HTTP status (``status_code``,
    ``headers``, the first ``MAX_REJECTION_BODY`` bytes of ``body``)."""

    def __init__(self, status_code: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"the server refused the upgrade with HTTP {status_code}")
        self.status_code = status_code
        self.headers = headers
        self.body = body


class ClientWebSocket:
    """One open provider WebSocket over ``stream``.

    ``send_lock`` serialises writers: hold it around the writes (the session's send side
    holds it across one batch's messages, so that a reply never lands between them).
    ``receive`` is for one task at a time; ``receiving`` says one is waiting in it.
    ``closed``: None while open, then why it closed.
    """

    def __init__(self, stream: WatchedStream, *, max_message_bytes: int, received: bytes = b"") -> None:
        self.stream = stream
        self.send_lock = trio.Lock()
        self.closed: CloseReason | None = None
        self.receiving = False
        self._reader = ClientFrameReader(max_message_bytes)
        self._received = received  # came with the handshake's answer, not parsed yet
        self._owed = b""  # control frames owed the server, written before anything else
        self._close_sent = False

    @property
    def owes(self) -> bool:
        """Control frames wait to be written (a pong, the reply to a close)."""
        return bool(self._owed)

    # ------------------------------------------------------------------ writing

    def write_nowait(self, data: bytes) -> memoryview | None:
        """Write ``data`` (whole frames), after any control frame owed, as far as the
        kernel takes it now; returns the rest, which must go out next with
        ``send_rest`` (None: all written).  The caller holds ``send_lock``.  Raises
        ``trio.BrokenResourceError`` when the connection is broken."""
        if self._owed:
            data, self._owed = self._owed + data, b""
        if not data:
            return None
        sent = self.stream.write_nowait(data)
        return None if sent == len(data) else memoryview(data)[sent:]

    async def send_rest(self, rest: memoryview, timeout: float | None) -> None:
        """The rest of a ``write_nowait``, waiting for the kernel's buffer, for at most
        ``timeout`` seconds (``trio.TooSlowError``; None: the caller's deadline bounds
        it).  Cut by a cancellation or the timeout once a byte may have gone out, the
        stream is no longer ``intact``: the peer may hold part of a frame."""
        continuing = len(rest) < len(rest.obj)  # type: ignore[arg-type]
        if timeout is None:
            await self.stream.send_all(rest, continuing=continuing)
        else:
            with trio.fail_after(timeout):
                await self.stream.send_all(rest, continuing=continuing)

    async def write(self, data: bytes, timeout: float | None) -> None:
        """``write_nowait`` then ``send_rest`` (what a cancellation already due stops
        before a byte is written)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        rest = self.write_nowait(data)
        if rest is not None:
            await self.send_rest(rest, timeout)

    @staticmethod
    def frame(message: str | bytes) -> bytes:
        """A data message as one masked frame."""
        if isinstance(message, str):
            return client_frame(OP_TEXT, message.encode())
        return client_frame(OP_BINARY, message)

    def close_frame(self, code: int) -> bytes:
        """Our close frame (once: b"" if one was sent or owed already)."""
        if self._close_sent:
            return b""
        self._close_sent = True
        return client_close_frame(code)

    # ------------------------------------------------------------------ reading

    async def receive(self) -> list[str | bytes]:
        """One read of the stream; the data messages it completed, in order (possibly
        none).  A ping gets its pong owed, the server's close its reply owed (both
        written by the next ``write``); a protocol violation is answered with a close
        frame of its code.  Raises ``ConnectionClosed`` once ``closed`` is set (the
        messages before a close come out first).  Cancel-safe: nothing read is lost."""
        if self.closed is not None:
            raise ConnectionClosed(self.closed)
        if self._received:
            data, self._received = self._received, b""
        else:
            self.receiving = True
            try:
                data = await self.stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            finally:
                self.receiving = False
        messages = self._absorb(data)
        if not messages and self.closed is not None:
            raise ConnectionClosed(self.closed)
        return messages

    def poll(self) -> list[str | bytes]:
        """What the socket already holds, without waiting, when no task is in
        ``receive``: its data messages, as ``receive`` would give them (a close the
        server sent sets ``closed``).  Nothing on a stream that is not a plain socket."""
        if self.receiving or self.closed is not None:
            return []
        if self._received:
            data, self._received = self._received, b""
            return self._absorb(data)
        data = self.stream.read_nowait(READ_SIZE)
        return [] if data is None else self._absorb(data)

    def _absorb(self, data: bytes) -> list[str | bytes]:
        if not data:
            self._close(CloseReason(1006, ""))
            return []
        violation: WebSocketError | None = None
        try:
            items = self._reader.receive_data(data)
        except WebSocketError as exc:
            items, violation = exc.messages, exc
        messages: list[str | bytes] = []
        for item in items:
            if isinstance(item, str | bytes):
                messages.append(item)
            elif isinstance(item, Ping):
                if not self._close_sent:
                    self._owed += client_frame(OP_PONG, item.payload)
            elif isinstance(item, CloseReceived):
                self._owed += self.close_frame(item.code)
                self._close(CloseReason(item.code, item.reason))
                return messages
            # a Pong answers nothing we sent: ignored
        if violation is not None:
            self._owed += self.close_frame(violation.close_code)
            self._close(CloseReason(violation.close_code, violation.detail))
        return messages

    def _close(self, reason: CloseReason) -> None:
        if self.closed is None:
            self.closed = reason


async def client_handshake(stream: WatchedStream, host: str, resource: str,
                           headers: Sequence[tuple[bytes, bytes]] = (), *,
                           max_message_bytes: int) -> ClientWebSocket:
    """The opening handshake over ``stream`` (unbounded: the caller bounds it): a GET
    with ``Host: host``, the upgrade headers and ``headers`` after them, for
    ``resource``.  Returns the open connection.  Raises ``HandshakeRejected`` (an HTTP
    status instead of 101), ``HandshakeError`` (anything else that is not a WebSocket
    answer), ``trio.BrokenResourceError``."""
    nonce = base64.b64encode(os.urandom(16))
    http = h11.Connection(h11.CLIENT)
    request = h11.Request(method=b"GET", target=resource.encode("ascii"), headers=[
        (b"Host", host.encode("idna")), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Key", nonce), (b"Sec-WebSocket-Version", b"13"), *headers])
    try:
        await stream.send_all(http.send(request) or b"")
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise HandshakeError(f"the connection broke during the upgrade: {exc}") from None
    rejected: HandshakeRejected | None = None
    while True:
        try:
            event = http.next_event()
        except h11.RemoteProtocolError as exc:
            raise HandshakeError(f"a malformed HTTP answer to the upgrade: {exc}") from None
        if event is h11.NEED_DATA:
            try:
                http.receive_data(await stream.receive_some(READ_SIZE))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise HandshakeError(f"the connection broke during the upgrade: {exc}") from None
        elif isinstance(event, h11.InformationalResponse):
            if event.status_code != 101:
                raise HandshakeRejected(event.status_code, list(event.headers), b"")
            _check_accept(list(event.headers), nonce)
            return ClientWebSocket(stream, max_message_bytes=max_message_bytes, received=http.trailing_data[0])
        elif isinstance(event, h11.Response):
            rejected = HandshakeRejected(event.status_code, list(event.headers), b"")
        elif isinstance(event, h11.Data) and rejected is not None:
            rejected.body = (rejected.body + bytes(event.data))[:MAX_REJECTION_BODY]
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed) or event is h11.PAUSED:
            if rejected is not None:
                raise rejected
            raise HandshakeError("the server closed the connection without answering the upgrade")


def _check_accept(headers: list[tuple[bytes, bytes]], nonce: bytes) -> None:
    """A 101 must be a WebSocket answer to our key, with nothing we did not ask for."""
    found: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        found.setdefault(name.lower(), []).append(value)
    tokens = [t.strip().lower() for v in found.get(b"connection", []) for t in v.split(b",")]
    if b"upgrade" not in tokens:
        raise HandshakeError("the 101 answer has no 'Connection: Upgrade'")
    if [v.lower() for v in found.get(b"upgrade", [])] != [b"websocket"]:
        raise HandshakeError("the 101 answer has no 'Upgrade: websocket'")
    if found.get(b"sec-websocket-accept") != [accept_key(nonce)]:
        raise HandshakeError("the 101 answer has a wrong Sec-WebSocket-Accept")
    if found.get(b"sec-websocket-protocol"):
        raise HandshakeError("the server chose a subprotocol we did not offer")
    if any(v.strip() for v in found.get(b"sec-websocket-extensions", [])):
        raise HandshakeError("the server chose an extension we did not offer")
