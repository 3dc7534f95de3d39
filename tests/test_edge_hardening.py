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

import pytest
import trio

from gateway.edge import HEAD_TIMEOUT, Edge
from gateway.serve import hypercorn_config
from gateway.wsframes import MAX_FRAGMENTS, ServerFrameReader, WebSocketError
from providers.scripted import ScriptedProvider
from tests.conftest import running_gateway
from tests.helpers import ListSink
from tests.test_stream_socket import UPGRADE, RawClient, frame, script, text

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
