"""A fake ElevenLabs Scribe v2 Realtime server that measures what the gateway delivers.

    python bench/fake_provider.py --port 0 --report out.json [--api-key KEY]

Serves, on 127.0.0.1 only:

* ``/v1/speech-to-text/realtime`` — the ElevenLabs realtime protocol: the
  ``xi-api-key`` header is required (HTTP 401 otherwise); ``audio_format`` from the
  query (``ulaw_8000`` or ``pcm_<rate>``); ``session_started`` on open; every message
  must be an ``input_audio_chunk`` JSON object with strict base64 ``audio_base_64``
  (anything else: ``input_error`` then close 1003); a ``partial_transcript`` every
  ``--partial-ms`` of audio; a VAD-like commit every ``--commit-ms`` and at each
  ``commit: true`` chunk (``committed_transcript``, then
  ``committed_transcript_with_timestamps`` when ``include_timestamps=true``); close
  frames are answered.
* ``/twilio/stream`` — a discard sink for Twilio-shaped traffic (calibrates the load
  generator without a gateway in between).
* ``GET /_bench/stats`` — a JSON snapshot (open streams, totals) for the runner.

Measured per provider stream: bytes and chunks received, and per chunk

* ``lag`` = arrival − first-chunk arrival − audio duration before the chunk (ms): how
  far the stream has fallen behind real time since its first chunk;
* ``e2e`` = arrival − the *scheduled* send time of the newest Twilio frame in the chunk
  (ms), read from the stamp ``bench/loadgen.py`` writes into the first 15 bytes of
  every 20 ms frame (mu-law passes through the gateway untouched): the pipeline's
  added latency, batching wait of older frames excluded.  Stamps also name the call
  and the frame index, so lost and duplicated frames are counted exactly.

Arrival times are ``time.monotonic_ns()`` when ``recv`` returned; ``CLOCK_MONOTONIC``
is shared by every process on the machine, so stamps from the load generator compare.
On SIGINT/SIGTERM (or after ``--max-seconds``) it writes the report and exits.
"""

from __future__ import annotations

import argparse
import binascii
import json
import math
import os
import resource
import signal
import socket
import sys
import time
from array import array
from typing import Any
from urllib.parse import parse_qs

import orjson
import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script

from bench.wslean import (  # noqa: E402
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    HandshakeError,
    accept_response,
    close_payload,
    http_response,
    read_handshake_request,
    recv_some,
    send_all,
    server_frame,
)

PATH = "/v1/speech-to-text/realtime"
TWILIO_PATH = "/twilio/stream"
STATS_PATH = "/_bench/stats"
DEFAULT_KEY = "bench-dummy-key"
FORMATS = {"ulaw_8000": ("ulaw", 8000, 1)} | {
    f"pcm_{r}": ("pcm", r, 2) for r in (8000, 16000, 22050, 24000, 44100, 48000)}
STAMP_MAGIC = 0xB5  # first byte of every stamped frame (see bench/loadgen.py)
STAMP_BYTES = 15
FRAME_BYTES = 160
DISCARD_POLL_S = 0.2
RECV_BULK = 1 << 20
CLIENT_CLOSE_1000 = b"\x88\x82\x00\x00\x00\x00\x03\xe8"  # zero-key close(1000), as loadgen sends


def percentiles(values: array | list[float]) -> dict[str, float | None]:
    """p50 / p90 / p99 / max of ``values`` (nearest rank), ``None`` when empty."""
    if not len(values):
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float) -> float:
        return round(ordered[min(n - 1, max(0, math.ceil(q * n) - 1))], 3)

    return {"n": n, "p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": round(ordered[-1], 3)}


