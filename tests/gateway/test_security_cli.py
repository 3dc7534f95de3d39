"""The command line with and without ``TWILIO_AUTH_TOKEN``, as real processes: ``serve``
warns loudly when nothing is checked on a non-loopback address, and ``earpiece call``
signs its upgrade with the token it is given (and says so in one line when refused)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import orjson

from tests.gateway.test_cli import EARPIECE, ENV, _free_port, _write_wav, run

TOKEN = "cli-token-0a1b2c3d4e5f60718293"
START_TIMEOUT = 30


def _serve(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], list[str]]:
    """Start ``earpiece serve`` and read its stderr up to the "earpiece on" line (the
    process is listening by then); returns the process and the lines read."""
    server = subprocess.Popen([*EARPIECE, "serve", "--provider", "scripted", *args], env={**ENV, **(env or {})},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert server.stderr is not None
    lines: list[str] = []
    while not any("earpiece on" in line for line in lines):
        line = server.stderr.readline()  # EOF ("") if the process died
        assert line, f"serve exited: {''.join(lines)}"
        lines.append(line)
    return server, lines


def _stop(server: subprocess.Popen[str]) -> str:
    server.send_signal(signal.SIGTERM)
    _, rest = server.communicate(timeout=START_TIMEOUT)
    assert server.returncode == 0, rest
    return rest


def test_serve_warns_loudly_without_a_token_on_a_public_address():
    server, lines = _serve("--host", "0.0.0.0", "--port", str(_free_port()))
    _stop(server)
    text = "".join(lines)
    assert "TWILIO_AUTH_TOKEN is not set and 0.0.0.0 is not loopback" in text
    assert "signatures=NOT checked" in text


def test_serve_with_a_token_checks_and_call_signs_its_upgrade(tmp_path: Path):
    port = _free_port()
    events = tmp_path / "events.jsonl"
    wav = tmp_path / "call.wav"
    _write_wav(wav, 0.5)
    server, lines = _serve("--host", "0.0.0.0", "--port", str(port), "--sink", f"jsonl:{events}",
                           env={"TWILIO_AUTH_TOKEN": TOKEN})
    try:
        url = f"ws://127.0.0.1:{port}/twilio/stream"
        unsigned = run("call", str(wav), "--url", url, "--fast")
        signed = run("call", str(wav), "--url", url, "--fast", env={"TWILIO_AUTH_TOKEN": TOKEN})
        wrong = run("call", str(wav), "--url", url, "--fast", env={"TWILIO_AUTH_TOKEN": "not-" + TOKEN})
    finally:
        rest = _stop(server)
    startup = "".join(lines)
    assert "is not loopback" not in startup and "signatures=required" in startup
    assert "--public-url is not" in startup  # checked against client-supplied headers: said once, loudly
    for refused in (unsigned, wrong):
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            "earpiece: error: the gateway refused the stream with HTTP 403: "
            "forbidden: missing or invalid X-Twilio-Signature"]
    assert signed.returncode == 0, signed.stderr
    assert "sent 25 media frames" in signed.stdout
    assert rest.count("refused a media stream") == 2 and TOKEN not in rest + startup
    calls = [orjson.loads(line) for line in events.read_bytes().splitlines()]
    assert [e["type"] for e in calls if e["type"].startswith("call_")] == ["call_started", "call_ended"]
