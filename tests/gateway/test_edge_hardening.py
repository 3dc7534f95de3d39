"""The HTTP edge and the stream socket against a hostile or sloppy client, with a raw
socket on 127.0.0.1: idle keep-alive connections, heads that end in bare LF or come
slowly, fragment floods, the closing handshake, close codes a peer may not send, frame
headers in corner cases, and a server out of file descriptors.  Timeouts run on trio's
MockClock (the real server under ``autojump_clock``), so they are asserted in virtual
seconds, exactly."""

from __future__ import annotations

import logging
import os
import resource
import socket
from functools import partial

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, CloseConnection, TextMessage
from wsproto.events import Request as WsRequest

from gateway.app import STREAM_PATH, Gateway
from gateway.config import Settings
from gateway.edge import ACCEPT_ERRORS_LOG_INTERVAL, ACCEPT_ERRORS_PAUSE, HEAD_TIMEOUT, Edge
from gateway.serve import hypercorn_config, serve_gateway
from providers.wsframes import MAX_FRAGMENTS, ServerFrameReader, WebSocketError
from providers.scripted import ScriptedProvider
from tests.conftest import running_gateway
from tests.helpers import ListSink
from tests.gateway.test_stream_socket import UPGRADE, RawClient, frame, script, text

LIMIT = 60  # seconds (virtual under autojump_clock): a bound on each test, never an assertion on speed
KEEP_ALIVE = hypercorn_config("127.0.0.1", 0).keep_alive_timeout  # Hypercorn's default: 5 s
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gw.example.test\r\n\r\n"


async def _connect(http_url: str) -> trio.SocketStream:
    host, port = http_url.removeprefix("http://").split(":")
    return await trio.open_tcp_stream(host, int(port))


async def _response(stream: trio.SocketStream) -> bytes:
    """One HTTP response (head and its content-length body) from ``stream``."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = await stream.receive_some()
        assert more, f"closed before a response: {data!r}"
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                  if line.startswith(b"content-length:"))
    while len(body) < length:
        body += await stream.receive_some()
    return head + b"\r\n\r\n" + body


async def _until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the server still sends, until it closes the connection."""
    data = b""
    try:
        while more := await stream.receive_some():
            data += more
    except trio.BrokenResourceError:  # a reset is a close too
        pass
    return data


# ------------------------------------------------------------- 1. idle keep-alive connections


async def test_idle_keep_alive_connections_are_closed_after_the_keep_alive_timeout(autojump_clock) -> None:
    """Before: 50 connections that each sent one request and then nothing stayed open
    for good (quart-trio's request nursery cancelled Hypercorn's idle timer as it was
    re-armed).  Now each is closed ``keep_alive_timeout`` after its response."""
    with trio.fail_after(LIMIT):
        async with running_gateway(ScriptedProvider(), [ListSink()]) as gw:
            streams = [await _connect(gw.http_url) for _ in range(50)]
            answered = []
            for stream in streams:
                await stream.send_all(HEALTHZ)
                assert (await _response(stream)).startswith(b"HTTP/1.1 200")
                answered.append(trio.current_time())
            idle: list[float] = []

            async def wait_closed(stream: trio.SocketStream, since: float) -> None:
                assert await _until_closed(stream) == b""
                idle.append(trio.current_time() - since)
                await stream.aclose()

            async with trio.open_nursery() as nursery:
                for stream, since in zip(streams, answered):
                    nursery.start_soon(wait_closed, stream, since)
    assert len(idle) == 50
    assert all(KEEP_ALIVE <= seconds <= KEEP_ALIVE + 0.1 for seconds in idle), sorted(idle)


