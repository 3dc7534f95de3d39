"""The ``earpiece`` command as a user runs it: real processes, real ports on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import orjson
import pytest

EARPIECE = [sys.executable, "-m", "gateway.cli"]
ENV = {k: v for k, v in os.environ.items() if not k.startswith("EARPIECE_") and not k.endswith("_API_KEY")}


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EARPIECE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**ENV, **(env or {})})


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["serve", "--provider", "nope"], {}, "unknown provider 'nope'"),
        (["serve", "--provider", "elevenlabs"], {}, "ELEVENLABS_API_KEY is not set"),
        (["serve", "--provider", "scripted", "--sink", "kafka:x"], {}, "bad sink 'kafka:x'"),
        (["serve", "--provider", "scripted", "--max-calls", "zero"], {}, "--max-calls must be a whole number"),
        (["serve"], {"EARPIECE_PROVIDER": "nope"}, "unknown provider 'nope'"),
        (["serve", "--provider", "scripted"], {"SCRIPTED_COMMIT_MS": "-5"}, "SCRIPTED_COMMIT_MS must be positive"),
        (["serve", "--provider", "scripted", "--public-url", "gw.example.test"], {}, "--public-url must look like"),
        (["call", "missing.wav", "--url", "ws://127.0.0.1:9/twilio/stream"], {}, "missing.wav"),
    ],
)
def test_bad_configuration_exits_2_with_one_clear_line(args, env, says):
    result = run(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert says in lines[0]
    assert "Traceback" not in result.stderr


def test_port_in_use_exits_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--provider", "scripted", "--port", str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_providers_lists_format_and_credentials():
    result = run("providers", env={"ELEVENLABS_API_KEY": "sk-test-not-shown"})
    assert result.returncode == 0
    out = result.stdout
    assert "scripted" in out and "mulaw/8000" in out
    assert "sk-test-not-shown" not in out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_wav(path: Path, seconds: float, rate: int = 16000) -> None:
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    samples = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


def test_serve_call_and_sigterm_shutdown(tmp_path):
    port = _free_port()
    events = tmp_path / "events.jsonl"
    wav = tmp_path / "call.wav"
    _write_wav(wav, 2.5)
    server = subprocess.Popen([*EARPIECE, "serve", "--provider", "scripted", "--port", str(port),
                               "--sink", f"jsonl:{events}", "--log-format", "json"], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # bounded wait for the port to accept connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.1)
        call = run("call", str(wav), "--url", f"ws://127.0.0.1:{port}/twilio/stream", "--fast",
                   "--param", "session=abc")
        assert call.returncode == 0, call.stderr
        assert "sent 125 media frames" in call.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0, stderr
    logged = [orjson.loads(line) for line in stderr.splitlines() if line.strip()]
    assert any("call ended (stop)" in entry["message"] for entry in logged)
    assert all({"ts", "level", "logger", "message"} <= entry.keys() for entry in logged)
    lines = [orjson.loads(line) for line in events.read_bytes().splitlines()]
    assert lines[0]["type"] == "call_started" and lines[0]["custom_parameters"] == {"session": "abc"}
    assert lines[-1]["type"] == "call_ended" and lines[-1]["audio_ms"] == 2500
    assert [e["text"] for e in lines if e.get("kind") == "committed"] == ["audio 0 to 2000", "audio 2000 to 2500"]


def test_demo_prints_the_call_as_a_live_one_looks():
    result = run("demo", "--fast", "--provider", "scripted", timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("[CA") and lines[0].endswith("] Twilio stream started")
    assert lines[-1].startswith("[CA") and lines[-1].endswith("] Twilio stream stopped")
    assert any(line.startswith("PARTIAL: audio 0 to") for line in lines)
    assert "COMMITTED: audio 0 to 2000" in lines


def test_a_reader_that_is_gone_gets_no_traceback():
    """``earpiece providers | head -1`` where head has already gone: no BrokenPipeError trace."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte is written
    try:
        proc = subprocess.run([*EARPIECE, "providers"], stdout=write_end, stderr=subprocess.PIPE,
                              timeout=60, env=ENV)
    finally:
        os.close(write_end)
    assert b"Traceback" not in proc.stderr and b"BrokenPipe" not in proc.stderr, proc.stderr.decode()
    assert proc.returncode == 141
