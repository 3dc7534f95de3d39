"""The gateway's listening sockets: Twilio's stream on our own socket, the rest to Hypercorn.

```
accept ─▶ read the request head ─┬─ GET /twilio/stream + Upgrade ─▶ RawStreamDoor ─▶ TwilioStreamEndpoint
                                 └─ anything else ─▶ Hypercorn's TCPServer (the head replayed first)
```

A Media Stream is 50 small frames a second for the whole call; Hypercorn's WebSocket
layer spends more CPU per frame (h11/wsproto events, an ASGI message, a second task)
than the rest of the call does.  So the edge looks at each new connection's first
request: a WebSocket upgrade of ``/twilio/stream`` is answered here and its frames are
parsed by ``gateway.wsframes``; every other request, and every byte of it, goes to
Hypercorn unchanged (webhooks, health, a keep-alive connection's later requests).
Lifespan, TLS (``--certfile``), graceful shutdown and the log lines are Hypercorn's.

This uses Hypercorn's trio ``TCPServer``, ``Lifespan`` and ``WorkerContext`` the way
its own ``worker_serve`` does (Hypercorn 0.18; pinned in pyproject.toml).
"""

from __future__ import annotations

import binascii
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

from .stream_socket import RawStreamDoor, SocketTransport, StreamTransport, Transport
from .wsframes import http_response

__all__ = ["serve_edge", "parse_stream_upgrade", "StreamUpgrade"]

log = logging.getLogger("earpiece.gateway")

MAX_HEAD = 16 * 1024  # bytes of request line + headers; h11's (and so Hypercorn's) limit
HEAD_TIMEOUT = 10.0  # seconds for a new connection's request head to arrive
ACCEPT_ERRORS_PAUSE = 0.1  # seconds to back off when accept fails for lack of resources
#: seconds a peer may leave what we sent unacknowledged, or its receive window shut,
#: before the kernel aborts the connection: Hypercorn's sends are shielded from
#: cancellation, so a live-events reader that stops reading would otherwise hold its
#: task, and the gateway's shutdown, for as long as it stays connected
PEER_STALL_TIMEOUT = 30.0


class StreamUpgrade:
    """A WebSocket upgrade request for the stream path, parsed from its head."""

    def __init__(self, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        path, _, query = target.partition(b"?")
        self.raw_path = path
        self.query_string = query
        self.headers = headers

    def header(self, name: bytes) -> bytes:
        return b", ".join(value for key, value in self.headers if key == name)

    def refusal(self) -> tuple[int, str, tuple[tuple[str, str], ...]] | None:
        """What is wrong with the handshake itself (RFC 6455 §4.2.1), as an HTTP answer."""
        if self.header(b"sec-websocket-version").strip() != b"13":
            return 426, "WebSocket version 13 only\n", (("Sec-WebSocket-Version", "13"),)
        try:
            key_ok = len(binascii.a2b_base64(self.header(b"sec-websocket-key").strip(), strict_mode=True)) == 16
        except binascii.Error:
            key_ok = False
        if not key_ok:
            return 400, "bad request: Sec-WebSocket-Key must be 16 bytes in base64\n", ()
        return None

    def scope(self, scheme: str, client: tuple[str, int] | None, server: tuple[str, int] | None) -> dict[str, Any]:
        """The ASGI-shaped scope the endpoint and the signature check read."""
        return {"type": "websocket", "scheme": scheme, "http_version": "1.1", "root_path": "",
                "path": unquote(self.raw_path.decode("latin-1")), "raw_path": self.raw_path,
                "query_string": self.query_string, "headers": self.headers, "client": client,
                "server": server, "subprotocols": []}


def _tokens(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",")}


def parse_stream_upgrade(head: bytes, stream_path: str) -> StreamUpgrade | None:
    """The upgrade in ``head`` (request line + headers + blank line) when it is a GET of
    ``stream_path`` asking for a WebSocket; None for anything else (or anything h11 would
    not accept: Hypercorn then answers it)."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    try:
        connection.receive_data(head)
        request = connection.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(request, h11.Request) or request.method != b"GET" or request.http_version != b"1.1":
        return None
    if request.target.partition(b"?")[0].rstrip(b"/") != stream_path.encode():
        return None
    upgrade = StreamUpgrade(request.target, [(bytes(k), bytes(v)) for k, v in request.headers])
    if b"websocket" not in _tokens(upgrade.header(b"upgrade")) or b"upgrade" not in _tokens(
            upgrade.header(b"connection")):
        return None
    return upgrade


class _ReplayedStream(trio.abc.HalfCloseableStream):
    """A stream whose first bytes were already read: they come out again first.
    Everything else (``socket``, ``do_handshake``, ``transport_stream`` ...) is the
    wrapped stream's, so Hypercorn sees the connection as it is."""

    def __init__(self, stream: trio.abc.Stream, head: bytes) -> None:
        self._stream = stream
        self._head = head

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._head:
            data, self._head = self._head, b""
            await trio.lowlevel.checkpoint()
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()  # type: ignore[attr-defined]  # AttributeError for TLS, as Hypercorn expects

    async def aclose(self) -> None:
        await self._stream.aclose()


