"""The gateway's listening sockets: Twilio's stream on our own socket, the rest to Hypercorn.

```
accept ─▶ read the request head ─┬─ GET /twilio/stream + Upgrade ─▶ SocketStreamUpgrade ─▶ TwilioStreamEndpoint
                                 └─ anything else ─▶ Hypercorn's TCPServer (the head replayed first)
```

A Media Stream is 50 small frames a second for the whole call; Hypercorn's WebSocket
layer spends more CPU per frame (h11/wsproto events, an ASGI message, a second task)
than the rest of the call does.  So the edge looks at each new connection's first
request: a WebSocket upgrade of ``/twilio/stream`` is answered here and its frames are
parsed by ``providers.wsframes``; every other request, and every byte of it, goes to
Hypercorn unchanged (webhooks, health, a keep-alive connection's later requests).
Lifespan, TLS (``--certfile``), graceful shutdown and the log lines are Hypercorn's.

This uses Hypercorn's trio ``TCPServer``, ``Lifespan`` and ``WorkerContext`` the way
its own ``worker_serve`` does (Hypercorn 0.18; pinned in pyproject.toml).
"""

from __future__ import annotations

import binascii
import logging
import math
import re
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

from .stream_socket import SocketStreamUpgrade, SocketTransport, StreamTransport, Transport
from providers.wsframes import http_response

__all__ = ["serve_edge", "parse_stream_upgrade", "head_end", "UpgradeRequest"]

log = logging.getLogger("earpiece.gateway")

MAX_HEAD = 16 * 1024  # bytes of request line + headers; h11's (and so Hypercorn's) limit
HEAD_TIMEOUT = 10.0  # seconds for a new connection's whole request head to arrive
ACCEPT_ERRORS_PAUSE = 0.1  # seconds to back off when accept fails for lack of resources
ACCEPT_ERRORS_LOG_INTERVAL = 10.0  # seconds between two "accept failed" lines
# The blank line that ends a head, as h11 (so Hypercorn) finds it: CRLF or a bare LF.
_HEAD_END = re.compile(rb"\n\r?\n")
#: seconds a peer may leave what we sent unacknowledged, or its receive window shut,
#: before the kernel aborts the connection: Hypercorn's sends are shielded from
#: cancellation, so a live-events reader that stops reading would otherwise hold its
#: task, and the gateway's shutdown, for as long as it stays connected
PEER_STALL_TIMEOUT = 30.0


class UpgradeRequest:
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


def parse_stream_upgrade(head: bytes, stream_path: str) -> UpgradeRequest | None:
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
    upgrade = UpgradeRequest(request.target, [(bytes(k), bytes(v)) for k, v in request.headers])
    if b"websocket" not in _tokens(upgrade.header(b"upgrade")) or b"upgrade" not in _tokens(
            upgrade.header(b"connection")):
        return None
    return upgrade


def head_end(data: bytes | bytearray, start: int = 0) -> int | None:
    """Where the request head in ``data`` ends (just past its blank line), looking from
    ``start``; None while it has not ended."""
    match = _HEAD_END.search(data, start)
    return match.end() if match else None


