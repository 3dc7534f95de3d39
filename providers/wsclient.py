"""A client WebSocket whose TCP (or TLS) stream we open, watch and always close.

The stream is ours: opened with trio, upgraded by ``providers.wsconnection`` (no task,
no library state of its own), closed by us on every path.  Owning it also tells us
whether a write was cut half way (``WatchedStream.intact``), after which no frame may
follow on that socket, and lets a plain TCP stream be written and read without
waiting (``write_nowait``, ``read_nowait``: one system call, no pass of trio's run
loop), the way a batch of audio goes out.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import attrs
import trio

from .wsconnection import ClientWebSocket, client_handshake

__all__ = ["WatchedStream", "WebSocketTarget", "ConnectTimeout", "open_client_websocket", "MAX_MESSAGE_SIZE"]

MAX_MESSAGE_SIZE = 4 * 1024 * 1024  # the largest provider message we read (bytes)


class WatchedStream(trio.abc.Stream):
    """A stream that remembers whether a ``send_all`` was interrupted (cancelled, timed
    out, broken) after it may have written part of its data: the peer may then hold
    half a frame, and nothing more can be framed on this stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        self.intact = True

    def write_nowait(self, data: bytes | memoryview) -> int:
        """Write what the kernel takes now of ``data``, without waiting; returns how many
        bytes (0: none, or not a plain socket stream: then ``send_all`` does it all).
        Raises ``trio.BrokenResourceError`` when the connection is broken."""
        sock = self._socket
        if sock is None:
            return 0
        fd = sock.fileno()  # asked each time: -1 once the stream is closed (the number may be reused)
        if fd < 0:
            return 0  # send_all raises ClosedResourceError
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(f"the connection broke: {exc}") from exc

    def read_nowait(self, max_bytes: int) -> bytes | None:
        """What the socket holds, without waiting: None when nothing (or not a plain
        socket stream), b"" at end of file or on a broken connection."""
        sock = self._socket
        if sock is None or (fd := sock.fileno()) < 0:
            return None
        try:
            return os.read(fd, max_bytes)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    async def send_all(self, data: bytes | bytearray | memoryview, *, continuing: bool = False) -> None:
        """``continuing``: the rest of a write begun by ``write_nowait`` (a cancellation
        then cuts it, wherever it comes)."""
        # A cancellation already due raises here, before a byte is written: not a cut.
        if not continuing:
            await trio.lowlevel.checkpoint_if_cancelled()
        try:
            await self._stream.send_all(data)
        except BaseException:
            self.intact = False
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


@attrs.frozen
class WebSocketTarget:
    """Where a ``ws://`` / ``wss://`` URL points, split the way the handshake needs it."""

    secure: bool
    host: str
    port: int
    host_header: str
    resource: str

    @classmethod
    def from_url(cls, url: str) -> WebSocketTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError("a provider URL must be ws://HOST[:PORT]/PATH or wss://...")
        secure = parts.scheme == "wss"
        default_port = 443 if secure else 80
        port = parts.port or default_port
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default_port else f"{shown}:{port}"
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(secure, host, port, host_header, resource)


class ConnectTimeout(Exception):
    """No connection, or no handshake, within the connect timeout."""


@asynccontextmanager
async def open_client_websocket(
    url: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    connect_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    max_message_size: int = MAX_MESSAGE_SIZE,
) -> AsyncIterator[ClientWebSocket]:
    """Connect and complete the opening handshake within ``connect_timeout`` seconds,
    then yield the connection.  On exit the stream is closed (abruptly if the caller
    did not close the WebSocket first: closing it gracefully is the caller's choice,
    see ``WebSocketSession.end``).

    Raises, on entry: ``HandshakeRejected`` (the server answered the upgrade with an
    HTTP status; ``status_code``, ``body``), ``HandshakeError``, ``ConnectTimeout``,
    ``OSError`` (could not connect).  What the body raises comes out unchanged.
    """
    target = WebSocketTarget.from_url(url)
    deadline = trio.current_time() + connect_timeout
    stream = WatchedStream(await _connect(target, deadline, connect_timeout, ssl_context))
    try:
        ws: ClientWebSocket | None = None
        with trio.move_on_at(deadline):
            ws = await client_handshake(stream, target.host_header, target.resource, headers,
                                        max_message_bytes=max_message_size)
        if ws is None:
            raise ConnectTimeout(f"no WebSocket handshake within {connect_timeout:g} s")
        yield ws
    finally:
        await trio.aclose_forcefully(stream)


async def _connect(target: WebSocketTarget, deadline: float, connect_timeout: float,
                   ssl_context: ssl.SSLContext | None) -> trio.abc.Stream:
    """The TCP (and TLS) stream to ``target``, by ``deadline``; ``ConnectionTimeout`` otherwise."""
    if target.secure and ssl_context is None:
        ssl_context = ssl.create_default_context()
    raw: trio.abc.Stream | None = None
    with trio.move_on_at(deadline):
        if target.secure:
            raw = await trio.open_ssl_over_tcp_stream(
                target.host, target.port, ssl_context=ssl_context, https_compatible=True)
        else:
            raw = await trio.open_tcp_stream(target.host, target.port)
    if raw is None:
        raise ConnectTimeout(f"no connection within {connect_timeout:g} s")
    return raw
