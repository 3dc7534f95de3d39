"""Load generator: N concurrent Twilio Media Streams calls against a gateway.

    python bench/loadgen.py --url ws://127.0.0.1:8080/twilio/stream --calls 200 \\
        --call-seconds 20 --ramp 4 [--report out.json]

Each call is one trio task on one WebSocket: ``connected``, ``start``, then one ``media``
message per 20 ms on an absolute schedule (``t0 + k * 20 ms``: lateness never
accumulates), then ``stop`` and a close.  Call starts are spread evenly over
``--ramp`` seconds, so the calls' 20 ms phases interleave instead of bursting.

Exact Twilio shapes, cheaply: each call derives a byte template from
``providers.twilio.encode_media_event`` (its streamSid, sentinel counters and payload
split out) and checks the template against the encoder for its first and last frame;
a frame is then one ``bytes % (seq, chunk, timestamp, payload)`` plus an 8-byte
WebSocket header (``bench.wslean``: masked with the zero key, so the payload is not
XORed).  The payload is 160 bytes of mu-law whose first 15 bytes are a stamp: magic
``0xB5``, the call index (3 bytes), the frame index (3 bytes) and the frame's
scheduled send time (``CLOCK_MONOTONIC`` ns, 8 bytes); the other 145 bytes cycle
through 5 s of pre-encoded noise.  ``bench/fake_provider.py`` reads the stamps back.

Scheduling (``--scheduler``): ``wheel`` (default) parks each call task on a 1 ms timer
wheel that one ticker task drives, so a frame costs one reschedule instead of a trio
cancel scope + deadline + ``Cancelled`` per ``sleep_until``; ``sleep`` uses
``trio.sleep_until`` directly (for comparison).  Sends go straight to the non-blocking
socket and park only when the kernel buffer is full.

Bounded: ``--calls`` × ``--call-seconds`` frames, and ``--max-seconds`` wall time.
The JSON report holds frames sent, send lateness (actual − scheduled send time)
percentiles, close codes, errors and the generator's own CPU (total and over the
steady window where every call is live).
"""

from __future__ import annotations

import argparse
import base64
import heapq
import json
import math
import os
import random
import resource
import socket
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script

from bench.wslean import (  # noqa: E402
    OP_CLOSE,
    OP_TEXT,
    FrameReader,
    HandshakeError,
    client_frame,
    client_handshake,
    close_payload,
    connect_tcp,
    frame_header,
    recv_some,
    send_all,
)
from providers.twilio import encode_connected, encode_media_event, encode_start, encode_stop  # noqa: E402

FRAME_MS = 20
FRAME_BYTES = 160
STAMP_MAGIC = 0xB5
STAMP_BYTES = 15  # multiple of 3: its base64 (20 chars) never straddles the rest's
NOISE_FRAMES = 250  # 5 s of filler audio, shared by every call
LATE_BUCKET_S = 0.0001  # lateness histogram: 0.1 ms buckets
LATE_BUCKETS = 20000  # up to 2 s; later lands in the last bucket
CLOSE_TIMEOUT = 10.0


# ------------------------------------------------------------------------ messages

_SENTINEL_PAYLOAD = bytes(range(96, 256))  # 160 bytes whose base64 appears nowhere else
_SEQ, _CHUNK, _TS = 987654301, 987654302, 987654303


def media_template(stream_sid: str, track: str = "inbound") -> bytes:
    """``encode_media_event``'s output for this stream with the four varying fields as
    ``%d %d %d %s`` (sequenceNumber, chunk, timestamp, payload base64)."""
    probe = encode_media_event(stream_sid=stream_sid, sequence_number=_SEQ, chunk=_CHUNK, timestamp=_TS,
                               payload=_SENTINEL_PAYLOAD, track=track)
    original = probe
    if "%" in probe:
        raise ValueError("a media message with '%' in it cannot be templated")
    sentinels = [str(_SEQ), str(_CHUNK), str(_TS), base64.b64encode(_SENTINEL_PAYLOAD).decode()]
    for sentinel, slot in zip(sentinels, ("%d", "%d", "%d", "%s")):
        if probe.count(sentinel) != 1:
            raise ValueError(f"sentinel {sentinel[:12]} not unique in {probe[:80]}")
        probe = probe.replace(sentinel, slot)
    template = probe.encode()
    if template % (_SEQ, _CHUNK, _TS, sentinels[3].encode()) != original.encode():
        raise ValueError("encode_media_event's field order changed: seq, chunk, timestamp, payload expected")
    return template


