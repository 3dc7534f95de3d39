"""Python heap and trio tasks one open provider session holds, in-process, exact.

    .venv/bin/python bench/provider_socket_memory.py [--sessions 200]

Opens ``--sessions`` ElevenLabs sessions with ``open_websocket_session`` (the gateway's
connect path, its real handshake) to a WebSocket server on 127.0.0.1 that accepts and
then only reads (a blocking socket per connection in a thread of its own; what the
server allocates is filtered out), each with a task waiting in ``session.receive()`` as
``SttReceiver`` does and one batch sent.  ``tracemalloc`` snapshots before the sessions
open and while all are open (after ``gc.collect()``); the difference ÷ N is one
session's heap, by file.
Tasks are counted from trio's task tree (``trio.lowlevel``), the same way.

Runs against whichever tree is first on ``sys.path`` (``PYTHONPATH=/tmp/main_x`` for
an A/B against main).
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import socket
import sys
import threading
import tracemalloc
from collections import Counter
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from bench.send_path import BATCH, RESOURCE  # noqa: E402
from providers.elevenlabs import ElevenLabsCodec  # noqa: E402
from providers.websocket import open_websocket_session  # noqa: E402


class ReadingServer:
    """Accepts WebSocket upgrades on 127.0.0.1 and then reads and drops every byte."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

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
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                head += chunk
            key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            while sock.recv(4096):
                pass

    def close(self) -> None:
        self._listener.close()


def _tasks() -> int:
    count, stack = 0, [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


async def measure(port: int, sessions: int, top: int) -> None:
    url = f"ws://127.0.0.1:{port}{RESOURCE}"
    print(f"providers from {sys.modules['providers.websocket'].__file__}")
    opened, release = trio.Event(), trio.Event()
    remaining = sessions

    async def one() -> None:
        nonlocal remaining
        async with open_websocket_session("elevenlabs", ElevenLabsCodec(), url) as session:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.receive)
                await session.send_audio(BATCH)
                remaining -= 1
                if not remaining:
                    opened.set()
                await release.wait()
                nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep_forever)  # a warm-up of every code path first
        async with trio.open_nursery() as warm:
            for _ in range(5):
                warm.start_soon(_warm, url)
        gc.collect()
        tasks_before = _tasks()
        before = tracemalloc.take_snapshot()
        for _ in range(sessions):
            nursery.start_soon(one)
        await opened.wait()
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        after = tracemalloc.take_snapshot()
        tasks_after = _tasks()
        release.set()
        nursery.cancel_scope.cancel()
    server_side = [tracemalloc.Filter(False, __file__), tracemalloc.Filter(False, threading.__file__)]
    after, before = after.filter_traces(server_side), before.filter_traces(server_side)
    stats = after.compare_to(before, "filename")
    total = sum(s.size_diff for s in stats)
    print(f"{sessions} sessions: {total / sessions / 1024:.2f} KiB of Python heap per open session, "
          f"{(tasks_after - tasks_before) / sessions:.2f} trio tasks per session "
          f"(the session's own receiver task counted)")
    by_file: Counter[str] = Counter()
    for s in stats:
        name = s.traceback[0].filename
        short = name.split("site-packages/")[-1] if "site-packages/" in name else Path(name).name
        by_file[short] += s.size_diff
    for name, size in by_file.most_common(top):
        print(f"  {size / sessions / 1024:7.2f} KiB  {name}")


async def _warm(url: str) -> None:
    async with open_websocket_session("elevenlabs", ElevenLabsCodec(), url) as session:
        await session.send_audio(BATCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    server = ReadingServer()
    tracemalloc.start()
    try:
        trio.run(measure, server.port, args.sessions, args.top)
    finally:
        server.close()


if __name__ == "__main__":
    import trio.testing  # noqa: F401 - wait_all_tasks_blocked

    main()