class _ShieldedSends:
    """The ASGI app, its HTTP ``send`` calls shielded from the app's own cancellation.

    Why: Hypercorn re-arms a keep-alive connection's idle timer (``keep_alive_timeout``)
    inside the response's last ``send``, in the app's task: that ``send`` tells the app
    ``http.disconnect`` and then restarts the timer.  quart-trio cancels the request's
    nursery as soon as it reads that ``http.disconnect``, so the restart, one checkpoint
    later, died of the cancellation and an idle kept-alive connection was never closed.
    Shielded, the ``send`` finishes and the timer runs.  Hypercorn shields the socket
    write inside that ``send`` already: this adds no new way to wait.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any, sync_spawn: Any, call_soon: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send, sync_spawn, call_soon)
            return

        async def shielded_send(message: Any) -> None:
            with trio.CancelScope(shield=True):
                await send(message)

        await self.app(scope, receive, shielded_send, sync_spawn, call_soon)


class AcceptFailures:
    """``accept`` errors as log lines: the first at once, then at most one line per
    ``interval`` with the count of those it stands for, so running out of file
    descriptors is seen without flooding the log."""

    def __init__(self, interval: float = ACCEPT_ERRORS_LOG_INTERVAL) -> None:
        self.interval = interval
        self.total = 0
        self._unlogged = 0
        self._error = ""
        self._next_line = -math.inf

    def failed(self, exc: OSError) -> None:
        self.total += 1
        self._unlogged += 1
        self._error = exc.strerror or str(exc)
        now = trio.current_time()
        if now < self._next_line:
            return
        if self._unlogged == 1:
            log.warning("accept failed: %s (more failures are counted, one line per %g s at most)",
                        self._error, self.interval)
        else:
            log.warning("accept failed %d times since the last line: %s", self._unlogged, self._error)
        self._unlogged, self._next_line = 0, now + self.interval

    @property
    def due(self) -> float:
        """When failures not logged yet are to be reported (``flush``); inf: none are."""
        return self._next_line if self._unlogged else math.inf

    def flush(self) -> None:
        """Report the failures not logged yet, once their line is due: the count of the
        last burst is never lost, even when accepting works again."""
        if self._unlogged and trio.current_time() >= self._next_line:
            log.warning("accept failed %d times since the last line: %s", self._unlogged, self._error)
            self._unlogged, self._next_line = 0, trio.current_time() + self.interval


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
        self.app = _ShieldedSends(wrap_app(gateway, config.wsgi_max_body_size, "asgi"))
        self.lifespan_state: dict[str, Any] = {}
        self.context = WorkerContext(None)
        self.accept_failures = AcceptFailures()

    async def accept_loop(self, listener: socket.socket, ssl_context: ssl.SSLContext | None,
                          connections: trio.Nursery) -> None:
        failures = self.accept_failures
        while True:
            with trio.move_on_at(failures.due):
                await trio.lowlevel.wait_readable(listener)
            failures.flush()
            while True:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:  # out of file descriptors or memory: back off, keep serving
                    failures.failed(exc)
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
            head, end = await self._read_head(transport)
            if not head:
                return
            upgrade = parse_stream_upgrade(head[:end], self.stream_path) if end is not None else None
            if upgrade is None:
                if trio_stream is None:
                    trio_stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
                state = ConnectionState(self.lifespan_state.copy())
                transport = StreamTransport(trio_stream)  # Hypercorn closes it; so may we, again
                await TCPServer(self.app, self.config, self.context, state, _ReplayedStream(trio_stream, head)).run()
                return
            early = head[end:] if end is not None else b""  # frames sent right behind the upgrade
            await self._serve_stream(transport, upgrade, early, tls=ssl_context is not None)
        except Exception:  # a bug must cost this connection only, never the process and its calls
            log.exception("a connection failed")
        finally:
            await transport.aclose()

    async def _read_head(self, transport: Transport) -> tuple[bytes, int | None]:
        """The connection's first bytes through the end of the request head, and where
        the head ends (None: it did not; Hypercorn answers a head over ``MAX_HEAD`` or
        cut by the peer).  ``HEAD_TIMEOUT`` is the one deadline for the whole head: a
        head not complete by then gets ``b""`` (the connection is closed), not a second
        wait inside Hypercorn."""
        head = bytearray()
        with trio.move_on_after(HEAD_TIMEOUT):
            while len(head) <= MAX_HEAD:
                data = await transport.receive_some()
                if not data:
                    return bytes(head), None
                searched = max(0, len(head) - 2)  # a blank line may straddle two reads
                head += data
                end = head_end(head, searched)
                if end is not None:
                    return bytes(head), end
            return bytes(head), None
        return b"", None

    async def _serve_stream(self, transport: Transport, upgrade: UpgradeRequest, early: bytes, *, tls: bool) -> None:
        refusal = upgrade.refusal()
        if refusal is not None:
            status, body, headers = refusal
            log.warning("refused a media stream upgrade: %s", body.strip())
            await transport.send_all(http_response(status, body, headers))
            return
        client, server = transport.peer_and_local()
        scope = upgrade.scope("wss" if tls else "ws", client, server)
        stream_upgrade = SocketStreamUpgrade(transport, upgrade.header(b"sec-websocket-key"),
                                             self.gateway.settings.max_message_bytes, early)
        await self.gateway.stream_endpoint.serve(scope, stream_upgrade)


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