def stamp(call: int, frame: int, t_ns: int) -> bytes:
    return ((STAMP_MAGIC << 112) | (call << 88) | (frame << 64) | t_ns).to_bytes(STAMP_BYTES, "big")


def noise_tails(seed: int = 1) -> tuple[list[bytes], list[bytes]]:
    """(raw 145-byte tails, their base64) for ``NOISE_FRAMES`` frames of filler audio."""
    rng = random.Random(seed)
    raw = [rng.randbytes(FRAME_BYTES - STAMP_BYTES) for _ in range(NOISE_FRAMES)]
    return raw, [base64.b64encode(t) for t in raw]


class CallMessages:
    """Every message of one call, built on demand from the encoder-derived template."""

    def __init__(self, index: int, run_id: int, tails: tuple[list[bytes], list[bytes]]) -> None:
        self.index = index
        self.call_sid = f"CA{run_id:08x}{index:024x}"
        self.stream_sid = f"MZ{run_id:08x}{index:024x}"
        self.account_sid = f"AC{run_id:08x}{0:024x}"
        self.template = media_template(self.stream_sid)
        self.raw_tails, self.b64_tails = tails

    def connected(self) -> bytes:
        return client_frame(OP_TEXT, encode_connected().encode())

    def start(self) -> bytes:
        return client_frame(OP_TEXT, encode_start(
            stream_sid=self.stream_sid, account_sid=self.account_sid, call_sid=self.call_sid,
            custom_parameters={"bench_call": str(self.index)}).encode())

    def media_text(self, k: int, t_ns: int) -> bytes:
        """The ``media`` message of frame ``k`` (0-based), scheduled at ``t_ns``."""
        payload = base64.b64encode(stamp(self.index, k, t_ns)) + self.b64_tails[k % NOISE_FRAMES]
        return self.template % (k + 2, k + 1, k * FRAME_MS, payload)

    def media_reference(self, k: int, t_ns: int) -> bytes:
        """The same message straight from the encoder (self-check)."""
        payload = stamp(self.index, k, t_ns) + self.raw_tails[k % NOISE_FRAMES]
        return encode_media_event(stream_sid=self.stream_sid, sequence_number=k + 2, chunk=k + 1,
                                  timestamp=k * FRAME_MS, payload=payload).encode()

    def stop(self, frames: int) -> bytes:
        return client_frame(OP_TEXT, encode_stop(stream_sid=self.stream_sid, sequence_number=frames + 2,
                                                 account_sid=self.account_sid, call_sid=self.call_sid).encode())


# ---------------------------------------------------------------------- scheduling


class Wheel:
    """Parks tasks until an absolute trio time, at ``resolution`` granularity (never
    early).  One ticker task sleeps once per slot and reschedules every task due."""

    def __init__(self, resolution: float = 0.001) -> None:
        self.resolution = resolution
        self._slots: dict[int, list[trio.lowlevel.Task]] = {}
        self._keys: list[int] = []
        self._now_key = -1

    async def wait_until(self, deadline: float) -> None:
        key = math.ceil(deadline / self.resolution)
        if key <= self._now_key:
            await trio.lowlevel.checkpoint()
            return
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = []
            heapq.heappush(self._keys, key)
        task = trio.lowlevel.current_task()
        slot.append(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            slot.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def run(self) -> None:
        res = self.resolution
        keys, slots, reschedule = self._keys, self._slots, trio.lowlevel.reschedule
        next_key = math.ceil(trio.current_time() / res)
        while True:
            await trio.sleep_until(next_key * res)
            self._now_key = now_key = math.floor(trio.current_time() / res)
            while keys and keys[0] <= now_key:
                for task in slots.pop(heapq.heappop(keys)):
                    reschedule(task)
            next_key = now_key + 1


class SleepScheduler:
    async def wait_until(self, deadline: float) -> None:
        await trio.sleep_until(deadline)

    async def run(self) -> None:
        await trio.sleep_forever()


# -------------------------------------------------------------------------- calls


class Results:
    def __init__(self, calls: int) -> None:
        self.frames_sent = [0] * calls
        self.connect_ms: list[float] = []
        self.close_codes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.late_hist = [0] * (LATE_BUCKETS + 1)
        self.connected = 0
        self.completed = 0
        self.live = 0
        self.max_live = 0
        self.self_check_failures = 0

    def late_percentiles(self) -> dict[str, float | None]:
        total = sum(self.late_hist)
        out: dict[str, float | None] = {"n": total}
        for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999), ("max", 1.0)):
            if not total:
                out[name] = None
                continue
            target = max(1, math.ceil(q * total))
            seen = 0
            for bucket, count in enumerate(self.late_hist):
                seen += count
                if seen >= target:
                    out[name] = round((bucket + 1) * LATE_BUCKET_S * 1000, 2)  # upper edge, ms
                    break
        return out