class Stream:
    """What one provider connection received."""

    __slots__ = ("id", "call", "bytes_per_ms", "stamped", "bytes", "chunks", "first_ns", "last_ns",
                 "next_frame", "missing_frames", "duplicate_frames", "commits_requested", "closed",
                 "close_code", "committed_bytes", "partial_bytes", "seg_start_bytes")

    def __init__(self, ident: int, bytes_per_ms: float, stamped: bool) -> None:
        self.id = ident
        self.call: int | None = None
        self.bytes_per_ms = bytes_per_ms
        self.stamped = stamped
        self.bytes = 0
        self.chunks = 0
        self.first_ns = 0
        self.last_ns = 0
        self.next_frame: int | None = None
        self.missing_frames = 0
        self.duplicate_frames = 0
        self.commits_requested = 0
        self.closed = "open"
        self.close_code: int | None = None
        self.committed_bytes = 0  # segment bookkeeping for transcripts
        self.partial_bytes = 0
        self.seg_start_bytes = 0

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "call": self.call, "bytes": self.bytes, "audio_ms": round(self.bytes / self.bytes_per_ms),
                "chunks": self.chunks, "missing_frames": self.missing_frames,
                "duplicate_frames": self.duplicate_frames, "commits_requested": self.commits_requested,
                "closed": self.closed, "close_code": self.close_code,
                "span_s": round((self.last_ns - self.first_ns) / 1e9, 3) if self.chunks else 0.0}


