"""Run-loop passes and thread CPU per provider message received: one session, 127.0.0.1.

    .venv/bin/python bench/receive_path.py
    PYTHONPATH=/tmp/main_x .venv/bin/python bench/receive_path.py   # another tree (A/B)

An ElevenLabs session (``open_websocket_session``, real handshake) hears 2000
``partial_transcript`` messages from a server thread, one every 0.5 ms (each arrives
on its own, as partials do); the receiving task loops on ``session.receive()`` as
SttReceiver does.  Counted: passes of trio's run loop (an ``Instrument``'s
``after_io_wait``) and this thread's CPU time, per message.  With one session every
pass includes an ``epoll`` wait: the CPU figure is a ratio between trees, not a
gateway's cost per message.
"""
import base64
import hashlib
import json
import socket
import sys
import threading
import time
from pathlib import Path

import trio

sys.path.append(str(Path(__file__).resolve().parent.parent))
from providers.elevenlabs import ElevenLabsCodec  # noqa: E402
from providers.websocket import open_websocket_session  # noqa: E402

print("providers from", sys.modules["providers.websocket"].__file__)
N = 2000
MSG = json.dumps({"message_type": "partial_transcript", "text": "hello there how are you"}).encode()
FRAME = bytes((0x81, len(MSG))) + MSG

def serve(listener):
    sock, _ = listener.accept()
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    key = next(l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:"))
    acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    time.sleep(0.2)
    for _ in range(N):
        sock.sendall(FRAME)
        time.sleep(0.0005)
    time.sleep(1)
    sock.close()

class Passes(trio.abc.Instrument):
    n = 0
    def after_io_wait(self, timeout):
        Passes.n += 1

async def main():
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    async with open_websocket_session("elevenlabs", ElevenLabsCodec(), f"ws://127.0.0.1:{listener.getsockname()[1]}/x") as s:
        first = await s.receive()
        p0, t0 = Passes.n, time.thread_time_ns()
        for _ in range(N - 1):
            await s.receive()
        print(f"passes per message {(Passes.n - p0) / (N - 1):.2f}, CPU µs per message {(time.thread_time_ns() - t0) / (N - 1) / 1000:.1f}")

trio.run(main, instruments=[Passes()])
