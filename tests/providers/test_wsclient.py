"""The provider socket's connection layer (``providers/wsclient.py``,
``providers/wsconnection.py``): connect, handshake, close, cut writes, TLS.

Raw servers (trio TCP + wsproto) on 127.0.0.1 play the server side byte for byte, so
that "the client closed its TCP stream" is something the server sees (end of file).
"""

from __future__ import annotations

import ast
import pathlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
import trio_websocket
import wsproto
import wsproto.events

from providers.assemblyai import AssemblyAICodec
from providers.errors import ProviderAuthError, ProviderConnectionError
from providers.events import ProviderClosed, ProviderEvent, SessionStarted
from providers.websocket import WebSocketSession, open_websocket_session
from providers.wsclient import WatchedStream, WebSocketTarget
from providers.wsconnection import client_handshake
from tests.fakes.assemblyai_server import AssemblyAIFake
from tests.helpers import tone
from tests.gateway.test_security_tls import certificate  # noqa: F401 - the self-signed certificate fixture

LIMIT = 30  # virtual seconds


class NullCodec:
    """Sends what it is given as text; hears nothing; a close is just the close."""

    def __init__(self) -> None:
        self._outbox: list[str | bytes] = []

    def send_audio(self, audio: bytes) -> None:
        self._outbox.append(audio.decode())

    def finalize(self) -> list[ProviderEvent] | None:
        self._outbox.append("end")
        return None

    def keepalive(self) -> None:
        return None

    def data_to_send(self) -> list[str | bytes]:
        out, self._outbox = self._outbox, []
        return out

    def receive(self, message: str | bytes) -> list[ProviderEvent]:
        return []

    def connection_closed(self, code: int, reason: str) -> list[ProviderEvent]:
        return []


class RawServer:
    """One connection at a time: ``script`` gets the accepted stream and a wsproto
    server connection; what it saw goes in ``seen``."""

    def __init__(self, script: Callable[[RawServer, trio.SocketStream, wsproto.WSConnection], Awaitable[None]]) -> None:
        self.script = script
        self.seen: list[str] = []
        self.done = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            await self.script(self, stream, wsproto.WSConnection(wsproto.ConnectionType.SERVER))
        finally:
            await trio.aclose_forcefully(stream)
            self.done.set()

    async def read_until_eof(self, stream: trio.SocketStream, ws: wsproto.WSConnection) -> None:
        """Record the client's frames until its TCP end of file."""
        while data := await stream.receive_some():
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, wsproto.events.CloseConnection):
                    self.seen.append(f"close {event.code}")
                elif isinstance(event, wsproto.events.TextMessage):
                    self.seen.append(f"text {event.data}")
        self.seen.append("eof")


async def _accept_request(stream: trio.SocketStream, ws: wsproto.WSConnection) -> None:
    while True:
        ws.receive_data(await stream.receive_some())
        if any(isinstance(e, wsproto.events.Request) for e in ws.events()):
            return


@asynccontextmanager
async def serve_raw(server: RawServer) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        yield f"ws://127.0.0.1:{listener.socket.getsockname()[1]}/v1/listen?x=1"
        nursery.cancel_scope.cancel()


async def test_the_client_closes_its_tcp_stream_after_the_server_closed_first(autojump_clock):
    """trio-websocket 0.12 leaves a client's stream open when the server closes first
    (it waits for the server's TCP close).  Ours is closed: the server sees the close
    reply, then end of file, without closing its side first."""

    async def script(server: RawServer, stream: trio.SocketStream, ws: wsproto.WSConnection) -> None:
        await _accept_request(stream, ws)
        await stream.send_all(ws.send(wsproto.events.AcceptConnection()))
        await stream.send_all(ws.send(wsproto.events.CloseConnection(code=3005, reason="bye")))
        await server.read_until_eof(stream, ws)

    server = RawServer(script)
    with trio.fail_after(LIMIT):
        async with serve_raw(server) as url:
            async with open_websocket_session("fake", NullCodec(), url) as session:
                assert await session.receive() == ProviderClosed(3005, "bye")
            await server.done.wait()
    assert server.seen == ["close 3005", "eof"]


