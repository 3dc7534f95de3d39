"""Measured proposals for files the benchmark does not own: the gateway, patched in memory.

    python bench/experiments.py VARIANT[,VARIANT...] -- serve --provider elevenlabs --port 8080 ...

Runs ``earpiece`` (``gateway.cli.main``) after applying the named patches to this
process only; nothing on disk changes, so colleagues' work in the same tree is never
touched and the experiment is reverted by not running it.  ``bench/run.py`` compares
variants side by side with the unpatched gateway::

    .venv/bin/python bench/run.py --baseline '' --levels 200 \\
        --variant 'gc_freeze=python bench/experiments.py gc_freeze -- serve --provider {provider} --port {port} --sink jsonl:{events}'

Variants (each is what a real change to the named file would do):

``gc_freeze``
    ``gc.collect(); gc.freeze()`` once everything is imported, before serving
    (``gateway/serve.py`` or ``gateway/cli.py``): the collector stops re-scanning the
    ~100k long-lived objects of quart, hypercorn, attrs classes... on every
    generation-2 pass.
``rcvlowat``
    ``SO_RCVLOWAT`` = 4 media messages on each accepted ``/twilio/stream`` socket
    (``gateway/serve.py`` / the stream endpoint): the kernel wakes the reader once per
    ~80 ms of audio instead of once per 20 ms frame, and one ``recv`` returns 4-5
    frames (the gateway batches 100 ms anyway).  Not safe as is: a stream that goes
    quiet with fewer bytes pending than the mark would wait for more; a real change
    needs a timer or the mark lowered near ``stop``.
``lean_frames``
    once a ``/twilio/stream`` socket is accepted, text frames are parsed by a minimal
    RFC 6455 reader and handed to the ASGI app directly; Hypercorn's H11Protocol →
    WSStream → wsproto → WebsocketBuffer layers (and their per-message events) are
    skipped.  Any control or binary frame hands the rest of the bytes back to
    Hypercorn.  This is the gain available from owning the Twilio socket's framing
    (a dedicated trio listener for ``/twilio/stream`` behind the same ``TextSource``
    seam) rather than a Hypercorn setting.
``replay_8s``
    ``CallConfig.replay_ms`` = 8000 instead of 30 000 (``actors/config.py``): the replay
    buffer holds sent-but-uncommitted audio as 100 ms ``AudioBatch`` objects; with a
    provider that commits rarely it grows toward ``replay_ms`` per call (30 s of
    mu-law = 240 kB + ~300 objects).
``no_read_timeout_scope``
    Hypercorn's read loop without its per-``receive_some`` ``fail_after(inf)`` cancel
    scope (what a dedicated reader would not do either).
"""

from __future__ import annotations

import gc
import socket
import sys
from collections.abc import Callable
from math import inf
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RCVLOWAT_BYTES = 4 * 380  # a media message is ~396-400 bytes on the wire


def _connected_twilio_stream(server) -> object | None:  # noqa: ANN001
    """The accepted ``/twilio/stream`` WSStream of a Hypercorn TCPServer, if any."""
    from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream

    protocol = getattr(getattr(server, "protocol", None), "protocol", None)
    stream = getattr(protocol, "stream", None)
    if (isinstance(stream, WSStream) and stream.state == ASGIWebsocketState.CONNECTED
            and stream.scope.get("path", "").rstrip("/") == "/twilio/stream"):
        return stream
    return None


