"""CPU cost of the provider send path, in µs per 100 ms batch.

    .venv/bin/python bench/send_path.py [--transport memory|tcp|both] [--calls 1,100] [--batches 20000] [--repeat 7]
    .venv/bin/python bench/send_path.py --transport tcp --calls 100 --floor   # beside the bare floor

Drives the real path a call's audio takes to the provider, with nothing stubbed:
``SttSender.run`` (``send_timeout`` 5 s as in ``CallConfig``, keepalive off and on)
reads ``AudioBatch``es of 800 bytes (100 ms of 8 kHz mu-law) from a memory channel
through a ``DirectLink`` (a lone session: no replay buffer, no watchdog) and
sends each through a ``WebSocketSession`` driving an ``ElevenLabsCodec`` (base64 +
JSON), our client framing (``providers/wsconnection.py``: masking, one write per
batch) and a stream; at the end it finalizes.  A second task waits in ``session.receive()`` as ``SttReceiver`` does.  The
channel is filled before the clock starts, so the figure is the sender's side only.

Transports:

* ``memory``: ``trio.testing.memory_stream_pair()``; the fake server is a trio task
  that does the handshake with sans-I/O wsproto and then just reads (its few µs per
  batch, one ``receive_some``, are in the figure);
* ``tcp``: a real connection over 127.0.0.1 opened by ``open_websocket_session`` (the
  gateway's connect path); the fake server is a plain blocking socket in another
  thread per connection that does the handshake and then just reads (and answers the
  close).  Only the trio thread's CPU is counted, the kernel's share of each ``send``
  included.

``--calls`` runs that many sessions at once, the batches shared among them: with one,
every yield to trio's scheduler is a whole pass of the run loop (an ``epoll_wait``
included); with 100, one pass serves many tasks, as in a loaded gateway.

Each figure is the best of ``--repeat`` runs of ``--batches`` batches (median shown
too), on this thread's CPU clock (``time.thread_time_ns``): time spent preempted by
other processes is not counted, so figures from a loaded machine stay comparable.
"""

from __future__ import annotations

import argparse
import gc
import socket
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import trio
import trio.testing
import wsproto
import wsproto.events

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from actors.messages import AudioBatch  # noqa: E402
from actors.session_link import DirectLink  # noqa: E402
from actors.stats import CallStats  # noqa: E402
from actors.stt_sender import SttSender  # noqa: E402
from providers.elevenlabs import ElevenLabsCodec  # noqa: E402
from providers.websocket import WebSocketSession, open_websocket_session  # noqa: E402
from providers.wsclient import WatchedStream  # noqa: E402
from providers.wsconnection import client_handshake  # noqa: E402

BATCH = bytes((i * 37) & 0xFF for i in range(800))  # 100 ms of 8 kHz mu-law
BATCH_MS = 100
SEND_TIMEOUT = 5.0  # CallConfig's default
KEEPALIVE = 5.0  # long enough never to fire: only its scope's cost shows
RESOURCE = "/v1/speech-to-text/realtime"
READ_SIZE = 65536

Opener = Callable[[], AbstractAsyncContextManager[WebSocketSession]]


def _server_handshake(conn: wsproto.WSConnection, data: bytes | None) -> tuple[bytes, bool]:
    """Feed ``data`` to a server-side wsproto; returns (bytes to answer, accepted)."""
    conn.receive_data(data)
    for event in conn.events():
        if isinstance(event, wsproto.events.Request):
            return conn.send(wsproto.events.AcceptConnection()), True
    return b"", False


@asynccontextmanager
async def memory_session() -> AsyncIterator[WebSocketSession]:
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def serve() -> None:
        conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        accepted = False
        while not accepted:
            answer, accepted = _server_handshake(conn, await server_stream.receive_some(READ_SIZE))
            if answer:
                await server_stream.send_all(answer)
        while await server_stream.receive_some(READ_SIZE):
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        ws = await client_handshake(WatchedStream(client_stream), "127.0.0.1", RESOURCE, max_message_bytes=1 << 22)
        yield WebSocketSession("elevenlabs", ElevenLabsCodec(), ws)
        nursery.cancel_scope.cancel()