async def run_call(index: int, args: argparse.Namespace, plan_start: float, clock_offset: float,
                   scheduler: Wheel | SleepScheduler, results: Results,
                   tails: tuple[list[bytes], list[bytes]], run_id: int) -> None:
    """One call; ``clock_offset`` = trio time − ``time.monotonic()``."""
    await scheduler.wait_until(plan_start)
    messages = CallMessages(index, run_id, tails)
    frames = args.frames
    begin = trio.current_time()
    try:
        sock = await connect_tcp(args.host, args.port)
    except OSError as exc:
        results.errors[f"connect: {exc.strerror or exc}"] += 1
        return
    live = False
    try:
        rest = await client_handshake(sock, args.host, args.port, args.path)
        results.connect_ms.append((trio.current_time() - begin) * 1000)
        results.connected += 1
        results.live += 1
        live = True
        results.max_live = max(results.max_live, results.live)
        await send_all(sock, messages.connected() + messages.start())
        t0 = trio.current_time()  # media schedule origin (trio time)
        t0_ns = int((t0 - clock_offset) * 1e9)  # the same instant, CLOCK_MONOTONIC ns
        step_ns = FRAME_MS * 1_000_000
        # self-check: the template reproduces the encoder exactly
        for k in (0, frames - 1):
            if messages.media_text(k, t0_ns + k * step_ns) != messages.media_reference(k, t0_ns + k * step_ns):
                results.self_check_failures += 1
                raise RuntimeError("media template differs from encode_media_event")
        template, b64_tails, b64 = messages.template, messages.b64_tails, base64.b64encode
        hist = results.late_hist
        wait_until = scheduler.wait_until
        sent_frames = 0
        for k in range(frames):
            due = t0 + k * 0.02
            await wait_until(due)
            late = trio.current_time() - due
            hist[min(int(late / LATE_BUCKET_S), LATE_BUCKETS)] += 1
            text = template % (k + 2, k + 1, k * FRAME_MS,
                               b64(((STAMP_MAGIC << 112) | (index << 88) | (k << 64) | (t0_ns + k * step_ns))
                                   .to_bytes(STAMP_BYTES, "big")) + b64_tails[k % NOISE_FRAMES])
            data = frame_header(OP_TEXT, len(text), True) + text
            try:
                n = sock.send(data)
            except BlockingIOError:
                n = 0
            if n < len(data):  # kernel buffer full: park until writable
                await send_all(sock, data[n:])
            sent_frames += 1
            results.frames_sent[index] = sent_frames
        await wait_until(t0 + frames * 0.02)
        await send_all(sock, messages.stop(frames) + client_frame(OP_CLOSE, close_payload(1000)))
        results.close_codes[await _await_close(sock, rest)] += 1
        results.completed += 1
    except (BrokenPipeError, ConnectionResetError) as exc:
        results.errors[f"{type(exc).__name__} after {results.frames_sent[index]} frames"
                       if results.frames_sent[index] else type(exc).__name__] += 1
    except HandshakeError as exc:
        results.errors[f"handshake: {exc}"[:80]] += 1
    except OSError as exc:
        results.errors[f"{type(exc).__name__}: {exc}"[:80]] += 1
    finally:
        sock.close()
        if live:
            results.live -= 1


