"""The benchmark's own checks: ``.venv/bin/python -m pytest bench/test_bench.py -q``.

(Outside ``tests/`` on purpose: the project's suite does not run load tools.)
"""

from __future__ import annotations

import argparse
import os
import random
import socket

import orjson
import trio

from bench import fake_provider, loadgen
from bench.baselines import bare_forwarder
from bench.procstat import cpu_seconds, rss_kib
from bench.wslean import OP_CLOSE, OP_TEXT, FrameReader, client_frame, close_payload, frame_header
from providers.twilio import Media, TwilioStreamDecoder, encode_connected


def test_media_template_reproduces_the_encoder_for_every_frame_shape():
    tails = loadgen.noise_tails()
    for index in (0, 1, 999, 0xFFFFFF):
        messages = loadgen.CallMessages(index, 0xDEADBEEF, tails)
        for k in (0, 1, 9, 10, 99, 100, 4999, 50_000):
            t_ns = 123_456_789_000 + k * 20_000_000
            assert messages.media_text(k, t_ns) == messages.media_reference(k, t_ns)


def test_loadgen_messages_decode_as_one_twilio_stream():
    messages = loadgen.CallMessages(7, 1, loadgen.noise_tails())
    decoder = TwilioStreamDecoder()
    reader = FrameReader()
    reader.feed(messages.connected() + messages.start())
    for _opcode, payload in reader.messages():
        decoder.receive(payload.decode())
    for k in range(300):
        event = decoder.receive(messages.media_text(k, 10**12).decode())
        assert type(event) is Media and event.chunk == k + 1 and event.timestamp == k * 20
        assert len(event.payload) == 160 and event.payload[0] == loadgen.STAMP_MAGIC
    assert decoder.statistics().sequence_gaps == 0


def test_frame_reader_unmasks_and_joins_fragments_fed_byte_by_byte():
    rng = random.Random(3)
    payloads = [rng.randbytes(n) for n in (0, 1, 125, 126, 400, 65535, 70000)]
    wire = bytearray()
    for payload in payloads:
        key = rng.randbytes(4)
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        wire += frame_header(OP_TEXT, len(payload), True)[:-4] + key + masked
    # a fragmented message: text (not FIN) + continuation (FIN), unmasked
    wire += bytes([0x01, 3]) + b"abc" + bytes([0x80, 2]) + b"de"
    wire += client_frame(OP_CLOSE, close_payload(1000))
    reader = FrameReader()
    got = []
    for i in range(len(wire)):
        reader.feed(wire[i:i + 1])
        got += reader.messages()
    assert got == [(OP_TEXT, p) for p in payloads] + [(OP_TEXT, b"abcde"), (OP_CLOSE, b"\x03\xe8")]


def test_fake_provider_reads_stamps_back():
    fake = fake_provider.FakeProvider("k", 500, 5000)
    stream = fake_provider.Stream(0, 8.0, stamped=True)
    tail = bytes(145)
    audio = b"".join(loadgen.stamp(42, k, 1_000_000 * k) + tail for k in range(5))
    fake._audio(stream, audio, 10_000_000, [], False)
    gap = b"".join(loadgen.stamp(42, k, 1_000_000 * k) + tail for k in (7, 8))
    fake._audio(stream, gap, 20_000_000, [], False)
    assert stream.call == 42 and stream.missing_frames == 2 and stream.next_frame == 9
    assert list(fake.e2e) == [6.0, 12.0]  # arrival − stamp of the newest frame, ms


def test_procstat_sees_this_process():
    assert cpu_seconds(os.getpid()) > 0
    assert rss_kib(os.getpid()) > 1000


async def _serve_fake(nursery: trio.Nursery) -> tuple[int, fake_provider.FakeProvider]:
    fake = fake_provider.FakeProvider(fake_provider.DEFAULT_KEY, partial_ms=200, commit_ms=400)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)

    async def accept() -> None:
        with listener:
            while True:
                await trio.lowlevel.wait_readable(listener)
                conn, _ = listener.accept()
                conn.setblocking(False)
                nursery.start_soon(fake.handle, conn)

    nursery.start_soon(accept)
    return listener.getsockname()[1], fake


def _loadgen_args(port: int, calls: int, seconds: float) -> argparse.Namespace:
    return argparse.Namespace(host="127.0.0.1", port=port, path="/twilio/stream", calls=calls,
                              frames=round(seconds * 50), ramp=0.1, start_at=None, scheduler="wheel",
                              max_seconds=30.0)


async def test_loadgen_against_the_discard_sink_sends_every_frame():
    async with trio.open_nursery() as nursery:
        port, fake = await _serve_fake(nursery)
        report = await loadgen.generate(_loadgen_args(port, calls=3, seconds=0.4))
        nursery.cancel_scope.cancel()
    assert report["frames_sent"] == report["frames_planned"] == 60
    assert report["close_codes"] == {"1000": 3} and report["errors"] == {}


async def test_whole_chain_through_the_bare_forwarder_loses_nothing():
    from hypercorn.config import Config
    from hypercorn.trio import serve

    async with trio.open_nursery() as nursery:
        fake_port, fake = await _serve_fake(nursery)
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        forwarder = bare_forwarder.Forwarder(f"ws://127.0.0.1:{fake_port}", fake_provider.DEFAULT_KEY)
        binds = await nursery.start(lambda task_status: serve(forwarder, config, mode="asgi",
                                                              shutdown_trigger=trio.sleep_forever,
                                                              task_status=task_status))
        port = int(binds[0].rsplit(":", 1)[1])
        report = await loadgen.generate(_loadgen_args(port, calls=2, seconds=1.0))
        with trio.fail_after(10):
            while fake.open_streams:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    summary = fake.report()
    assert report["frames_sent"] == 100 and summary["bytes"] == 100 * 160
    assert summary["missing_frames"] == 0 and summary["closed"]["clean"] == 2
    assert summary["lag_ms"]["n"] == 20 and summary["e2e_ms"]["n"] == 20
    assert {s["call"] for s in summary["per_stream"]} == {0, 1}
    assert all(s["commits_requested"] == 1 for s in summary["per_stream"])
    assert orjson.loads(encode_connected())["event"] == "connected"


def test_histogram_quantiles_interpolate_inside_the_bucket_like_promql():
    from bench.run import histogram_quantiles

    text = "\n".join([
        "# TYPE d histogram",
        'd_bucket{le="0.1",provider="a"} 40', 'd_bucket{le="0.2",provider="a"} 80', 'd_bucket{le="+Inf",provider="a"} 80',
        'd_count{provider="a"} 80', 'd_sum{provider="a"} 9',
        'd_bucket{le="0.1",provider="b"} 10', 'd_bucket{le="0.2",provider="b"} 18', 'd_bucket{le="+Inf",provider="b"} 20',
        'd_count{provider="b"} 20', 'd_sum{provider="b"} 3', ""])
    # summed over providers: 50 under 0.1 s, 98 under 0.2 s, 100 in all
    assert histogram_quantiles(text, "d") == {"count": 100, "p50": 100.0, "p99": ">200"}
    assert histogram_quantiles(text, "d", (0.74,)) == {"count": 100, "p74": 150.0}