class FakeProvider:
    def __init__(self, api_key: str, partial_ms: int, commit_ms: int) -> None:
        self.api_key = api_key
        self.partial_ms = partial_ms
        self.commit_ms = commit_ms
        self.streams: list[Stream] = []
        self.open_streams = 0
        self.lags = array("f")
        self.e2e = array("f")
        self.rejected: dict[str, int] = {}
        self.twilio_bytes = 0
        self.twilio_open = 0
        self.twilio_sockets = 0
        self.started_ns = time.monotonic_ns()
        self.total_bytes = 0  # audio bytes received on every provider stream

    # ------------------------------------------------------------------ connections

    async def handle(self, sock: socket.socket) -> None:
        try:
            method, target, headers, rest = await read_handshake_request(sock)
            path, _, query = target.partition("?")
            if method == "GET" and path == STATS_PATH:
                body = orjson.dumps(self.snapshot())
                await send_all(sock, http_response(200, "OK", body, "application/json"))
            elif path == PATH and headers.get("upgrade", "").lower() == "websocket":
                await self._elevenlabs(sock, headers, query, rest)
            elif path == TWILIO_PATH and headers.get("upgrade", "").lower() == "websocket":
                await self._discard(sock, headers, rest)
            else:
                self._reject("not_found")
                await send_all(sock, http_response(404, "Not Found", b"no such path\n"))
        except (HandshakeError, OSError):
            pass
        finally:
            sock.close()

    def _reject(self, why: str) -> None:
        self.rejected[why] = self.rejected.get(why, 0) + 1

    async def _elevenlabs(self, sock: socket.socket, headers: dict[str, str], query: str, rest: bytes) -> None:
        if headers.get("xi-api-key") != self.api_key:
            self._reject("auth")
            await send_all(sock, http_response(401, "Unauthorized", b'{"detail":"invalid api key"}',
                                               "application/json"))
            return
        params = parse_qs(query)
        fmt = FORMATS.get((params.get("audio_format") or ["pcm_16000"])[0])
        if fmt is None:
            self._reject("audio_format")
            await send_all(sock, http_response(400, "Bad Request", b"unsupported audio_format\n"))
            return
        kind, rate, width = fmt
        timestamps = (params.get("include_timestamps") or ["false"])[0] == "true"
        stream = Stream(len(self.streams), rate * width / 1000, stamped=kind == "ulaw")
        self.streams.append(stream)
        self.open_streams += 1
        try:
            await send_all(sock, accept_response(headers.get("sec-websocket-key", "")) + self._text({
                "message_type": "session_started", "session_id": f"fake-{stream.id}",
                "config": {"sample_rate": rate, "audio_format": (params.get("audio_format") or [""])[0],
                           "commit_strategy": (params.get("commit_strategy") or ["manual"])[0]}}))
            await self._serve_stream(sock, stream, rest, timestamps)
        finally:
            self.open_streams -= 1
            if stream.closed == "open":
                stream.closed = "abnormal"

    @staticmethod
    def _text(obj: dict[str, Any]) -> bytes:
        return server_frame(OP_TEXT, orjson.dumps(obj))

    async def _serve_stream(self, sock: socket.socket, stream: Stream, rest: bytes, timestamps: bool) -> None:
        reader = FrameReader()
        reader.feed(rest)
        now = time.monotonic_ns()
        loads = orjson.loads
        a2b = binascii.a2b_base64
        while True:
            out: list[bytes] = []
            for opcode, payload in reader.messages():
                if opcode == OP_TEXT:
                    try:
                        obj = loads(payload)
                        if type(obj) is not dict or obj.get("message_type") != "input_audio_chunk":
                            raise ValueError("expected an input_audio_chunk object")
                        audio = a2b(obj["audio_base_64"], strict_mode=True)
                        commit = obj.get("commit", False)
                        if type(commit) is not bool or type(obj.get("sample_rate")) is not int:
                            raise ValueError("commit must be a boolean and sample_rate an integer")
                    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
                        self._reject("input_error")
                        out.append(self._text({"message_type": "input_error", "error": str(exc)[:100]}))
                        out.append(server_frame(OP_CLOSE, close_payload(1003, "input_error")))
                        stream.closed = "rejected"
                        await send_all(sock, b"".join(out))
                        return
                    if audio:
                        self._audio(stream, audio, now, out, timestamps)
                    if commit:
                        stream.commits_requested += 1
                        self._commit(stream, out, timestamps)
                elif opcode == OP_CLOSE:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    stream.close_code = code
                    stream.closed = "clean"
                    out.append(server_frame(OP_CLOSE, payload[:2]))
                    await send_all(sock, b"".join(out))
                    return
                elif opcode == OP_PING:
                    out.append(server_frame(OP_PONG, payload))
                elif opcode == OP_BINARY:
                    self._reject("binary_frame")
            if out:
                await send_all(sock, b"".join(out))
            data = await recv_some(sock)
            if not data:
                return
            now = time.monotonic_ns()
            reader.feed(data)

    def _audio(self, stream: Stream, audio: bytes, now: int, out: list[bytes], timestamps: bool) -> None:
        before = stream.bytes
        if stream.chunks == 0:
            stream.first_ns = now
        stream.chunks += 1
        stream.last_ns = now
        self.lags.append((now - stream.first_ns) / 1e6 - before / stream.bytes_per_ms)
        stream.bytes = before + len(audio)
        self.total_bytes += len(audio)
        if stream.stamped:
            self._stamps(stream, audio, before, now)
        # transcripts: a partial every partial_ms of the open segment, a commit every commit_ms
        partial_bytes = self.partial_ms * stream.bytes_per_ms
        commit_bytes = self.commit_ms * stream.bytes_per_ms
        if stream.bytes - stream.seg_start_bytes >= commit_bytes:
            self._commit(stream, out, timestamps)
        elif stream.bytes - stream.partial_bytes >= partial_bytes:
            stream.partial_bytes = stream.bytes
            start, end = self._span(stream)
            out.append(self._text({"message_type": "partial_transcript", "text": f"words {start} to {end}"}))

    def _stamps(self, stream: Stream, audio: bytes, before: int, now: int) -> None:
        pos = (-before) % FRAME_BYTES
        newest = None
        while pos + STAMP_BYTES <= len(audio):
            if audio[pos] == STAMP_MAGIC:
                value = int.from_bytes(audio[pos:pos + STAMP_BYTES], "big")
                call = (value >> 88) & 0xFFFFFF
                frame = (value >> 64) & 0xFFFFFF
                newest = value & 0xFFFFFFFFFFFFFFFF
                if stream.call is None:
                    stream.call = call
                expected = stream.next_frame
                if expected is not None and frame != expected:
                    if frame > expected:
                        stream.missing_frames += frame - expected
                    else:
                        stream.duplicate_frames += 1
                if expected is None or frame >= expected:
                    stream.next_frame = frame + 1
            pos += FRAME_BYTES
        if newest is not None:
            self.e2e.append((now - newest) / 1e6)

    def _span(self, stream: Stream) -> tuple[int, int]:
        return round(stream.seg_start_bytes / stream.bytes_per_ms), round(stream.bytes / stream.bytes_per_ms)

    def _commit(self, stream: Stream, out: list[bytes], timestamps: bool) -> None:
        start, end = self._span(stream)
        text = f"words {start} to {end}" if end > start else ""
        out.append(self._text({"message_type": "committed_transcript", "text": text}))
        if timestamps:
            words = [] if not text else [
                {"text": "words", "start": start / 1000, "end": (start + end) / 2000, "type": "word"},
                {"text": " ", "start": (start + end) / 2000, "end": (start + end) / 2000, "type": "spacing"},
                {"text": f"{start}-{end}", "start": (start + end) / 2000, "end": end / 1000, "type": "word"}]
            out.append(self._text({"message_type": "committed_transcript_with_timestamps", "text": text,
                                   "language_code": "en", "words": words}))
        stream.seg_start_bytes = stream.partial_bytes = stream.bytes

    async def _discard(self, sock: socket.socket, headers: dict[str, str], rest: bytes) -> None:
        """Counts bytes without parsing frames (it calibrates the load generator, so it
        must be cheaper than it); answers the client's close, which ends its last write."""
        await send_all(sock, accept_response(headers.get("sec-websocket-key", "")))
        self.twilio_open += 1
        self.twilio_sockets += 1
        self.twilio_bytes += len(rest)
        try:
            while True:
                await trio.sleep(DISCARD_POLL_S)  # read in bulk: one wake per 10 messages
                while True:
                    try:
                        data = sock.recv(RECV_BULK)
                    except BlockingIOError:
                        break
                    if not data:
                        return
                    self.twilio_bytes += len(data)
                    if data.endswith(CLIENT_CLOSE_1000):
                        await send_all(sock, server_frame(OP_CLOSE, close_payload(1000)))
                        return
        finally:
            self.twilio_open -= 1

    # ------------------------------------------------------------------ reporting

    def snapshot(self) -> dict[str, Any]:
        return {"open_streams": self.open_streams, "streams": len(self.streams), "audio_bytes": self.total_bytes,
                "twilio_open": self.twilio_open, "twilio_sockets": self.twilio_sockets,
                "twilio_bytes": self.twilio_bytes, "chunks": len(self.lags)}

    def report(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        streams = [s.summary() for s in self.streams]
        return {
            "streams": len(streams),
            "open_streams": self.open_streams,
            "closed": {k: sum(1 for s in streams if s["closed"] == k) for k in ("clean", "abnormal", "rejected")},
            "bytes": sum(s["bytes"] for s in streams),
            "chunks": len(self.lags),
            "lag_ms": percentiles(self.lags),
            "e2e_ms": percentiles(self.e2e),
            "missing_frames": sum(s["missing_frames"] for s in streams),
            "duplicate_frames": sum(s["duplicate_frames"] for s in streams),
            "rejected": self.rejected,
            "twilio_discard": {"sockets": self.twilio_sockets, "bytes": self.twilio_bytes},
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "wall_s": round((time.monotonic_ns() - self.started_ns) / 1e9, 3),
            "per_stream": streams,
        }


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    fake = FakeProvider(args.api_key, args.partial_ms, args.commit_ms)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(4096)
    listener.setblocking(False)
    print(f"listening on {listener.getsockname()[1]}", flush=True)

    async def accept_loop(nursery: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener)
            while True:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    break
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                nursery.start_soon(fake.handle, conn)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept_loop, nursery)

            async def stop_on_signal() -> None:
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            nursery.cancel_scope.deadline = trio.current_time() + args.max_seconds
    listener.close()
    return fake.report()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed on stdout)")
    parser.add_argument("--api-key", default=DEFAULT_KEY)
    parser.add_argument("--partial-ms", type=int, default=500)
    parser.add_argument("--commit-ms", type=int, default=5000)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop by itself after this long")
    parser.add_argument("--report", help="write the JSON report here (default: stdout)")
    args = parser.parse_args(argv)
    report = trio.run(serve, args)
    text = json.dumps(report, indent=1)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text)
        brief = {k: report[k] for k in ("streams", "closed", "chunks", "lag_ms", "e2e_ms", "missing_frames")}
        print(json.dumps(brief), flush=True)
    else:
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