async def test_shutdown_closes_idle_keep_alive_connections_at_once(autojump_clock) -> None:
    """Before: idle kept-alive connections made SIGTERM wait out Hypercorn's whole
    graceful timeout (15 s).  Now their idle timers see the shutdown and close them."""
    provider = ScriptedProvider()
    gateway = Gateway(Settings(port=0, provider=provider.name, max_busy=None), provider, [ListSink()])
    stop = trio.Event()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve_gateway, gateway, shutdown_trigger=stop.wait, grace=5))
            http_url = next(b for b in binds if b.startswith("http://127.0.0.1"))
            streams = [await _connect(http_url) for _ in range(10)]
            for stream in streams:
                await stream.send_all(HEALTHZ)
                assert (await _response(stream)).startswith(b"HTTP/1.1 200")
            stopped = trio.current_time()
            stop.set()
            for stream in streams:
                assert await _until_closed(stream) == b""
                await stream.aclose()
        served_for = trio.current_time() - stopped
    assert served_for < 1.0, served_for  # virtual seconds: no timer waited out


# ------------------------------------------------------- 5. and 6. the request head


def _chunks(data: bytes, step: int | None) -> list[bytes]:
    return [data] if step is None else [data[i:i + step] for i in range(0, len(data), step)]


@pytest.mark.parametrize("step", [None, 1], ids=["whole", "byte by byte"])
@pytest.mark.parametrize("head", [
    HEALTHZ.replace(b"\r\n", b"\n"),
    b"GET /healthz HTTP/1.1\r\nHost: gw.example.test\r\n\n",
    b"GET /healthz HTTP/1.1\nHost: gw.example.test\n\r\n",
], ids=["bare LF", "CRLF then a bare LF", "LF then CRLF"])
async def test_a_head_that_ends_in_bare_lf_is_answered_at_once(autojump_clock, head: bytes,
                                                                step: int | None) -> None:
    """Before: the edge looked for CRLF CRLF only, so these heads (which h11 and
    Hypercorn accept) were answered after the 10 s head timeout."""
    with trio.fail_after(LIMIT):
        async with running_gateway(ScriptedProvider(), [ListSink()]) as gw:
            stream = await _connect(gw.http_url)
            start = trio.current_time()
            for chunk in _chunks(head, step):
                await stream.send_all(chunk)
            response = await _response(stream)
            waited = trio.current_time() - start
            await stream.aclose()
    assert response.startswith(b"HTTP/1.1 200")
    assert waited < 1.0, waited  # virtual seconds: nothing waited on a timer


async def test_a_stream_upgrade_with_bare_lf_lines_is_accepted(autojump_clock) -> None:
    with trio.fail_after(LIMIT):
        async with running_gateway(ScriptedProvider(), [ListSink()]) as gw:
            start = trio.current_time()
            client, response = await RawClient.connect(gw.http_url, UPGRADE.replace(b"\r\n", b"\n"))
            waited = trio.current_time() - start
            await client.stream.aclose()
    assert response.startswith(b"HTTP/1.1 101 ")
    assert waited < 1.0, waited


@pytest.mark.parametrize("dribble", [False, True], ids=["part of a head, then nothing",
                                                         "a head one byte a second"])
async def test_a_slow_head_gets_one_deadline_in_all(autojump_clock, dribble: bool) -> None:
    """Before: the edge waited 10 s, handed the unfinished head to Hypercorn, which
    waited its keep-alive 5 s more: 15 s per connection.  Now 10 s in all."""
    head = b"GET /healthz HTTP/1.1\r\nHost: gw.example.test\r\nX-Slow: " + b"x" * 40 + b"\r\n\r\n"
    with trio.fail_after(LIMIT):
        async with running_gateway(ScriptedProvider(), [ListSink()]) as gw:
            stream = await _connect(gw.http_url)
            start = trio.current_time()
            closed_at: list[float] = []

            async def watch() -> None:
                assert await _until_closed(stream) == b""
                closed_at.append(trio.current_time() - start)
                nursery.cancel_scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                if dribble:
                    for i in range(len(head)):
                        await trio.sleep(0.5 if i == 0 else 1)  # off the whole seconds: no tie with the deadline
                        await stream.send_all(head[i:i + 1])
                else:
                    await stream.send_all(head[:30])
                    await trio.sleep_forever()
            await stream.aclose()
    assert closed_at == [pytest.approx(HEAD_TIMEOUT, abs=0.01)]