async def _await_close(sock: socket.socket, rest: bytes) -> str:
    """Read until the gateway's close frame (its code) or EOF."""
    reader = FrameReader()
    reader.feed(rest)
    with trio.move_on_after(CLOSE_TIMEOUT):
        while True:
            for opcode, payload in reader.messages():
                if opcode == OP_CLOSE:
                    return str(int.from_bytes(payload[:2], "big")) if len(payload) >= 2 else "1005"
            data = await recv_some(sock)
            if not data:
                return "eof"
            reader.feed(data)
    return "timeout"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def generate(args: argparse.Namespace) -> dict[str, Any]:
    clock_offset = trio.current_time() - time.monotonic()
    start_mono = args.start_at if args.start_at is not None else time.monotonic() + 0.5
    start = start_mono + clock_offset
    scheduler: Wheel | SleepScheduler = Wheel() if args.scheduler == "wheel" else SleepScheduler()
    results = Results(args.calls)
    tails = noise_tails()
    run_id = random.getrandbits(32)
    cpu0, wall0 = _cpu(), time.monotonic()
    window = {}
    # steady window: every call is live (after the last start + 1 s, before the first stop)
    w_start = start + args.ramp + 1.0
    w_end = start + args.frames * FRAME_MS / 1000 - 0.5

    async def sample_window() -> None:
        if w_end - w_start < 1.0:
            return
        await trio.sleep_until(w_start)
        c0, t0 = _cpu(), time.monotonic()
        frames0 = sum(results.frames_sent)
        await trio.sleep_until(w_end)
        c1, t1 = _cpu(), time.monotonic()
        window.update(cpu_s=round(c1 - c0, 3), wall_s=round(t1 - t0, 3), live=results.live,
                      frames=sum(results.frames_sent) - frames0)

    with trio.move_on_after(args.max_seconds) as bound:
        async with trio.open_nursery() as outer:
            outer.start_soon(scheduler.run)
            outer.start_soon(sample_window)
            async with trio.open_nursery() as calls:
                for i in range(args.calls):
                    plan = start + (i * args.ramp / args.calls if args.calls > 1 else 0.0)
                    calls.start_soon(run_call, i, args, plan, clock_offset, scheduler, results, tails, run_id)
            outer.cancel_scope.cancel()
    cpu_s, wall_s = _cpu() - cpu0, time.monotonic() - wall0
    sent = sum(results.frames_sent)
    connect = sorted(results.connect_ms)
    return {
        "calls": args.calls,
        "connected": results.connected,
        "completed": results.completed,
        "max_live": results.max_live,
        "frames_planned": args.calls * args.frames,
        "frames_sent": sent,
        "frames_sent_per_call": results.frames_sent,
        "call_seconds": args.frames * FRAME_MS / 1000,
        "ramp_s": args.ramp,
        "start_monotonic": start_mono,
        "scheduler": args.scheduler,
        "send_late_ms": results.late_percentiles(),
        "connect_ms": {"p50": round(connect[len(connect) // 2], 2) if connect else None,
                       "max": round(connect[-1], 2) if connect else None},
        "close_codes": dict(results.close_codes),
        "errors": dict(results.errors),
        "self_check_failures": results.self_check_failures,
        "timed_out": bound.cancelled_caught,
        "cpu_s": round(cpu_s, 3),
        "wall_s": round(wall_s, 3),
        "steady_window": window,
        "steady_cpu_pct": round(100 * window["cpu_s"] / window["wall_s"], 1) if window.get("wall_s") else None,
        "us_per_frame": round(1e6 * window["cpu_s"] / window["frames"], 2) if window.get("frames") else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/twilio/stream")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--call-seconds", type=float, default=20.0)
    parser.add_argument("--ramp", type=float, default=4.0, help="spread call starts over this many seconds")
    parser.add_argument("--start-at", type=float, help="CLOCK_MONOTONIC seconds of the first start (default: now + 0.5)")
    parser.add_argument("--scheduler", choices=("wheel", "sleep"), default="wheel")
    parser.add_argument("--max-seconds", type=float, help="hard bound (default: ramp + call + 60 s)")
    parser.add_argument("--report", help="write the JSON report here (default: stdout)")
    args = parser.parse_args(argv)
    url = urlsplit(args.url)
    if url.scheme != "ws" or url.hostname not in ("127.0.0.1", "localhost"):
        parser.error("--url must be ws://127.0.0.1:PORT/... (loopback only)")
    if not 1 <= args.calls <= 0xFFFFFF or args.call_seconds <= 0 or args.call_seconds > 3600:
        parser.error("--calls must be 1..16777215 and --call-seconds 0..3600")
    args.host, args.port, args.path = "127.0.0.1", url.port or 80, url.path or "/"
    args.frames = max(1, round(args.call_seconds * 1000 / FRAME_MS))
    if args.max_seconds is None:
        args.max_seconds = args.ramp + args.call_seconds + 60.0
    report = trio.run(generate, args)
    text = json.dumps(report)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text)
        brief = {k: v for k, v in report.items() if k != "frames_sent_per_call"}
        print(json.dumps(brief), flush=True)
    else:
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
