"""``earpiece serve --certfile/--keyfile``: HTTPS and WSS straight from Hypercorn, for
deployments without a TLS proxy, tested with a self-signed certificate made here and a
client that trusts it; bad TLS files are one clear line and exit status 2."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio
import trio_websocket

from gateway.app import STREAM_PATH, Gateway
from gateway.calls import wait_idle
from gateway.config import ConfigError, Settings
from gateway.security import SIGNATURE_HEADER, compute_signature
from gateway.serve import check_tls_files, serve_gateway
from gateway.simulator import post_voice_webhook
from gateway.twiml import parse_connect_stream
from providers.scripted import ScriptedProvider
from tests.helpers import ACCOUNT_SID, ListSink, call_ids, tone
from tests.system.test_bad_input import connected, media, start, stop
from tests.gateway.test_cli import _free_port, run

CALL_LIMIT = 30
TOKEN = "tls-test-token-0123456789"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (openssl, if installed)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make a self-signed certificate for the TLS tests")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    made = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        capture_output=True, text=True, timeout=60)
    if made.returncode != 0:
        pytest.skip(f"openssl could not make a self-signed certificate: {made.stderr.strip()[:200]}")
    return cert, key


@asynccontextmanager
async def running_tls_gateway(provider, sinks, cert: Path, key: Path, **settings) -> AsyncIterator[tuple[Gateway, str]]:
    gateway = Gateway(Settings(port=0, provider=provider.name, certfile=str(cert), keyfile=str(key), **settings),
                      provider, sinks)
    stop_serving = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve_gateway, gateway, shutdown_trigger=stop_serving.wait, grace=5))
        try:
            yield gateway, next(b for b in binds if b.startswith("https://127.0.0.1"))
        finally:
            stop_serving.set()


@asynccontextmanager
async def open_tls_stream_socket(url: str, context: ssl.SSLContext, headers: list[tuple[bytes, bytes]]
                                 ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A WSS client whose TCP stream is closed on every path (trio-websocket's own
    ``open_websocket_url`` leaves it open when the server closes first)."""
    parts = urlsplit(url)
    async with trio.open_nursery() as nursery:
        stream = await trio.open_ssl_over_tcp_stream(parts.hostname, parts.port, ssl_context=context,
                                                     https_compatible=True)
        try:
            yield await trio_websocket.wrap_client_stream(nursery, stream, parts.netloc, parts.path,
                                                          extra_headers=headers)
        finally:
            await trio.aclose_forcefully(stream)
            nursery.cancel_scope.cancel()


async def test_https_and_wss_with_a_trusted_self_signed_certificate(certificate):
    cert, key = certificate
    trusting = ssl.create_default_context(cafile=str(cert))
    provider, sink = ScriptedProvider(), ListSink()
    audio = tone(2000, seed=9)
    call = call_ids(9)
    with trio.fail_after(CALL_LIMIT):
        async with running_tls_gateway(provider, [sink], cert, key, twilio_auth_token=TOKEN) as (gateway, https):
            async with httpx.AsyncClient(base_url=https, verify=trusting) as client:
                assert (await client.get("/healthz")).status_code == 200
            form_signature_url = https + "/twilio/voice"
            form = {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": call[0],
                    "CallStatus": "ringing", "Called": "+15005550001", "Caller": "+15005550006",
                    "Direction": "inbound", "From": "+15005550006", "To": "+15005550001"}
            async with httpx.AsyncClient(verify=trusting) as client:
                response = await client.post(form_signature_url, data=form, headers={
                    SIGNATURE_HEADER: compute_signature(TOKEN, form_signature_url, form)})
            stream_url = parse_connect_stream(response.text, require_wss=True).url
            assert stream_url == https.replace("https://", "wss://", 1) + STREAM_PATH

            signed = [(SIGNATURE_HEADER.encode(), compute_signature(TOKEN, stream_url).encode())]
            async with open_tls_stream_socket(stream_url, trusting, signed) as ws:
                await ws.send_message(connected())
                await ws.send_message(start(call))
                frames = [audio[i:i + 160] for i in range(0, len(audio), 160)]
                for i, payload in enumerate(frames):
                    await ws.send_message(media(2 + i, 1 + i, payload, call=call))
                await ws.send_message(stop(2 + len(frames), call=call))
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == 1000
            await wait_idle(gateway.registry)
    assert bytes(provider.sessions[0].received) == audio
    assert sink.committed(call[0]) == ["audio 0 to 2000"]


async def test_a_client_that_does_not_trust_the_certificate_cannot_connect(certificate):
    cert, key = certificate
    with trio.fail_after(CALL_LIMIT):
        async with running_tls_gateway(ScriptedProvider(), [ListSink()], cert, key) as (_, https):
            async with httpx.AsyncClient(verify=ssl.create_default_context()) as client:
                with pytest.raises(httpx.ConnectError):
                    await client.get(https + "/healthz")
            with pytest.raises(httpx.HTTPError):
                await post_voice_webhook(https.replace("https://", "http://", 1), call_sid=call_ids(1)[0],
                                         account_sid=ACCOUNT_SID)


def test_check_tls_files_accepts_the_pair_and_names_what_is_wrong(certificate, tmp_path):
    cert, key = certificate
    check_tls_files(str(cert), str(key))
    check_tls_files(None, None)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for certfile, keyfile, says in [
        (str(tmp_path / "missing.pem"), str(key), "--certfile " + str(tmp_path / "missing.pem") + ": no such file"),
        (str(cert), str(tmp_path / "nokey.pem"), "--keyfile " + str(tmp_path / "nokey.pem") + ": no such file"),
        (str(garbage), str(key), "are not a matching, unencrypted PEM certificate and key"),
        (str(key), str(cert), "are not a matching, unencrypted PEM certificate and key"),
        (str(cert), None, "--certfile and --keyfile go together"),
    ]:
        with pytest.raises(ConfigError) as error:
            check_tls_files(certfile, keyfile)
        assert says in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--certfile", "/nonexistent/cert.pem", "--keyfile", "/nonexistent/key.pem"], "no such file"),
        (["--certfile", "{cert}"], "--certfile and --keyfile go together"),
        (["--certfile", "{garbage}", "--keyfile", "{key}"], "not a matching, unencrypted PEM certificate and key"),
    ],
    ids=["missing files", "half a pair", "not a certificate"],
)
def test_serve_with_bad_tls_files_exits_2_with_one_line(certificate, tmp_path, flags, says):
    cert, key = certificate
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    args = [f.format(cert=cert, key=key, garbage=garbage) for f in flags]
    result = run("serve", "--provider", "scripted", "--port", str(_free_port()), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr
