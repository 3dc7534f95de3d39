"""CPU-only microbenchmarks of the per-frame path, in µs per operation.

    .venv/bin/python bench/micro.py [--quick] [--json out.json]

* Twilio decode: ``TwilioStreamDecoder.receive`` on a ``media`` message (a streaming
  decoder, sequence numbers in order), and its parts (``orjson.loads``, strict
  base64, the stateless ``decode_message``);
* every provider codec that has a conformance case (``tests/conformance_cases_*.py``
  ``CASES``; ``providers/*/protocol.py`` without one are listed as skipped):
  encode = ``send_audio`` of a 100 ms batch + ``data_to_send()``;
  decode = ``receive`` of the case's partial-transcript message;
* for scale, the fixed stack's share of one frame: wsproto parsing one masked Twilio
  text frame (what Hypercorn does per message) and serializing one 100 ms provider
  message (what trio-websocket does per send).

Each figure is the best of ``--repeat`` runs of ``--number`` operations (the median
is shown too), timed with this thread's CPU clock (``time.thread_time_ns``): time the
thread spent preempted by other processes is not counted, so figures from a shared,
loaded machine stay comparable.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gc
import importlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from providers.twilio import TwilioStreamDecoder, encode_connected, encode_media_event, encode_start  # noqa: E402
from providers.twilio.converter import decode_message  # noqa: E402

CASE_MODULES = ("tests.conformance_cases_json", "tests.conformance_cases_binary")
BATCH = bytes(range(256)) * 3 + bytes(32)  # 800 bytes = 100 ms of 8 kHz mu-law
FRAME = bytes((i * 37) & 0xFF for i in range(160))
SID = "MZ" + "2" * 32


def measure(op: Callable[[int], None], number: int, repeat: int) -> dict[str, float]:
    """``op(n)`` runs n operations; returns best and median µs per operation."""
    times = []
    gc.collect()
    for _ in range(repeat):
        t = time.thread_time_ns()
        op(number)
        times.append((time.thread_time_ns() - t) / number / 1000)
    return {"best_us": round(min(times), 3), "median_us": round(statistics.median(times), 3)}


def media_messages(count: int) -> list[str]:
    return [encode_media_event(stream_sid=SID, sequence_number=k + 2, chunk=k + 1, timestamp=k * 20,
                               payload=FRAME) for k in range(count)]


def twilio_cases(number: int) -> dict[str, Callable[[int], None]]:
    messages = media_messages(number)
    start = encode_start(stream_sid=SID, account_sid="AC" + "0" * 32, call_sid="CA" + "1" * 32,
                         custom_parameters={"session": "abc"})
    one = messages[0]

    def decoder_receive(n: int) -> None:
        decoder = TwilioStreamDecoder()
        decoder.receive(encode_connected())
        decoder.receive(start)
        receive = decoder.receive
        for text in messages[:n]:
            receive(text)

    def decode_stateless(n: int) -> None:
        for text in messages[:n]:
            decode_message(text)

    def loads(n: int) -> None:
        f = orjson.loads
        for _ in range(n):
            f(one)

    payload = orjson.loads(one)["media"]["payload"]

    def b64(n: int) -> None:
        f = base64.b64decode
        for _ in range(n):
            f(payload, validate=True)

    def a2b(n: int) -> None:
        f = binascii.a2b_base64
        for _ in range(n):
            f(payload, strict_mode=True)

    return {"twilio: TwilioStreamDecoder.receive(media)": decoder_receive,
            "twilio:   decode_message(media) (stateless)": decode_stateless,
            "twilio:   orjson.loads(media message)": loads,
            "twilio:   a2b_base64(payload, strict_mode=True) (fast path)": a2b,
            "twilio:   b64decode(payload, validate=True) (converter)": b64}


def load_codec_cases() -> list[Any]:
    cases = []
    for name in CASE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        cases.extend(module.CASES)
    return cases


def codec_cases(cases: list[Any]) -> dict[str, Callable[[int], None]]:
    out: dict[str, Callable[[int], None]] = {}
    for case in cases:
        def encode(n: int, case: Any = case) -> None:
            codec = case.make_codec()
            for message in case.handshake:
                codec.receive(message)
            codec.data_to_send()
            send, drain = codec.send_audio, codec.data_to_send
            for _ in range(n):
                send(BATCH)
                drain()

        def decode(n: int, case: Any = case) -> None:
            codec = case.make_codec()
            for message in case.handshake:
                codec.receive(message)
            receive, partial = codec.receive, case.partial_message
            for _ in range(n):
                receive(partial)

        out[f"{case.name}: encode 100 ms (send_audio + data_to_send)"] = encode
        out[f"{case.name}: decode partial (receive)"] = decode
    return out


def stack_cases() -> dict[str, Callable[[int], None]]:
    from wsproto import ConnectionType
    from wsproto.connection import Connection
    from wsproto.events import TextMessage

    text = media_messages(1)[0]
    mask = b"\x1f\x2e\x3d\x4c"
    raw = text.encode()
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(raw))
    frame = bytes([0x81, 0xFE]) + len(raw).to_bytes(2, "big") + mask + masked
    provider_text = ('{"message_type":"input_audio_chunk","audio_base_64":"' + base64.b64encode(BATCH).decode()
                     + '","commit":false,"sample_rate":8000}')

    def wsproto_parse(n: int) -> None:
        conn = Connection(ConnectionType.SERVER)
        for _ in range(n):
            conn.receive_data(frame)
            for _event in conn.events():
                pass

    def wsproto_send(n: int) -> None:
        conn = Connection(ConnectionType.CLIENT)
        for _ in range(n):
            conn.send(TextMessage(data=provider_text))

    from providers.wsframes import ServerFrameReader

    def ours_parse(n: int) -> None:
        reader = ServerFrameReader(65_536)
        for _ in range(n):
            reader.receive_data(frame)

    five = frame * 5

    def ours_parse_batch(n: int) -> None:  # what one SO_RCVLOWAT wake-up hands over
        reader = ServerFrameReader(65_536)
        for _ in range(n // 5):
            reader.receive_data(five)

    return {"stack: wsproto parse of one masked media frame (server)": wsproto_parse,
            "ours: ServerFrameReader parse of one masked media frame": ours_parse,
            "ours: the same, per frame, 5 frames per read": ours_parse_batch,
            "stack: wsproto serialize of one 100 ms provider message (client)": wsproto_send}


def hop_cases() -> dict[str, Callable[[int], None]]:
    """A batch from TwilioReader to the sender's hands, 100 calls in one run loop: through
    the mu-law channel and a pass-through Resampler task into the ReplayBuffer (as calls
    ran before), or straight into the ReplayBuffer (now).  A stand-in reader offers a
    batch and yields; a stand-in sender takes it (``next_batch`` / ``mark_sent``)."""
    import trio

    from actors.channels import AUDIO_CHANNEL_SIZE
    from actors.messages import AudioBatch
    from actors.replay import ReplayBuffer
    from actors.resampler import Resampler
    from actors.stats import CallStats
    from providers.base import MULAW_8K

    calls = 100

    def run(n: int, via_resampler: bool) -> None:
        per_call = max(1, n // calls)

        async def call() -> None:
            stats = CallStats()
            replay = ReplayBuffer(30_000, stats, MULAW_8K)

            async def sender() -> None:
                try:
                    while True:
                        replay.mark_sent(await replay.next_batch())
                except trio.EndOfChannel:
                    return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                if via_resampler:
                    send, receive = trio.open_memory_channel[AudioBatch](AUDIO_CHANNEL_SIZE)
                    nursery.start_soon(Resampler(MULAW_8K).run, receive, replay)
                    out = send
                else:
                    out = replay
                async with out:
                    for k in range(per_call):
                        stats.audio_bytes += 800
                        out.send_nowait(AudioBatch(k * 100, 100, BATCH))
                        await trio.lowlevel.checkpoint()  # the reader waits for its next batch

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                for _ in range(calls):
                    nursery.start_soon(call)

        trio.run(main)

    return {
        "hop: reader → channel → Resampler task → ReplayBuffer → sender, per batch (before)":
            lambda n: run(n, True),
        "hop: reader → ReplayBuffer → sender, per batch (now)": lambda n: run(n, False),
    }


def deadline_cases() -> dict[str, Callable[[int], None]]:
    """What one move of a cancel scope's deadline costs in trio (a call moved TwilioReader's
    media limits once per batch, SttSender's timer once or twice per batch, the watchdog
    twice per transcript event): 1000 scopes held by 1000 waiting tasks, as on a loaded
    gateway; each operation sets one of them, to a new value or to the same one."""
    import trio

    def run(n: int, same: bool) -> None:
        async def main() -> None:
            scopes = [trio.CancelScope() for _ in range(1000)]
            go = trio.Event()

            async def hold(scope: trio.CancelScope) -> None:
                with scope:
                    await go.wait()

            async with trio.open_nursery() as nursery:
                for scope in scopes:
                    nursery.start_soon(hold, scope)
                await trio.testing.wait_all_tasks_blocked()
                now = trio.current_time()
                for k in range(n):
                    scopes[k % 1000].deadline = now + 100 + (0 if same else k * 1e-6)
                go.set()

        trio.run(main)

    import trio.testing  # noqa: F401 - wait_all_tasks_blocked

    return {"trio: move a cancel scope's deadline (1000 scopes registered)": lambda n: run(n, False),
            "trio: set a cancel scope's deadline to its value": lambda n: run(n, True)}


def uncovered_protocols(cases: list[Any]) -> list[str]:
    covered = {case.name.split("_")[0] for case in cases}
    found = sorted(p.parent.name for p in (REPO / "providers").glob("*/protocol.py"))
    return [name for name in found if name != "twilio" and name not in covered]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="--number 2000 --repeat 3")
    parser.add_argument("--only", help="run only benchmarks whose name contains this")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.number, args.repeat = 2000, 3
    os.chdir(REPO)
    cases = load_codec_cases()
    benches = {**twilio_cases(args.number), **codec_cases(cases), **stack_cases(), **hop_cases(), **deadline_cases()}
    results: dict[str, Any] = {}
    width = max(len(k) for k in benches)
    print(f"{'benchmark':<{width}}  {'best µs':>8}  {'median µs':>9}")
    for name, op in benches.items():
        if args.only and args.only not in name:
            continue
        results[name] = r = measure(op, args.number, args.repeat)
        print(f"{name:<{width}}  {r['best_us']:>8.2f}  {r['median_us']:>9.2f}", flush=True)
    skipped = uncovered_protocols(cases)
    if skipped:
        print(f"no conformance case (skipped): {', '.join(skipped)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"number": args.number, "repeat": args.repeat,
                                               "results": results, "skipped": skipped}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
