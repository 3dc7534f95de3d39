"""The Twilio stream's own socket: RFC 6455 frames in (tables, whole and byte by byte),
the upgrade parsed at the edge, and the same port on a real server answering a raw
WebSocket client, pings, fragments, closes and violations — and HTTP for everything else."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import attrs
import httpx
import pytest
import trio

from gateway.edge import parse_stream_upgrade
from gateway.stream_socket import SocketTransport, SocketTextSource
from providers.wsframes import (
    CloseReceived,
    Ping,
    Pong,
    ServerFrameReader,
    WebSocketError,
    accept_key,
    close_frame,
    unmask,
)
from providers.scripted import ScriptedProvider
from tests.conftest import running_gateway
from tests.helpers import ListSink, call_ids, tone, twilio_script

CALL_LIMIT = 30  # seconds: a bound on each test, never an assertion on speed
KEY = b"\x37\xfa\x21\x3d"


def frame(opcode: int, payload: bytes, *, fin: bool = True, key: bytes | None = KEY, rsv: int = 0,
          length: int | None = None) -> bytes:
    """A client frame as a WebSocket client would send it (masked unless ``key`` is None)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if key is not None else 0
    if n < 126:
        head = bytes((b0, mask_bit | n))
    elif n < 1 << 16:
        head = bytes((b0, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, mask_bit | 127)) + n.to_bytes(8, "big")
    if key is None:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def text(message: str, **options) -> bytes:
    return frame(0x1, message.encode(), **options)


@attrs.frozen
class Case:
    name: str
    data: Callable[[], bytes]
    messages: tuple = ()
    error: int | None = None  # the close code of the WebSocketError raised after `messages`


MEDIA = '{"event":"media","media":{"payload":"' + "/w" * 108 + '"}}'
CASES = [
    Case("one small text frame", lambda: text("hello"), ("hello",)),
    Case("a media-sized text frame (16-bit length)", lambda: text(MEDIA), (MEDIA,)),
    Case("a 70 kB text frame (64-bit length)", lambda: text("x" * 70_000), ("x" * 70_000,)),
    Case("the all-zero mask key", lambda: text("plain", key=b"\0\0\0\0"), ("plain",)),
    Case("three frames in one read", lambda: text("a") + text("b") + text("c"), ("a", "b", "c")),
    Case("a text message in three fragments", lambda: frame(0x1, b"he", fin=False) + frame(0x0, b"ll", fin=False)
         + frame(0x0, b"o"), ("hello",)),
    Case("a ping between fragments", lambda: frame(0x1, b"he", fin=False) + frame(0x9, b"p1") + frame(0x0, b"llo"),
         (Ping(b"p1"), "hello")),
    Case("a pong", lambda: frame(0xA, b"x"), (Pong(b"x"),)),
    Case("a binary message", lambda: frame(0x2, b"\x00\x01"), (b"\x00\x01",)),
    Case("a UTF-8 character split across fragments", lambda: frame(0x1, "é".encode()[:1], fin=False)
         + frame(0x0, "é".encode()[1:]), ("é",)),
    Case("close with a code and a reason", lambda: frame(0x8, (1000).to_bytes(2, "big") + b"bye"),
         (CloseReceived(1000, "bye"),)),
    Case("close without a code", lambda: frame(0x8, b""), (CloseReceived(1005, ""),)),
    # --- violations: the close code a server must answer with
    Case("an unmasked client frame", lambda: text("hi", key=None), error=1002),
    Case("reserved bits without an extension", lambda: text("hi", rsv=0x40), error=1002),
    Case("an unknown data opcode", lambda: frame(0x3, b"x"), error=1002),
    Case("an unknown control opcode", lambda: frame(0xB, b"x"), error=1002),
    Case("a control frame over 125 bytes", lambda: frame(0x9, b"x" * 126), error=1002),
    Case("a fragmented control frame", lambda: frame(0x9, b"x", fin=False), error=1002),
    Case("a continuation with nothing to continue", lambda: frame(0x0, b"x"), error=1002),
    Case("a new message inside a fragmented one", lambda: frame(0x1, b"a", fin=False) + frame(0x1, b"b"),
         error=1002),
    Case("a close frame with a 1-byte payload", lambda: frame(0x8, b"\x03"), error=1002),
    Case("text that is not UTF-8", lambda: text("ok") + frame(0x1, b"\xff\xfe"), ("ok",), error=1007),
    Case("fragments that are not UTF-8", lambda: frame(0x1, b"\xc3", fin=False) + frame(0x0, b"\x28"), error=1007),
    Case("a close reason that is not UTF-8", lambda: frame(0x8, b"\x03\xe8\xff"), error=1007),
    Case("fragments adding up past the limit", lambda: frame(0x1, b"x" * 60_000, fin=False)
         + frame(0x0, b"x" * 6_000), error=1009),
]