def _patch_read_loop(*, rcvlowat: bool = False, lean: bool = False, scope: bool = True) -> None:
    import trio
    from hypercorn.events import Closed, RawData
    from hypercorn.trio import tcp_server

    max_recv = tcp_server.MAX_RECV

    async def _read_data(self) -> None:  # noqa: ANN001 - mirrors TCPServer._read_data
        ws = None
        buffer = bytearray()
        while True:
            try:
                if scope:
                    with trio.fail_after(self.config.read_timeout or inf):
                        data = await self.stream.receive_some(max_recv)
                else:
                    data = await self.stream.receive_some(max_recv)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                break
            if ws is not None and lean:
                if not data:
                    break
                buffer += data
                handed_back = await _lean_messages(ws, buffer)
                if handed_back is not None:  # a control frame: Hypercorn takes over again
                    ws = None
                    await self.protocol.handle(RawData(bytes(handed_back)))
                continue
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
            if ws is None and (rcvlowat or lean) and not getattr(self, "_bench_seen", False):
                ws = _connected_twilio_stream(self)
                if ws is not None:
                    self._bench_seen = True
                    if rcvlowat:
                        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, RCVLOWAT_BYTES)
                    if not lean:
                        ws = None
        await self.protocol.handle(Closed())

    tcp_server.TCPServer._read_data = _read_data


async def _lean_messages(ws, buffer: bytearray) -> bytearray | None:  # noqa: ANN001
    """Deliver complete text frames in ``buffer`` to the app; returns the bytes to give
    back to Hypercorn when a non-text frame shows up (None: stay lean)."""
    pos, end = 0, len(buffer)
    put = ws.app_put
    while end - pos >= 2:
        b0, b1 = buffer[pos], buffer[pos + 1]
        if b0 != 0x81 or not b1 & 0x80:  # not a final, masked text frame: hand back
            rest = bytearray(buffer[pos:])
            buffer.clear()
            return rest
        length, head = b1 & 0x7F, 6
        if length == 126:
            if end - pos < 4:
                break
            length, head = (buffer[pos + 2] << 8) | buffer[pos + 3], 8
        elif length == 127:
            if end - pos < 10:
                break
            length, head = int.from_bytes(buffer[pos + 2:pos + 10], "big"), 14
        if end - pos < head + length:
            break
        key = bytes(buffer[pos + head - 4:pos + head])
        payload = bytes(buffer[pos + head:pos + head + length])
        if key != b"\x00\x00\x00\x00":
            n = len(payload)
            payload = (int.from_bytes(payload, "little")
                       ^ int.from_bytes((key * (n // 4 + 1))[:n], "little")).to_bytes(n, "little")
        pos += head + length
        await put({"type": "websocket.receive", "bytes": None, "text": payload.decode("utf-8")})
    del buffer[:pos]
    return None


def replay_ms(ms: int) -> None:
    import attrs

    import gateway.app

    original = gateway.app.CallConfig

    def smaller_replay(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return attrs.evolve(original(*args, **kwargs), replay_ms=ms)

    gateway.app.CallConfig = smaller_replay


def gc_freeze() -> None:
    import gateway.app  # noqa: F401 - everything the server imports, before freezing
    import gateway.serve  # noqa: F401
    import hypercorn.trio  # noqa: F401
    import providers.elevenlabs  # noqa: F401
    import providers.scripted  # noqa: F401

    gc.collect()
    gc.freeze()


VARIANTS: dict[str, Callable[[], None]] = {
    "gc_freeze": gc_freeze,
    "rcvlowat": lambda: _patch_read_loop(rcvlowat=True),
    "lean_frames": lambda: _patch_read_loop(lean=True),
    "no_read_timeout_scope": lambda: _patch_read_loop(scope=False),
    "lean_frames_rcvlowat": lambda: _patch_read_loop(lean=True, rcvlowat=True, scope=False),
    "replay_8s": lambda: replay_ms(8000),
    "none": lambda: None,
}


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 1:
        print(f"usage: experiments.py VARIANT[,VARIANT] -- earpiece-args...\nvariants: {', '.join(VARIANTS)}",
              file=sys.stderr)
        return 2
    names = [n for n in argv[0].split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    freeze_last = "gc_freeze" in names
    for name in names:
        if name != "gc_freeze":
            VARIANTS[name]()
    if freeze_last:
        gc_freeze()
    from gateway.cli import main as earpiece

    return earpiece(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