class Edge:
    """Routes each accepted connection (see the module docstring)."""

    def __init__(self, gateway: Any, config: HypercornConfig, stream_path: str) -> None:
        self.gateway = gateway
        self.config = config
        self.stream_path = stream_path
        self.app = wrap_app(gateway, config.wsgi_max_body_size, "asgi")
        self.lifespan_state: dict[str, Any] = {}
        self.context = WorkerContext(None)

    async def accept_loop(self, listener: socket.socket, ssl_context: ssl.SSLContext | None,
                          connections: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener)
            while True:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:  # out of file descriptors or memory: back off, keep serving
                    log.warning("accept failed: %s", exc.strerror or exc)
                    await trio.sleep(ACCEPT_ERRORS_PAUSE)
                    break
                sock.setblocking(False)
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(PEER_STALL_TIMEOUT * 1000))
                connections.start_soon(self.handle, sock, ssl_context)

    async def handle(self, sock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        transport: Transport
        trio_stream: trio.abc.Stream | None = None
        if ssl_context is None:
            transport = SocketTransport(sock)
        else:
            trio_stream = trio.SSLStream(trio.SocketStream(trio.socket.from_stdlib_socket(sock)), ssl_context,
                                         server_side=True, https_compatible=True)
            transport = StreamTransport(trio_stream, sock)
        try:
            head = await self._read_head(transport)
            if not head:
                return
            end = head.find(b"\r\n\r\n") + 4
            upgrade = parse_stream_upgrade(head[:end], self.stream_path) if end >= 4 else None
            if upgrade is None:
                if trio_stream is None:
                    trio_stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
                state = ConnectionState(self.lifespan_state.copy())
                transport = StreamTransport(trio_stream)  # Hypercorn closes it; so may we, again
                await TCPServer(self.app, self.config, self.context, state, _ReplayedStream(trio_stream, head)).run()
                return
            await self._serve_stream(transport, upgrade, head[end:], tls=ssl_context is not None)
        except Exception:  # a bug must cost this connection only, never the process and its calls
            log.exception("a connection failed")
        finally:
            await transport.aclose()

    async def _read_head(self, transport: Transport) -> bytes:
        """The connection's first bytes, through the end of the request head (or as
        much as came within ``HEAD_TIMEOUT`` / ``MAX_HEAD``: Hypercorn judges those)."""
        head = b""
        with trio.move_on_after(HEAD_TIMEOUT):
            while b"\r\n\r\n" not in head and len(head) <= MAX_HEAD:
                data = await transport.receive_some()
                if not data:
                    break
                head += data
        return head

    async def _serve_stream(self, transport: Transport, upgrade: StreamUpgrade, early: bytes, *, tls: bool) -> None:
        refusal = upgrade.refusal()
        if refusal is not None:
            status, body, headers = refusal
            log.warning("refused a media stream upgrade: %s", body.strip())
            await transport.send_all(http_response(status, body, headers))
            return
        client, server = transport.peer_and_local()
        scope = upgrade.scope("wss" if tls else "ws", client, server)
        door = RawStreamDoor(transport, upgrade.header(b"sec-websocket-key"),
                             self.gateway.settings.max_message_bytes, early)
        await self.gateway.stream_endpoint.serve(scope, door)


async def serve_edge(
    gateway: Any,
    config: HypercornConfig,
    stream_path: str,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown_trigger`` returns, then give connections Hypercorn's
    ``graceful_timeout`` to finish.  Reports the bound URLs through ``task_status``."""
    edge = Edge(gateway, config, stream_path)
    lifespan = Lifespan(edge.app, config, edge.lifespan_state)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            sockets = config.create_sockets()
            ssl_context = config.create_ssl_context() if config.ssl_enabled else None
            listeners = [(sock, ssl_context) for sock in sockets.secure_sockets]
            listeners += [(sock, None) for sock in sockets.insecure_sockets]
            binds = []
            for sock, context in listeners:
                sock.listen(config.backlog)
                sock.setblocking(False)
                bind = f"{'https' if context else 'http'}://{repr_socket_addr(sock.family, sock.getsockname())}"
                binds.append(bind)
                await config.log.info(f"Running on {bind} (CTRL + C to quit)")
            task_status.started(binds)
            try:
                async with trio.open_nursery() as accepting:
                    for sock, context in listeners:
                        accepting.start_soon(edge.accept_loop, sock, context, connections)
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                for sock, _ in listeners:
                    sock.close()
                await edge.context.terminated.set()
                connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