# ------------------------------------------------------------- the stream socket: frames

CALL_LIMIT = 30  # seconds of real time: a bound on each raw-socket call, never an assertion on speed
CODE = {code: code.to_bytes(2, "big") for code in (999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1009,
                                                   1011, 1012, 1013, 1014, 1015, 1016, 2999, 3000, 4999, 5000)}


def raw_frame(b0: int, length_bytes: bytes, payload: bytes = b"", key: bytes = b"\x37\xfa\x21\x3d") -> bytes:
    """A client frame with its length field written out by hand (any encoding, any value)."""
    return bytes((b0,)) + bytes((0x80 | length_bytes[0],)) + length_bytes[1:] + key + bytes(
        b ^ key[i % 4] for i, b in enumerate(payload))


def _feed(reader: ServerFrameReader, data: bytes, step: int | None) -> tuple[list, WebSocketError | None]:
    out: list = []
    try:
        for chunk in _chunks(data, step):
            out += reader.receive_data(chunk)
    except WebSocketError as exc:
        return out + exc.messages, exc
    return out, None


BIG = 100_000  # a declared length over max_message_bytes (65,536)
CORNER_CASES = {
    # 7. what the header says is judged before the size limit
    "a 16-bit length where 7 bits would do": (raw_frame(0x81, bytes((126,)) + (2).to_bytes(2, "big"), b"hi"), 1002),
    "a 64-bit length where 16 would do": (raw_frame(0x81, bytes((127,)) + (2).to_bytes(8, "big"), b"hi"), 1002),
    "a 64-bit length with its top bit set": (raw_frame(0x81, bytes((127,)) + (1 << 63 | 5).to_bytes(8, "big")),
                                             1002),
    "a bad opcode declaring 100 kB": (raw_frame(0x83, bytes((127,)) + BIG.to_bytes(8, "big")), 1002),
    "reserved bits declaring 100 kB": (raw_frame(0xC1, bytes((127,)) + BIG.to_bytes(8, "big")), 1002),
    "a ping declaring 100 kB": (raw_frame(0x89, bytes((127,)) + BIG.to_bytes(8, "big")), 1002),
    "a continuation of nothing declaring 100 kB": (raw_frame(0x80, bytes((127,)) + BIG.to_bytes(8, "big")), 1002),
    "an orphan continuation after a finished 60 kB message": (
        frame(0x1, b"x" * 40_000, fin=False) + frame(0x0, b"y" * 20_000) + frame(0x0, b"z" * 10_000), 1002,
        ["x" * 40_000 + "y" * 20_000]),
    "bad UTF-8 in the first fragment (no last fragment yet)": (frame(0x1, b"ok \xff", fin=False), 1007),
    "bad UTF-8 in a middle fragment": (frame(0x1, b"ok", fin=False) + frame(0x0, b"\xc3\x28", fin=False), 1007),
    # 2. a message's frame count is bounded, not only its bytes
    "a text frame and empty continuations past MAX_FRAGMENTS": (
        frame(0x1, b"{", fin=False) + frame(0x0, b"", fin=False) * MAX_FRAGMENTS, 1009),
    # 4. close codes a peer may not send
    **{f"close with code {code}": (frame(0x8, CODE[code] + b"bye"), 1002)
       for code in (999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000)},
}
GOOD_CASES = {
    "a message of exactly MAX_FRAGMENTS frames": (
        frame(0x1, b"{", fin=False) + frame(0x0, b"", fin=False) * (MAX_FRAGMENTS - 2) + frame(0x0, b"}"), ["{}"]),
    "a 60 kB fragmented message, then another": (
        frame(0x1, b"x" * 40_000, fin=False) + frame(0x0, b"y" * 20_000) + frame(0x2, b"a", fin=False)
        + frame(0x0, b"b"), ["x" * 40_000 + "y" * 20_000, b"ab"]),
    **{f"close with code {code}": (frame(0x8, CODE[code] + b"bye"), [("close", code, "bye")])
       for code in (1000, 1001, 1003, 1007, 1011, 1012, 1013, 3000, 4999)},
}