async def test_a_refused_handshake_is_typed_and_its_stream_closed(autojump_clock):
    """The refusal comes out typed (status and body); the stream is ours to close, and
    is closed."""

    async def script(server: RawServer, stream: trio.SocketStream, ws: wsproto.WSConnection) -> None:
        await _accept_request(stream, ws)
        body = b'{"error":"Invalid API key"}'
        await stream.send_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        while await stream.receive_some():
            pass
        server.seen.append("eof")

    server = RawServer(script)
    with trio.fail_after(LIMIT):
        async with serve_raw(server) as url:
            with pytest.raises(ProviderAuthError, match='HTTP 401: {"error":"Invalid API key"}'):
                async with open_websocket_session("fake", NullCodec(), url):
                    pytest.fail("the handshake was refused")
            await server.done.wait()
    assert server.seen == ["eof"]


async def test_a_server_that_never_answers_the_upgrade_is_a_connection_timeout(autojump_clock):
    async def script(server: RawServer, stream: trio.SocketStream, ws: wsproto.WSConnection) -> None:
        await _accept_request(stream, ws)
        await server.read_until_eof(stream, ws)

    server = RawServer(script)
    with trio.fail_after(LIMIT):
        async with serve_raw(server) as url:
            start = trio.current_time()
            with pytest.raises(ProviderConnectionError, match="no answer within 3 s"):
                async with open_websocket_session("fake", NullCodec(), url, connect_timeout=3):
                    pytest.fail("the handshake never completed")
            assert trio.current_time() - start == pytest.approx(3)
            await server.done.wait()
    assert server.seen == ["eof"]


async def test_the_session_ends_with_its_end_message_and_a_close_handshake(autojump_clock):
    async def script(server: RawServer, stream: trio.SocketStream, ws: wsproto.WSConnection) -> None:
        await _accept_request(stream, ws)
        await stream.send_all(ws.send(wsproto.events.AcceptConnection()))
        while data := await stream.receive_some():
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, wsproto.events.TextMessage):
                    server.seen.append(f"text {event.data}")
                elif isinstance(event, wsproto.events.CloseConnection):
                    server.seen.append(f"close {event.code}")
                    await stream.send_all(ws.send(event.response()))
        server.seen.append("eof")

    server = RawServer(script)
    with trio.fail_after(LIMIT):
        async with serve_raw(server) as url:
            async with open_websocket_session("fake", NullCodec(), url) as session:
                await session.send_audio(b"a")
            await server.done.wait()
    assert server.seen == ["text a", "text end", "close 1000", "eof"]


def test_the_request_target_keeps_the_query_and_the_host_header_the_port():
    target = WebSocketTarget.from_url("wss://api.example.test/v3/ws?a=1&b=2")
    assert (target.secure, target.port, target.host_header, target.resource) == (
        True, 443, "api.example.test", "/v3/ws?a=1&b=2")
    target = WebSocketTarget.from_url("ws://[::1]:8080")
    assert (target.host, target.host_header, target.resource) == ("::1", "[::1]:8080", "/")
    with pytest.raises(ValueError):
        WebSocketTarget.from_url("http://127.0.0.1/")


# --- WatchedStream: was a write cut half way? ----------------------------------------------


async def test_a_write_cut_while_the_peer_is_not_reading_leaves_the_stream_unusable(autojump_clock):
    client, _server = trio.testing.lockstep_stream_pair()
    watched = WatchedStream(client)
    with trio.move_on_after(1):
        await watched.send_all(b"half a frame")
    assert watched.intact is False


