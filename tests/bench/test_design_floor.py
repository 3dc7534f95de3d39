"""bench/design_floor.py does the job it is measured on: a real process on 127.0.0.1
forwards every byte of each call to a fake ElevenLabs, in order, ends each call
cleanly, and keeps serving after bad requests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
import trio
import trio_websocket

from tests.fakes.elevenlabs_server import TEST_KEY, FakeElevenLabs
from tests.fakes.ws_server import serve_fake
from tests.helpers import open_stream_socket, tone, twilio_script

FLOOR = Path(__file__).resolve().parents[2] / "bench" / "design_floor.py"


@asynccontextmanager
async def floor_process(provider_base_url: str) -> AsyncIterator[str]:
    """``design_floor.py --port 0`` as a subprocess; yields its stream URL once it serves."""
    env = dict(os.environ, ELEVENLABS_API_KEY=TEST_KEY, ELEVENLABS_BASE_URL=provider_base_url)
    process = await trio.lowlevel.open_process([sys.executable, str(FLOOR), "--port", "0"], env=env,
                                               stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        first = b""
        while b"\n" not in first:
            data = await process.stdout.receive_some()
            assert data, "design_floor.py exited before serving"
            first += data
        yield first.split()[2].decode() + "/twilio/stream"  # "design_floor on ws://127.0.0.1:PORT provider=..."
        assert process.poll() is None, "design_floor.py exited while serving"
    finally:
        process.terminate()
        await process.wait()
        await process.stdout.aclose()  # type: ignore[union-attr]


async def call(url: str, messages: list[str]) -> int:
    """Play a call's messages; the close code the gateway ended it with."""
    async with open_stream_socket(url) as ws:
        for message in messages:
            await ws.send_message(message)
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await ws.get_message()
    return closed.value.reason.code


async def http_status(url: str) -> bytes:
    """A plain GET (not an upgrade): the status line the gateway answers with."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while b"\r\n" not in answer:
            data = await stream.receive_some()
            if not data:
                break
            answer += data
    return answer.split(b"\r\n")[0]


async def test_every_byte_of_each_call_reaches_the_provider_in_order_and_the_process_keeps_serving():
    fake = FakeElevenLabs(vad_commit_every_ms=1000)
    first, second = tone(1500, seed=1), tone(1230, seed=2)  # the second ends mid-batch and mid-frame
    with trio.fail_after(60):
        async with serve_fake(fake.handler) as base_url, floor_process(base_url) as url:
            assert await call(url, [m for m, _ in twilio_script(first, n=1)]) == 1000
            assert await http_status(url) == b"HTTP/1.1 400 Bad Request"
            assert await call(url, [m for m, _ in twilio_script(tone(100), n=3)][:3] + ["not json"]) == 1008
            assert await call(url, [m for m, _ in twilio_script(second, n=2)]) == 1000
    padded = second + b"\xff" * (-len(second) % 160)  # Twilio frames are whole: the script pads the last
    one, bad, two = fake.connections
    assert bytes(one.audio) == first and bytes(two.audio) == padded
    assert bytes(bad.audio) == tone(100)[:160]  # the one frame before the malformed message
    # 100 ms batches, then the end-of-audio commit; its answer came before the call ended
    assert [len(orjson.loads(m)["audio_base_64"]) for m in one.received] == [1068] * 15 + [0]
    assert orjson.loads(one.received[-1])["commit"] is True
    assert one.finals == ["words 0 to 1000", "words 1000 to 1500"]
    assert two.finals == ["words 0 to 1000", "words 1000 to 1240"]
    assert one.headers["xi-api-key"] == TEST_KEY and one.query["audio_format"] == ["ulaw_8000"]