def _feed(reader: ServerFrameReader, data: bytes, step: int | None) -> tuple[list, WebSocketError | None]:
    out: list = []
    chunks = [data] if step is None else [data[i:i + step] for i in range(0, len(data), step)]
    try:
        for chunk in chunks:
            out += reader.receive_data(chunk)
    except WebSocketError as exc:
        return out + exc.messages, exc
    return out, None


@pytest.mark.parametrize("step", [None, 1, 7], ids=["whole", "byte by byte", "7 bytes at a time"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_server_frame_reader(case: Case, step: int | None) -> None:
    reader = ServerFrameReader(max_message_bytes=65_536 if "70 kB" not in case.name else 100_000)
    messages, error = _feed(reader, case.data(), step)
    assert tuple(messages) == case.messages
    assert (error.close_code if error else None) == case.error
    if error is None:
        assert reader.buffered == 0


def test_an_oversized_message_is_refused_from_its_header_before_it_is_buffered() -> None:
    reader = ServerFrameReader(max_message_bytes=1000)
    header_only = frame(0x1, b"", length=1001)[:2 + 2 + 4]  # 16-bit length 1001, mask key, no payload
    with pytest.raises(WebSocketError) as info:
        reader.receive_data(header_only)
    assert info.value.close_code == 1009
    assert "over 1000 bytes" in info.value.detail


def test_the_reader_keeps_only_an_unfinished_frame_and_knows_the_last_frame_size() -> None:
    reader = ServerFrameReader(65_536)
    whole = text(MEDIA)
    assert reader.receive_data(whole + whole[:10]) == [MEDIA]
    assert (reader.buffered, reader.last_frame_bytes) == (10, len(whole))
    assert reader.receive_data(whole[10:]) == [MEDIA]
    assert reader.buffered == 0


@pytest.mark.parametrize("n", [*range(0, 24), 215, 387, 1000, 5000])
def test_unmask_is_the_repeating_xor_of_rfc_6455(n: int) -> None:
    data, key = os.urandom(n), os.urandom(4)
    assert unmask(data, key) == bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert unmask(bytearray(data), bytearray(key)) == unmask(data, key)


def test_accept_key_is_rfc_6455s_example() -> None:
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_close_frames_fit_a_control_frame() -> None:
    assert close_frame(1000) == b"\x88\x02\x03\xe8"
    long = close_frame(1011, "é" * 100)
    assert len(long) <= 2 + 125 and long[4:].decode("utf-8")  # cut on a character boundary


# --------------------------------------------------------------------------- the upgrade

UPGRADE = (b"GET /twilio/stream?x=1 HTTP/1.1\r\nHost: gw.example.test\r\nUpgrade: websocket\r\n"
           b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\nX-Twilio-Signature: abc\r\n\r\n")


@pytest.mark.parametrize(("head", "ours"), [
    (UPGRADE, True),
    (UPGRADE.replace(b"/twilio/stream?x=1", b"/twilio/stream/"), True),
    (UPGRADE.replace(b"Upgrade: websocket", b"Upgrade: WebSocket"), True),
    (UPGRADE.replace(b"GET", b"POST"), False),
    (UPGRADE.replace(b"/twilio/stream", b"/twilio/streams"), False),
    (UPGRADE.replace(b"/twilio/stream", b"/healthz"), False),
    (UPGRADE.replace(b"Upgrade: websocket\r\n", b""), False),
    (UPGRADE.replace(b"keep-alive, Upgrade", b"keep-alive"), False),
    (UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0"), False),
    (b"\x16\x03\x01 not http at all\r\n\r\n", False),
], ids=["the upgrade", "trailing slash", "case of the token", "POST", "another path", "healthz",
        "no Upgrade header", "no upgrade in Connection", "HTTP/1.0", "not HTTP"])
def test_parse_stream_upgrade(head: bytes, ours: bool) -> None:
    upgrade = parse_stream_upgrade(head, "/twilio/stream")
    assert (upgrade is not None) == ours
    if upgrade is not None and b"?x=1" in head:
        scope = upgrade.scope("ws", ("127.0.0.1", 5), ("127.0.0.1", 8080))
        assert (scope["path"], scope["query_string"]) == ("/twilio/stream", b"x=1")
        assert (b"x-twilio-signature", b"abc") in scope["headers"]


# ------------------------------------------------------------ a raw client, a real server


class RawClient:
    """The client side of a WebSocket, byte for byte, for what no library would send."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def connect(cls, http_url: str, head: bytes = UPGRADE) -> tuple[RawClient, bytes]:
        host, port = http_url.removeprefix("http://").split(":")
        client = cls(await trio.open_tcp_stream(host, int(port)))
        await client.stream.send_all(head)
        while b"\r\n\r\n" not in client.buffer:
            data = await client.stream.receive_some()
            if not data:
                break
            client.buffer += data
        response, _, client.buffer = client.buffer.partition(b"\r\n\r\n")
        return client, response

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def frames(self) -> list[tuple[int, bytes]]:
        """Every server frame until the server closes the TCP connection."""
        out = []
        while True:
            data = await self.stream.receive_some()
            if not data:
                break
            self.buffer += data
        await self.stream.aclose()
        buffer = self.buffer
        while buffer:
            b0, n = buffer[0], buffer[1] & 0x7F
            head = 2
            if n == 126:
                n, head = int.from_bytes(buffer[2:4], "big"), 4
            out.append((b0 & 0x0F, buffer[head:head + n]))
            buffer = buffer[head + n:]
        return out


def script(n: int, ms: int) -> list[str]:
    return [message for message, _ in twilio_script(tone(ms, seed=n), n=n)]


async def test_a_raw_client_gets_its_pings_answered_fragments_joined_and_a_clean_close() -> None:
    provider, sink = ScriptedProvider(), ListSink()
    messages = script(1, 1000)
    start = messages[1].encode()
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            client, response = await RawClient.connect(gw.http_url)
            assert response.startswith(b"HTTP/1.1 101 ")
            assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in response
            await client.send(text(messages[0]) + frame(0x1, start[:50], fin=False) + frame(0x9, b"are you there")
                              + frame(0x0, start[50:]))
            for message in messages[2:]:
                await client.send(text(message))
            frames = await client.frames()
            await gw.idle()
    assert frames == [(0xA, b"are you there"), (0x8, (1000).to_bytes(2, "big"))]
    assert bytes(provider.sessions[0].received) == tone(1000, seed=1)
    ended = sink.events[-1]
    assert (ended["reason"], ended["audio_ms"], ended["forwarded_ms"]) == ("stop", 1000, 1000)


async def test_a_client_that_closes_first_is_answered_and_the_call_ends_as_a_disconnect() -> None:
    provider, sink = ScriptedProvider(), ListSink()
    messages = script(1, 1000)
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            client, _ = await RawClient.connect(gw.http_url)
            for message in messages[:-1]:  # everything but stop
                await client.send(text(message))
            await client.send(frame(0x8, (1001).to_bytes(2, "big") + b"going away"))
            frames = await client.frames()
            await gw.idle()
    assert frames == [(0x8, (1001).to_bytes(2, "big"))]
    assert bytes(provider.sessions[0].received) == tone(1000, seed=1)
    ended = sink.events[-1]
    assert (ended["reason"], ended["forwarded_ms"], ended["dropped_ms"]) == ("disconnect", 1000, 0)


@pytest.mark.parametrize(("bad", "code", "says"), [
    (lambda m: text(m, key=None), 1002, "a client frame must be masked"),
    (lambda m: frame(0x1, b"\xff\xfe not utf-8"), 1007, "not UTF-8"),
    (lambda m: text(m, rsv=0x20), 1002, "reserved bits"),
], ids=["unmasked", "not UTF-8", "reserved bits"])
async def test_a_protocol_violation_ends_only_its_call_with_its_close_code(bad, code: int, says: str) -> None:
    provider, sink = ScriptedProvider(), ListSink()
    good, broken = script(1, 2000), script(2, 1000)
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            good_client, _ = await RawClient.connect(gw.http_url)
            bad_client, _ = await RawClient.connect(gw.http_url)
            for message in good[:30]:
                await good_client.send(text(message))
            for message in broken[:10]:
                await bad_client.send(text(message))
            await bad_client.send(bad(broken[10]))
            bad_frames = await bad_client.frames()
            for message in good[30:]:
                await good_client.send(text(message))
            good_frames = await good_client.frames()
            await gw.idle()
    assert bad_frames[-1][0] == 0x8 and int.from_bytes(bad_frames[-1][1][:2], "big") == code
    bad_end = sink.of_call(call_ids(2)[0])[-1]
    assert bad_end["reason"] == "error" and says in bad_end["detail"]
    assert good_frames == [(0x8, (1000).to_bytes(2, "big"))]
    good_end = sink.of_call(call_ids(1)[0])[-1]
    assert (good_end["reason"], good_end["forwarded_ms"]) == ("stop", 2000)


@pytest.mark.parametrize(("head", "status"), [
    (UPGRADE.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"), b"426"),
    (UPGRADE.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"short"), b"400"),
], ids=["version 8", "a bad key"])
async def test_a_bad_handshake_is_answered_with_its_http_status(head: bytes, status: bytes) -> None:
    provider, sink = ScriptedProvider(), ListSink()
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            client, response = await RawClient.connect(gw.http_url, head)
            assert response.split(b" ")[1] == status
            while data := await client.stream.receive_some():  # the body, then the connection closes
                client.buffer += data
            await client.stream.aclose()
            assert client.buffer.startswith((b"WebSocket version 13 only", b"bad request: Sec-WebSocket-Key"))
    assert sink.events == [] and provider.sessions == []


async def test_http_on_the_same_port_and_an_upgrade_on_a_kept_alive_connection_go_through_hypercorn() -> None:
    """Webhooks and health checks are Hypercorn's; a stream upgrade that follows another
    request on the same connection is served through the ASGI door, the same way."""
    provider, sink = ScriptedProvider(), ListSink()
    messages = script(3, 600)
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            async with httpx.AsyncClient() as http:
                assert (await http.get(gw.http_url + "/healthz")).status_code == 200
                assert (await http.post(gw.http_url + "/twilio/voice", data={"CallSid": "CA1"})).status_code == 200
                assert (await http.get(gw.http_url + "/nothing-here")).status_code == 404
            host, port = gw.http_url.removeprefix("http://").split(":")
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + UPGRADE)
            received = b""
            while received.count(b"\r\n\r\n") < 2 or b"101" not in received:
                received += await stream.receive_some()
            assert received.startswith(b"HTTP/1.1 200")
            client = RawClient(stream)
            client.buffer = received.partition(b"101 ")[2].partition(b"\r\n\r\n")[2]
            for message in messages:
                await client.send(text(message))
            frames = await client.frames()
            await gw.idle()
    assert frames[-1] == (0x8, (1000).to_bytes(2, "big"))
    assert bytes(provider.sessions[0].received) == tone(600, seed=3)
    assert sink.events[-1]["reason"] == "stop"


# ------------------------------------------------------------------- batched wake-ups


async def _connected_pair() -> tuple[socket.socket, socket.socket]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    for sock in (client, server):
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, server


class CountingTransport(SocketTransport):
    reads = 0

    async def receive_some(self, mark: int = 1, patience: float = 0.0) -> bytes:
        data = await super().receive_some(mark, patience)
        self.reads += 1
        return data


async def test_a_paced_stream_is_read_about_once_per_batch_not_once_per_frame() -> None:
    """With ``expect(5)`` (a 100 ms batch) a stream paced at 20 ms per frame is read at
    most twice per batch (a late frame costs one early read), never once per frame."""
    client, server = await _connected_pair()
    transport = CountingTransport(server)
    source = SocketTextSource(transport, ServerFrameReader(65_536))
    media = text(MEDIA)
    frames, received = 60, []

    async def paced_writer() -> None:
        for _ in range(frames):
            client.send(media)
            await trio.sleep(0.02)

    with trio.fail_after(CALL_LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(paced_writer)
            received.append(await source.receive())  # the first frame sizes the mark
            while len(received) < frames:
                source.expect(5)  # as TwilioReader does after each batch
                for _ in range(min(5, frames - len(received))):
                    received.append(await source.receive())
    client.close(), server.close()
    assert received == [MEDIA] * frames
    assert transport.reads <= 2 * (frames // 5) + 2, transport.reads


async def test_a_stream_that_goes_quiet_short_of_the_mark_is_still_read() -> None:
    client, server = await _connected_pair()
    source = SocketTextSource(SocketTransport(server), ServerFrameReader(65_536))
    with trio.fail_after(CALL_LIMIT):
        client.send(text(MEDIA))
        assert await source.receive() == MEDIA
        source.expect(5)
        client.send(text(MEDIA) + text('{"event":"stop"}'))  # two of the five, then nothing
        assert [await source.receive(), await source.receive()] == [MEDIA, '{"event":"stop"}']
        client.send(frame(0x8, (1000).to_bytes(2, "big")))  # an 8-byte close frame, far under the mark
        with pytest.raises(trio.EndOfChannel):
            await source.receive()
    client.setblocking(True)
    client.settimeout(CALL_LIMIT)  # a bound, not a speed: loopback may deliver after send() returns
    assert client.recv(100) == b"\x88\x02\x03\xe8"  # answered with a close frame of its own
    client.close(), server.close()


async def test_a_failing_connection_costs_only_itself(caplog) -> None:
    """A bug on one stream's path ends that connection; the server and its calls go on."""
    provider, sink = ScriptedProvider(), ListSink()
    messages = script(1, 600)
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            endpoint = gw.gateway.stream_endpoint
            serve = endpoint.serve

            async def broken_once(scope, door):
                endpoint.serve = serve
                raise RuntimeError("a bug")

            endpoint.serve = broken_once
            broken, _ = await RawClient.connect(gw.http_url)
            assert await broken.frames() == []  # closed, no answer
            client, response = await RawClient.connect(gw.http_url)
            assert response.startswith(b"HTTP/1.1 101 ")
            for message in messages:
                await client.send(text(message))
            assert (await client.frames())[-1] == (0x8, (1000).to_bytes(2, "big"))
            await gw.idle()
    assert "a connection failed" in caplog.text and "RuntimeError: a bug" in caplog.text
    assert sink.events[-1]["reason"] == "stop"


async def test_a_flooded_socket_still_lets_other_tasks_run(monkeypatch) -> None:
    """Twilio's side is read as fast as it comes, but never without yielding: other
    calls' tasks run while one call's reader works through a backlog."""
    monkeypatch.setattr("gateway.stream_socket.RECV_BYTES", 2048)  # ~5 frames per read
    client, server = await _connected_pair()
    transport = SocketTransport(server)
    transport.batching = False  # every read on the path that has no mark to wait for
    source = SocketTextSource(transport, ServerFrameReader(65_536))
    frames = 100
    client.setblocking(True)
    client.sendall(text(MEDIA) * frames)  # 39 kB waiting before the first read (fits any socket buffer)
    ticks: list[int] = []

    async def other_call() -> None:
        while True:
            ticks.append(received)
            await trio.sleep(0)

    received = 0
    with trio.fail_after(CALL_LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_call)
            await trio.sleep(0)
            while received < frames:
                assert await source.receive() == MEDIA
                received += 1
            nursery.cancel_scope.cancel()
    client.close(), server.close()
    assert len({t for t in ticks if 0 < t < frames}) >= 5  # the other task ran during the backlog
