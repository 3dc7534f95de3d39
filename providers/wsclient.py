"""A client WebSocket whose TCP (or TLS) stream we open, watch and always close.

trio-websocket's ``open_websocket_url`` owns its stream, and 0.12 leaves it open in
two cases (the server closed first: the client "waits for the server's TCP close";
a refused handshake: the error leaves its reader task with the stream still open),
reachable then only through private attributes.  Here the stream is ours: opened with
trio, handed to ``trio_websocket.wrap_client_stream`` (public API), closed by us on
every path.  Owning it also tells us what the library cannot: whether a write was cut
half way (``WatchedStream.intact``), after which no frame may follow on that socket.

Nothing here reaches into trio-websocket's private state;
``tests/providers/test_wsclient.py`` pins the library behaviour this relies on.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import attrs
import trio
import trio_websocket

__all__ = ["WatchedStream", "ClientWebSocket", "WebSocketTarget", "open_client_websocket"]


class WatchedStream(trio.abc.Stream):
    """A stream that remembers whether a ``send_all`` was interrupted (cancelled, timed
    out, broken) after it may have written part of its data: the peer may then hold
    half a frame, and nothing more can be framed on this stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self.intact = True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # A cancellation already due raises here, before a byte is written: not a cut.
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


@attrs.frozen
class ClientWebSocket:
    ws: trio_websocket.WebSocketConnection
    stream: WatchedStream


@asynccontextmanager
async def open_client_websocket(
    url: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    connect_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    max_message_size: int = 4 * 1024 * 1024,
    message_queue_size: int = 16,
) -> AsyncIterator[ClientWebSocket]:
    """Connect and complete the opening handshake within ``connect_timeout`` seconds,
    then yield the connection.  On exit the TCP stream is closed (abruptly if the
    caller did not close the WebSocket first: closing it gracefully is the caller's
    choice, see ``WebSocketSession.end``) and the library's reader task is stopped.

    Raises, on entry: ``trio_websocket.ConnectionRejected`` (the server answered the
    upgrade with an HTTP status; ``status_code``, ``body``),
    ``trio_websocket.ConnectionTimeout``, ``OSError`` (could not connect).  What the
    body raises comes out unchanged, never wrapped in an exception group.
    """
    target = WebSocketTarget.from_url(url)
    deadline = trio.current_time() + connect_timeout
    stream = WatchedStream(await _connect(target, deadline, connect_timeout, ssl_context))
    body_error: BaseException | None = None
    try:
        try:
            async with trio.open_nursery() as nursery:  # the library's reader task lives here
                ws: trio_websocket.WebSocketConnection | None = None
                with trio.move_on_at(deadline):
                    ws = await trio_websocket.wrap_client_stream(
                        nursery, stream, target.host_header, target.resource, extra_headers=list(headers),
                        message_queue_size=message_queue_size, max_message_size=max_message_size)
                if ws is None:
                    raise trio_websocket.ConnectionTimeout(f"no WebSocket handshake within {connect_timeout:g} s")
                try:
                    yield ClientWebSocket(ws, stream)
                except BaseException as exc:  # re-raised below, outside the nursery: never grouped
                    body_error = exc
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise _sole(group) from None
    finally:
        await trio.aclose_forcefully(stream)
    if body_error is not None:
        raise body_error


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
        raise trio_websocket.ConnectionTimeout(f"no connection within {connect_timeout:g} s")
    return raw


def _sole(group: BaseExceptionGroup) -> BaseException:
    """The handshake's failure out of the nursery's group (the reader task's
    ``ConnectionRejected``, or our timeout), preferring anything over ``Cancelled``."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return next((e for e in leaves if not isinstance(e, trio.Cancelled)), leaves[0])