async def test_a_cancellation_due_before_the_write_leaves_the_stream_intact(autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    watched = WatchedStream(client)
    with trio.CancelScope() as scope:
        scope.cancel()
        await watched.send_all(b"never written")
    assert watched.intact is True
    await watched.send_all(b"written")
    assert await server.receive_some() == b"written"


async def test_a_session_whose_write_was_cut_ends_without_another_frame(autojump_clock):
    """Half a frame may be on the wire: end() sends nothing more (no end message, no close
    frame, no wait for a close reply); the stream is then closed."""
    client, server = trio.testing.lockstep_stream_pair()
    watched = WatchedStream(client)
    peer = wsproto.WSConnection(wsproto.ConnectionType.SERVER)

    async def accept() -> None:
        while True:
            peer.receive_data(await server.receive_some())
            if any(isinstance(e, wsproto.events.Request) for e in peer.events()):
                await server.send_all(peer.send(wsproto.events.AcceptConnection()))
                return

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept)
            ws = await client_handshake(watched, "127.0.0.1", "/", max_message_bytes=1 << 20)
            session = WebSocketSession("fake", NullCodec(), ws)
            with trio.move_on_after(1):  # the peer is not reading: the write is cut
                await session.send_audio(b"a")
            assert watched.intact is False
            start = trio.current_time()
            await session.end()  # on a lockstep stream any write would block until the timeout
            assert trio.current_time() == start and ws.closed is None and ws.owes is False
            nursery.cancel_scope.cancel()


# --- no reaching into libraries --------------------------------------------------------------


def test_providers_use_only_public_attributes_of_other_objects():
    """No ``obj._private`` outside ``self``, no traceback frame walking: what a library
    keeps private may change in any release."""
    found = []
    for path in sorted(pathlib.Path(__file__).resolve().parents[2].joinpath("providers").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            mine = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if (private and not mine) or node.attr in ("tb_frame", "f_locals"):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


# --- wss:// ---------------------------------------------------------------------------------


async def test_a_wss_session_runs_and_ends_gracefully_over_tls(certificate):
    """The TLS path of the connection layer, against the AssemblyAI fake behind a
    self-signed certificate: audio goes out, and a session cut before it finalized
    still sends ``Terminate`` and a close frame through the TLS stream."""
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(str(cert), str(key))
    client_context = ssl.create_default_context(cafile=str(cert))
    fake = AssemblyAIFake(api_key="k", answer_end=False)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(trio_websocket.serve_websocket, fake.handler, "127.0.0.1", 0,
                                                 ssl_context=server_context))
            url = f"wss://127.0.0.1:{server.port}/v3/ws?speech_model=universal-streaming-english&encoding=pcm_mulaw&sample_rate=8000"
            with trio.CancelScope() as scope:
                async with open_websocket_session("assemblyai", AssemblyAICodec(), url, [("Authorization", "k")],
                                                  ssl_context=client_context) as session:
                    assert isinstance(await session.receive(), SessionStarted)
                    for _ in range(3):
                        await session.send_audio(tone(100))
                    scope.cancel()
            # the close reply came from the fake's reader: its handler is runnable now
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    [recorded] = fake.sessions
    assert bytes(recorded.audio) == tone(100) * 3
    assert recorded.controls == ["Terminate"] and recorded.close_code == 1000


# --- our own framing on the wire: control frames, violations, limits -------------------------


async def _record_until_eof(server: RawServer, stream: trio.SocketStream, ws: wsproto.WSConnection) -> None:
    text = ""
    while data := await stream.receive_some():
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, wsproto.events.Pong):
                server.seen.append(f"pong {bytes(event.payload).decode()}")
            elif isinstance(event, wsproto.events.CloseConnection):
                server.seen.append(f"close {event.code}")
            elif isinstance(event, wsproto.events.TextMessage):
                text += event.data
                if event.message_finished:
                    server.seen.append(f"text {text}")
                    text = ""
    server.seen.append("eof")


class RecordingCodec(NullCodec):
    """Hears messages as events: a server text comes out as ``SessionStarted(text)``."""

    def receive(self, message: str | bytes) -> list[ProviderEvent]:
        return [SessionStarted(str(message))]