@pytest.mark.parametrize("step", [None, 1, 7], ids=["whole", "byte by byte", "7 bytes at a time"])
@pytest.mark.parametrize("name", list(CORNER_CASES))
def test_a_violation_is_refused_with_its_rfc_close_code(name: str, step: int | None) -> None:
    data, code, *before = CORNER_CASES[name]
    messages, error = _feed(ServerFrameReader(65_536), data, step)
    assert messages == (before[0] if before else []) and error is not None, messages
    assert error.close_code == code, error.detail


@pytest.mark.parametrize("step", [None, 1, 7], ids=["whole", "byte by byte", "7 bytes at a time"])
@pytest.mark.parametrize("name", list(GOOD_CASES))
def test_the_same_limits_let_good_messages_through(name: str, step: int | None) -> None:
    data, expected = GOOD_CASES[name]
    messages, error = _feed(ServerFrameReader(65_536), data, step)
    assert error is None, error.detail
    assert [("close", m.code, m.reason) if hasattr(m, "code") else m for m in messages] == expected


def test_empty_continuations_are_refused_before_they_pile_up() -> None:
    """Before: each empty continuation appended to the message's list of fragments, with
    no bound but the bytes (zero), so a flood grew the process by hundreds of MB."""
    reader = ServerFrameReader(65_536)
    reader.receive_data(frame(0x1, b"{", fin=False))
    empty = frame(0x0, b"", fin=False)
    with pytest.raises(WebSocketError) as info:
        for _ in range(100 * MAX_FRAGMENTS):
            reader.receive_data(empty)
    assert info.value.close_code == 1009 and f"over {MAX_FRAGMENTS} frames" in info.value.detail


# ------------------------------------------------- the stream socket on the real server


async def _read_frames(client: RawClient, *, until_close: bool) -> list[tuple[int, bytes]]:
    """Server frames: up to and with the first close frame (``until_close``), or all of
    them until the server ends the TCP connection."""
    out: list[tuple[int, bytes]] = []
    while True:
        while len(client.buffer) >= 2:
            n, head = client.buffer[1] & 0x7F, 2
            if n == 126:
                n, head = int.from_bytes(client.buffer[2:4], "big"), 4
            if len(client.buffer) < head + n:
                break
            out.append((client.buffer[0] & 0x0F, client.buffer[head:head + n]))
            client.buffer = client.buffer[head + n:]
            if until_close and out[-1][0] == 0x8:
                return out
        try:
            data = await client.stream.receive_some()
        except trio.BrokenResourceError:  # a reset after what the server sent is an end too
            data = b""
        if not data:
            await client.stream.aclose()
            return out
        client.buffer += data


def _close_code(frames: list[tuple[int, bytes]]) -> int | None:
    closes = [payload for opcode, payload in frames if opcode == 0x8]
    return int.from_bytes(closes[-1][:2], "big") if closes else None


async def test_the_gateway_sends_one_close_frame_when_the_client_answers_its_close() -> None:
    """Twilio's hang-up: ``stop``, our close 1000, Twilio's close reply.  Before: that
    reply was answered with a second close frame (a wsproto client raises "Connection
    already closed").  Now the reply ends the connection and nothing more is sent."""
    provider, sink = ScriptedProvider(), ListSink()
    messages = script(1, 600)
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            client, response = await RawClient.connect(gw.http_url)
            assert response.startswith(b"HTTP/1.1 101 ")
            for message in messages:  # ends with stop
                await client.send(text(message))
            ours = await _read_frames(client, until_close=True)
            await client.send(frame(0x8, CODE[1000]) + frame(0x9, b"still there?"))
            after = await _read_frames(client, until_close=False)
            await gw.idle()
    assert ours == [(0x8, CODE[1000])]
    assert after == []  # no second close, no pong after our close
    assert sink.events[-1]["reason"] == "stop"


@pytest.mark.parametrize("step", [None, 1], ids=["whole", "byte by byte"])
@pytest.mark.parametrize(("code", "answer"), [
    (1015, 1002), (999, 1002), (5000, 1002), (1004, 1002), (1005, 1002), (1006, 1002), (1016, 1002),
    (2999, 1002), (1001, 1001), (1012, 1012), (3000, 3000), (4999, 4999),
])
async def test_a_client_close_code_is_echoed_only_when_a_peer_may_send_it(code: int, answer: int,
                                                                         step: int | None) -> None:
    """Before: every code was echoed back, 1015 (never on the wire, RFC 6455 §7.4.1)
    included.  Now the codes wsproto refuses are answered with 1002."""
    provider, sink = ScriptedProvider(), ListSink()
    messages = script(1, 600)
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            client, _ = await RawClient.connect(gw.http_url)
            for message in messages[:10]:
                await client.send(text(message))
            for chunk in _chunks(frame(0x8, CODE[code] + b"bye"), step):
                await client.send(chunk)
            frames = await _read_frames(client, until_close=False)
            await gw.idle()
    assert [opcode for opcode, _ in frames] == [0x8] and _close_code(frames) == answer
    ended = sink.events[-1]
    if answer == 1002:
        assert ended["reason"] == "error" and f"code {code}" in ended["detail"]
    else:
        assert ended["reason"] == "disconnect"


def _padded(message: str, size: int) -> bytes:
    """``message`` grown to ``size`` bytes with JSON whitespace: still the same message."""
    return (message + " " * size).encode()[:size]


RAW_VIOLATIONS = {
    "empty continuations past MAX_FRAGMENTS": (
        lambda m: frame(0x1, m[:5], fin=False) + frame(0x0, b"", fin=False) * MAX_FRAGMENTS, 1009,
        f"over {MAX_FRAGMENTS} frames"),
    "a 64-bit length with its top bit set": (
        lambda m: raw_frame(0x81, bytes((127,)) + (1 << 63 | 5).to_bytes(8, "big")), 1002, "top bit"),
    "a bad opcode declaring 100 kB": (lambda m: raw_frame(0x83, bytes((127,)) + BIG.to_bytes(8, "big")), 1002,
                                      "unknown data opcode"),
    "reserved bits declaring 100 kB": (lambda m: raw_frame(0xC1, bytes((127,)) + BIG.to_bytes(8, "big")), 1002,
                                       "reserved bits"),
    "a ping declaring 100 kB": (lambda m: raw_frame(0x89, bytes((127,)) + BIG.to_bytes(8, "big")), 1002,
                                "control frame"),
    "a 16-bit length where 7 bits would do": (
        lambda m: raw_frame(0x81, bytes((126,)) + (2).to_bytes(2, "big"), b"{}"), 1002, "16-bit length"),
    "an orphan continuation after a finished 60 kB message": (
        lambda m: frame(0x1, _padded(m.decode(), 60_000)[:40_000], fin=False)
        + frame(0x0, _padded(m.decode(), 60_000)[40_000:]) + frame(0x0, b" " * 10_000), 1002, "continuation"),
    "bad UTF-8 in a first fragment": (lambda m: frame(0x1, m[:20] + b"\xff", fin=False), 1007, "not UTF-8"),
}


@pytest.mark.parametrize("step", [None, 1], ids=["whole", "byte by byte"])
@pytest.mark.parametrize("name", list(RAW_VIOLATIONS))
async def test_a_frame_violation_on_the_wire_gets_its_rfc_close_code(name: str, step: int | None) -> None:
    build, code, says = RAW_VIOLATIONS[name]
    if step is not None and "60 kB" in name:
        step = 1024  # 70 kB one byte at a time is only slow, not more telling
    provider, sink = ScriptedProvider(), ListSink()
    messages = script(1, 600)
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            client, _ = await RawClient.connect(gw.http_url)
            for message in messages[:10]:
                await client.send(text(message))
            try:
                for chunk in _chunks(build(messages[10].encode()), step):
                    await client.send(chunk)
            except trio.BrokenResourceError:  # the gateway may close as soon as it sees the violation
                pass
            frames = await _read_frames(client, until_close=False)
            await gw.idle()
    assert [opcode for opcode, _ in frames] == [0x8] and _close_code(frames) == code
    ended = sink.events[-1]
    assert ended["reason"] == "error" and says in ended["detail"], ended


# --------------------------------------------------------- 8. out of file descriptors


def _fill_descriptor_table() -> list[int]:
    """Lower this process's descriptor limit to just above the descriptors it has and
    take every free one below it: the next ``accept`` fails with EMFILE, for real."""
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    fillers = []
    while True:
        try:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            return fillers


async def test_accept_failures_are_logged_once_per_interval_with_a_count(autojump_clock, caplog) -> None:
    """Before: ``accept failed`` was logged on every retry, ten lines a second, while the
    descriptors were gone.  Now: one line at once, then one per interval carrying the
    count, the last count reported too once accepting works again."""
    caplog.set_level(logging.WARNING, logger="earpiece.gateway")
    provider = ScriptedProvider()
    edge = Edge(Gateway(Settings(port=0, provider=provider.name, max_busy=None), provider, [ListSink()]),
                hypercorn_config("127.0.0.1", 0), STREAM_PATH)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    client = trio.socket.socket()
    await client.connect(listener.getsockname())  # completed by the kernel; waits in the backlog
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    full_for = 35.0  # seconds (virtual) without a descriptor to accept into
    fillers: list[int] = []
    try:
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                fillers = _fill_descriptor_table()
                nursery.start_soon(edge.accept_loop, listener, None, nursery)
                await trio.sleep(full_for)
                resource.setrlimit(resource.RLIMIT_NOFILE, limits)
                for fd in fillers:
                    os.close(fd)
                fillers = []
                failures = edge.accept_failures.total
                assert await client.recv(1) == b""  # accepted at last, closed after the head timeout
                await trio.sleep(ACCEPT_ERRORS_LOG_INTERVAL)  # the last count's line is due by now
                nursery.cancel_scope.cancel()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        for fd in fillers:
            os.close(fd)
        client.close()
        listener.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("accept failed")]
    assert all("Too many open files" in line for line in lines), lines
    counts = [1 if line.startswith("accept failed:") else int(line.split()[2]) for line in lines]
    assert failures >= 0.9 * full_for / ACCEPT_ERRORS_PAUSE  # retried all along, ten times a second
    assert sum(counts) == failures == edge.accept_failures.total  # every failure counted in a line
    assert len(lines) <= full_for // ACCEPT_ERRORS_LOG_INTERVAL + 2, lines  # one line per interval


async def test_a_wsproto_client_sees_twilios_hang_up_end_cleanly() -> None:
    """The same hang-up with a real client library: before, the second close frame made
    wsproto raise "Connection already closed"."""
    provider, sink = ScriptedProvider(), ListSink()
    messages = script(1, 600)
    ws = WSConnection(ConnectionType.CLIENT)
    events: list[object] = []
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            stream = await _connect(gw.http_url)
            await stream.send_all(ws.send(WsRequest(host="gw.example.test", target="/twilio/stream")))
            while not events:
                ws.receive_data(await stream.receive_some())
                events += ws.events()
            for message in messages:
                await stream.send_all(ws.send(TextMessage(data=message)))
            while data := await _receive_or_end(stream):
                ws.receive_data(data)  # raises LocalProtocolError on a frame after the closing handshake
                for event in ws.events():
                    events.append(event)
                    if isinstance(event, CloseConnection):
                        await stream.send_all(ws.send(event.response()))
            ws.receive_data(None)
            await stream.aclose()
            await gw.idle()
    assert [type(event) for event in events] == [AcceptConnection, CloseConnection]
    assert events[1].code == 1000  # type: ignore[attr-defined]
    assert ws.state is ConnectionState.CLOSED
    assert sink.events[-1]["reason"] == "stop"


async def _receive_or_end(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some()
    except trio.BrokenResourceError:
        return b""