class TcpServer:
    """A WebSocket server on 127.0.0.1 that accepts and then only reads, in a thread."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(sock,), daemon=True).start()

    @staticmethod
    def _read(sock: socket.socket) -> None:
        with sock:
            conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
            accepted = False
            while not accepted:
                data = sock.recv(READ_SIZE)
                if not data:
                    return
                answer, accepted = _server_handshake(conn, data)
                sock.sendall(answer)
            while data := sock.recv(READ_SIZE):  # parsed only to answer the close
                conn.receive_data(data)
                for event in conn.events():
                    if isinstance(event, wsproto.events.CloseConnection):
                        sock.sendall(conn.send(event.response()))
                        return

    def close(self) -> None:
        self._listener.close()


async def one_run(open_session: Opener, calls: int, batches: int, keepalive: float | None) -> float:
    """µs of this thread's CPU per batch: ``calls`` sessions, ``batches`` batches each."""
    go, done = trio.Event(), trio.CancelScope()
    remaining = calls

    async def call(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal remaining
        send, receive = trio.open_memory_channel[AudioBatch](batches)
        for k in range(batches):
            send.send_nowait(AudioBatch(k * BATCH_MS, BATCH_MS, BATCH))
        send.close()
        sender = SttSender(keepalive, send_timeout=SEND_TIMEOUT)
        async with open_session() as session, trio.open_nursery() as nursery:
            nursery.start_soon(session.receive)  # waits on the socket, as SttReceiver does
            task_status.started()
            await go.wait()
            await sender.run(DirectLink(session, receive, CallStats(), provider="elevenlabs"))
            assert session.messages_sent == batches + 1  # every batch, then the commit
            remaining -= 1
            if not remaining:
                done.cancel()
            await trio.sleep_forever()  # keep every session open until the clock stops

    async with trio.open_nursery() as nursery:
        for _ in range(calls):
            await nursery.start(call)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        start = time.thread_time_ns()
        go.set()
        with done:
            await trio.sleep_forever()
        elapsed = time.thread_time_ns() - start
        nursery.cancel_scope.cancel()
    return elapsed / (calls * batches) / 1000


async def raw_run(port: int, calls: int, batches: int) -> float:
    """The floor under the same work without a session: per batch a receive from a
    memory channel (one checkpoint, as the sender's), the ElevenLabs codec, one masked
    client frame (random key, ``providers.wsframes.unmask``'s XOR) and one ``send`` on
    the non-blocking socket (waiting only when the kernel buffer is full).  No lock, no
    wsproto, no cancel scope, no second checkpoint.  µs of this thread's CPU per batch."""
    import base64
    import random

    from providers.wsframes import unmask

    request = (f"GET {RESOURCE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Key: {base64.b64encode(random.randbytes(16)).decode()}\r\n\r\n").encode()
    go, done = trio.Event(), trio.CancelScope()
    remaining = calls
    rng = random.Random(1)

    def frame(text: str | bytes) -> bytes:
        data = text.encode() if isinstance(text, str) else text
        key = rng.randbytes(4)
        n = len(data)
        head = bytes((0x81, 0xFE)) + n.to_bytes(2, "big") if n >= 126 else bytes((0x81, 0x80 | n))
        return head + key + unmask(data, key)

    async def call(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal remaining
        send, receive = trio.open_memory_channel[AudioBatch](batches)
        for k in range(batches):
            send.send_nowait(AudioBatch(k * BATCH_MS, BATCH_MS, BATCH))
        send.close()
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        codec = ElevenLabsCodec()
        task_status.started()
        await go.wait()
        async for batch in receive:
            codec.send_audio(batch.payload)
            for message in codec.data_to_send():
                view = memoryview(frame(message))
                while view:
                    try:
                        view = view[sock.send(view):]
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(sock)
        remaining -= 1
        if not remaining:
            done.cancel()
        await trio.sleep_forever()
        sock.close()

    async with trio.open_nursery() as nursery:
        for _ in range(calls):
            await nursery.start(call)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        start = time.thread_time_ns()
        go.set()
        with done:
            await trio.sleep_forever()
        elapsed = time.thread_time_ns() - start
        nursery.cancel_scope.cancel()
    return elapsed / (calls * batches) / 1000


async def raw_bench(port: int, calls: int, batches: int, repeat: int) -> tuple[float, float]:
    await raw_run(port, calls, min(batches, 200))
    runs = [await raw_run(port, calls, batches) for _ in range(repeat)]
    return min(runs), statistics.median(runs)


async def bench(open_session: Opener, calls: int, batches: int, repeat: int,
                keepalive: float | None) -> tuple[float, float]:
    await one_run(open_session, calls, min(batches, 200), keepalive)  # warm-up
    runs = [await one_run(open_session, calls, batches, keepalive) for _ in range(repeat)]
    return min(runs), statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=("memory", "tcp", "both"), default="both")
    parser.add_argument("--calls", default="1,100", help="concurrent sessions, a comma-separated list")
    parser.add_argument("--batches", type=int, default=5000, help="batches per run, shared by the calls")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--floor", action="store_true",
                        help="also over tcp: the same batches with the codec, our own client framing and a "
                             "plain socket send (no session, no lock): what the session layer costs")
    args = parser.parse_args()

    transports = ("memory", "tcp") if args.transport == "both" else (args.transport,)
    print(f"µs of CPU per 100 ms batch, best (median) of {args.repeat} runs of {args.batches} batches")
    print("| transport | calls | keepalive | best µs | median µs |\n|---|---|---|---|---|")
    for transport in transports:
        server = TcpServer() if transport == "tcp" else None

        def open_session() -> AbstractAsyncContextManager[WebSocketSession]:
            if server is None:
                return memory_session()
            return open_websocket_session("elevenlabs", ElevenLabsCodec(), f"ws://127.0.0.1:{server.port}{RESOURCE}")

        for calls in (int(n) for n in args.calls.split(",")):
            for keepalive in (None, KEEPALIVE):
                best, median = trio.run(bench, open_session, calls, args.batches // calls, args.repeat, keepalive)
                label = "off" if keepalive is None else f"{keepalive:g} s"
                print(f"| {transport} | {calls} | {label} | {best:.2f} | {median:.2f} |", flush=True)
        if server is not None:
            if args.floor:
                for calls in (int(n) for n in args.calls.split(",")):
                    best, median = trio.run(raw_bench, server.port, calls, args.batches // calls, args.repeat)
                    print(f"| tcp, floor: codec + own framing + socket send | {calls} | off | {best:.2f} "
                          f"| {median:.2f} |", flush=True)
            server.close()


if __name__ == "__main__":
    main()