async def test_a_ping_is_answered_and_a_frame_breaking_the_protocol_closes_with_1002(autojump_clock):
    """The server pings, sends a message, then a frame with a reserved bit set: the
    session gets the message, answers the ping with its payload, and ends with 1002
    (our close frame says so)."""

    async def script(server: RawServer, stream: trio.SocketStream, ws: wsproto.WSConnection) -> None:
        await _accept_request(stream, ws)
        await stream.send_all(ws.send(wsproto.events.AcceptConnection()) + ws.send(wsproto.events.Ping(b"hi"))
                              + ws.send(wsproto.events.TextMessage("hello")) + b"\xc1\x00")
        await _record_until_eof(server, stream, ws)

    server = RawServer(script)
    with trio.fail_after(LIMIT):
        async with serve_raw(server) as url:
            async with open_websocket_session("fake", RecordingCodec(), url) as session:
                assert await session.receive() == SessionStarted("hello")
                closed = await session.receive()
            await server.done.wait()
    assert isinstance(closed, ProviderClosed) and closed.code == 1002
    assert server.seen == ["pong hi", "close 1002", "eof"]


async def test_a_message_over_the_size_limit_is_refused_from_its_header_with_1009(autojump_clock):
    async def script(server: RawServer, stream: trio.SocketStream, ws: wsproto.WSConnection) -> None:
        await _accept_request(stream, ws)
        too_long = (4 * 1024 * 1024 + 1).to_bytes(8, "big")
        await stream.send_all(ws.send(wsproto.events.AcceptConnection()) + b"\x82\x7f" + too_long)
        await _record_until_eof(server, stream, ws)

    server = RawServer(script)
    with trio.fail_after(LIMIT):
        async with serve_raw(server) as url:
            async with open_websocket_session("fake", NullCodec(), url) as session:
                closed = await session.receive()
            await server.done.wait()
    assert isinstance(closed, ProviderClosed) and closed.code == 1009
    assert server.seen == ["close 1009", "eof"]


async def test_a_send_nobody_receives_beside_still_sees_the_server_s_close(autojump_clock):
    """No task waits in receive(): the send reads what the socket holds first, so the
    server's close (3005) is the send's error, and the close is answered."""

    async def script(server: RawServer, stream: trio.SocketStream, ws: wsproto.WSConnection) -> None:
        await _accept_request(stream, ws)
        await stream.send_all(ws.send(wsproto.events.AcceptConnection()))
        await stream.send_all(ws.send(wsproto.events.CloseConnection(code=3005, reason="cancelled")))
        await _record_until_eof(server, stream, ws)

    server = RawServer(script)
    with trio.fail_after(LIMIT):
        async with serve_raw(server) as url:
            async with open_websocket_session("fake", NullCodec(), url) as session:
                with pytest.raises(ProviderConnectionError, match="3005") as failed:
                    while True:
                        await session.send_audio(b"a")
                        await trio.sleep(0.1)
                assert failed.value.code == 3005
                assert await session.receive() == ProviderClosed(3005, "cancelled")
            await server.done.wait()
    assert server.seen[-2:] == ["close 3005", "eof"] and set(server.seen[:-2]) <= {"text a"}


async def test_a_send_over_tcp_is_one_checkpoint_and_goes_out_whole(autojump_clock):
    async def script(server: RawServer, stream: trio.SocketStream, ws: wsproto.WSConnection) -> None:
        await _accept_request(stream, ws)
        await stream.send_all(ws.send(wsproto.events.AcceptConnection()))
        await _record_until_eof(server, stream, ws)

    server = RawServer(script)
    with trio.fail_after(LIMIT):
        async with serve_raw(server) as url:
            async with open_websocket_session("fake", NullCodec(), url) as session:
                for text in (b"a", b"b" * 200, b"c" * 70000):
                    with trio.testing.assert_checkpoints():
                        await session.send_audio(text)
            await server.done.wait()
    assert server.seen == ["text a", f"text {'b' * 200}", f"text {'c' * 70000}", "text end", "close 1000", "eof"]
