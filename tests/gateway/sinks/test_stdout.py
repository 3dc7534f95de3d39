"""The stdout sink on a terminal: the partial line is rewritten in place, committed lines
stay; with several calls, transcript lines carry a short call label.  Run for real on a
pseudo-terminal (``os.openpty``), asserting the bytes the terminal receives."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import trio

from gateway.sinks.stdout import REWRITE, LiveCaption
from gateway.simulator import simulate_call
from tests.helpers import call_ids, tone

ROOT = Path(__file__).resolve().parents[3]
TEST_LIMIT = 120  # seconds: a bound, never an assertion on speed
ESC_REWRITE = REWRITE.encode()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("EARPIECE_", "PROMETHEUS_"))}


def screen(output: bytes) -> list[str]:
    """What stays on the terminal: each line as left after its last rewrite."""
    lines = output.replace(b"\r\n", b"\n").split(b"\n")
    return [line.rsplit(ESC_REWRITE, 1)[-1].decode() for line in lines if line.rsplit(ESC_REWRITE, 1)[-1]]


async def read_all(master: int) -> bytes:
    """Everything written to the pty until every writer closed it (EIO on Linux)."""
    chunks = []
    while True:
        await trio.lowlevel.wait_readable(master)
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


async def test_demo_on_a_terminal_rewrites_the_partial_line_and_keeps_the_committed_ones():
    command = [sys.executable, "-m", "gateway.cli", "demo", "--fast", "--provider", "scripted"]
    plain = subprocess.run(command, capture_output=True, text=True, timeout=TEST_LIMIT, env=clean_env(), cwd=ROOT)
    assert plain.returncode == 0, plain.stderr
    master, slave = os.openpty()
    try:
        with trio.fail_after(TEST_LIMIT):
            process = await trio.lowlevel.open_process(command, stdout=slave, stderr=subprocess.DEVNULL,
                                                       env=clean_env(), cwd=ROOT)
            os.close(slave)
            slave = -1
            output = await read_all(master)
            assert await process.wait() == 0
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    # off a terminal: every line as before
    plain_lines = plain.stdout.splitlines()
    assert "COMMITTED: audio 0 to 2000" in plain_lines and any(line.startswith("PARTIAL: ") for line in plain_lines)
    # on it: each partial rewrites the bottom line and is never ended by a newline ...
    assert ESC_REWRITE + b"PARTIAL: audio 0 to 500" in output
    assert not re.search(rb"PARTIAL: [^\r\n\x1b]*\r?\n", output)
    assert output.count(b"PARTIAL: ") == sum(line.startswith("PARTIAL: ") for line in plain_lines)
    # ... a committed line replaces it for good, and the screen keeps exactly the plain lines without partials
    assert ESC_REWRITE + b"COMMITTED: audio 0 to 2000\r\n" in output
    sid = re.compile(r"\[CA\w+\]")  # each demo call has its own SID
    assert [sid.sub("[CA…]", line) for line in screen(output)] == [
        sid.sub("[CA…]", line) for line in plain_lines if not line.startswith("PARTIAL: ")]


async def test_a_gateway_on_a_terminal_labels_the_lines_of_concurrent_calls():
    command = [sys.executable, "-m", "gateway.cli", "serve", "--port", "0", "--provider", "scripted",
               "--sink", "stdout", "--max-busy", "0"]
    master, slave = os.openpty()
    first, second = call_ids(0x1A2B)[0], call_ids(0x3C4D)[0]
    try:
        with trio.fail_after(TEST_LIMIT):
            process = await trio.lowlevel.open_process(command, stdout=slave, stderr=subprocess.PIPE,
                                                       env=clean_env(), cwd=ROOT)
            os.close(slave)
            slave = -1
            assert process.stderr is not None
            log = b""
            while not (found := re.search(rb"earpiece on (http://127\.0\.0\.1:\d+)", log)):
                chunk = await process.stderr.receive_some()
                assert chunk, log.decode()
                log += chunk
            url = found.group(1).decode().replace("http://", "ws://") + "/twilio/stream"
            output: list[bytes] = []

            async def drain_pty() -> None:  # keep the pty drained while the calls run
                output.append(await read_all(master))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain_pty)
                async with trio.open_nursery() as calls:
                    for sid in (first, second):
                        calls.start_soon(lambda sid=sid: simulate_call(url, tone(2500), call_sid=sid,
                                                                       stream_sid="MZ" + sid[2:]))
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == 0
            await process.stderr.aclose()
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    [written] = output
    lines = screen(written)
    # both calls live: their first commits are labelled with the end of their call SIDs
    assert "[…1a2b] COMMITTED: audio 0 to 2000" in lines and "[…3c4d] COMMITTED: audio 0 to 2000" in lines
    assert f"[{first}] Twilio stream started" in lines and f"[{second}] Twilio stream stopped" in lines
    assert not any("PARTIAL" in line for line in lines)  # every partial was replaced in the end
    assert re.search(rb"\x1b\[2K\[\xe2\x80\xa6(1a2b|3c4d)\] PARTIAL: audio 0 to 500", written)


def test_the_caption_of_one_call_then_two():
    """The exact text written, event by event."""
    caption = LiveCaption(width=40)
    a, b = "CA" + "0" * 28 + "aaaa", "CA" + "0" * 28 + "bbbb"

    def t(call: str, kind: str, text: str) -> dict:
        return {"type": "transcript", "kind": kind, "text": text, "call_sid": call}

    steps = [
        ({"type": "call_started", "call_sid": a}, f"{REWRITE}[{a}] Twilio stream started\n"),
        (t(a, "partial", "hello"), f"{REWRITE}PARTIAL: hello"),
        (t(a, "partial", "hello can you"), f"{REWRITE}PARTIAL: hello can you"),
        (t(a, "committed", "hello can you hear me"), f"{REWRITE}COMMITTED: hello can you hear me\n"),
        (t(a, "partial", "one two three four five six seven eight"), f"{REWRITE}… two three four five six seven eight"),
        ({"type": "call_started", "call_sid": b}, f"{REWRITE}[{b}] Twilio stream started\n"
                                                   "… two three four five six seven eight"),
        (t(b, "partial", "yes"), f"{REWRITE}[…bbbb] PARTIAL: yes"),
        (t(a, "committed", "one two"), f"{REWRITE}[…aaaa] COMMITTED: one two\n[…bbbb] PARTIAL: yes"),
        (t(b, "committed", "yes"), f"{REWRITE}[…bbbb] COMMITTED: yes\n"),
        ({"type": "call_ended", "call_sid": a, "reason": "stop"}, f"{REWRITE}[{a}] Twilio stream stopped\n"),
        (t(b, "partial", "bye"), f"{REWRITE}PARTIAL: bye"),
    ]
    for event, written in steps:
        assert caption.render(event) == written, event
