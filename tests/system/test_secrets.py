"""Secrets never leave: with a known Twilio auth token and a known provider key (used, and
refused, by a fake vendor), nothing the gateway writes anywhere contains either — logs at
DEBUG, the JSONL sink, ``/calls`` and ``/metrics`` (when they exist), error messages,
reprs, the CLI's stderr."""

from __future__ import annotations

import logging
from functools import partial

import attrs
import httpx
import pytest
import trio
import trio_websocket

from gateway.app import Gateway
from gateway.calls import wait_idle
from gateway.cli import build_parser, configure
from gateway.config import ConfigError
from gateway.security import SIGNATURE_HEADER, compute_signature
from gateway.serve import serve_gateway
from gateway.simulator import WebhookError, post_voice_webhook, simulate_call
from gateway.sinks import JsonlSink
from gateway.twiml import parse_connect_stream
from providers.registry import available_providers
from tests.helpers import ACCOUNT_SID, call_ids, tone
from tests.gateway.test_cli import run

CALL_LIMIT = 30
TWILIO_TOKEN = "twilio-token-SECRET-7f3a9c2e51d84b06"
PROVIDER_KEY = "provider-key-SECRET-c0ffee1234567890abcd"
REFUSAL = b'{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials."}'

#: Cloud providers that exist in this build and take a key (others are being written).
CLOUD = sorted(name for name, spec in available_providers().items() if spec.key_env)


class RefusingVendor:
    """A fake STT endpoint that reads each WebSocket upgrade, keeps its request head (to
    prove the key was sent) and answers 401."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                head += chunk
            self.requests.append(head)
            await stream.send_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n"
                                  b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(REFUSAL), REFUSAL))


def _everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records) + caplog.text


@pytest.mark.skipif(not CLOUD, reason="no cloud provider is built yet")
@pytest.mark.parametrize("name", CLOUD)
async def test_no_secret_in_any_output_of_a_gateway_whose_provider_refuses_the_key(name, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    spec = available_providers()[name]
    vendor = RefusingVendor()
    jsonl = tmp_path / "events.jsonl"
    outputs: dict[str, str] = {}
    with trio.fail_after(CALL_LIMIT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, vendor.handle, 0, host="127.0.0.1"))
            vendor_port = listeners[0].socket.getsockname()[1]
            env = {"TWILIO_AUTH_TOKEN": TWILIO_TOKEN, spec.key_env: PROVIDER_KEY,
                   f"{name.upper()}_BASE_URL": f"ws://127.0.0.1:{vendor_port}"}
            args = build_parser().parse_args(["serve", "--provider", name, "--sink", f"jsonl:{jsonl}",
                                              "--drain-timeout", "1", "--media-idle-timeout", "5"])
            settings, chain = configure(args, env)
            settings = attrs.evolve(settings, port=0)
            assert settings.twilio_auth_token == TWILIO_TOKEN
            sink = JsonlSink(jsonl)
            gateway = Gateway(settings, chain, [sink])
            outputs["reprs"] = " ".join(repr(x) for x in (settings, chain.primary, chain, gateway, gateway.validator))
            stop_serving = trio.Event()
            binds = await nursery.start(partial(serve_gateway, gateway, shutdown_trigger=stop_serving.wait,
                                                grace=5))
            http = next(b for b in binds if b.startswith("http://127.0.0.1"))
            ws_url = http.replace("http://", "ws://", 1) + "/twilio/stream"

            call_sid = call_ids(1)[0]
            form = {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": call_sid,
                    "CallStatus": "ringing", "Called": "+15005550001", "Caller": "+15005550006",
                    "Direction": "inbound", "From": "+15005550006", "To": "+15005550001"}
            twiml = await post_voice_webhook(http, call_sid=call_sid, account_sid=ACCOUNT_SID, extra_headers=[
                (SIGNATURE_HEADER, compute_signature(TWILIO_TOKEN, http + "/twilio/voice", form))])
            outputs["twiml"] = twiml
            stream = parse_connect_stream(twiml)
            with pytest.raises(WebhookError) as refused_webhook:
                await post_voice_webhook(http, call_sid=call_sid, account_sid=ACCOUNT_SID,
                                         extra_headers=[(SIGNATURE_HEADER, "bm90IGEgc2lnbmF0dXJl")])
            outputs["webhook refusal"] = str(refused_webhook.value) + refused_webhook.value.body
            with pytest.raises(trio_websocket.ConnectionRejected) as refused_stream:
                await simulate_call(ws_url, tone(100), fast=True)
            outputs["stream refusal"] = f"{refused_stream.value!r} {refused_stream.value.body!r}"

            # a signed call: the provider is tried with the key and refuses it
            result = await simulate_call(stream.url, tone(1000), fast=True, call_sid=call_sid,
                                         custom_parameters=stream.parameters,
                                         extra_headers=[(SIGNATURE_HEADER, compute_signature(TWILIO_TOKEN, stream.url))])
            outputs["close reason"] = f"{result.close_code} {result.close_reason}"
            await wait_idle(gateway.registry)
            async with httpx.AsyncClient(base_url=http) as client:
                for path in ("/calls", "/metrics", "/readyz", "/healthz"):
                    response = await client.get(path)
                    outputs[path] = f"{response.status_code} {response.text}"
            stop_serving.set()
            nursery.cancel_scope.cancel()
    await sink.aclose()

    assert vendor.requests, "the provider never used its key"
    assert any(PROVIDER_KEY.encode() in head for head in vendor.requests)
    outputs["jsonl"] = jsonl.read_text()
    assert '"call_ended"' in outputs["jsonl"]
    outputs["logs"] = _everything_logged(caplog)
    assert "refused POST /twilio/voice" in outputs["logs"] and "refused a media stream" in outputs["logs"]
    for where, text in outputs.items():
        for secret in (TWILIO_TOKEN, PROVIDER_KEY):
            assert secret not in text, f"{secret[:12]}... leaked into {where}"


def test_config_errors_never_carry_secrets():
    env = {"TWILIO_AUTH_TOKEN": TWILIO_TOKEN}
    for argv in (["serve", "--provider", "scripted", "--public-url", "https://user:" + TWILIO_TOKEN + "@gw.test"],
                 ["serve", "--provider", "scripted", "--public-url", "ftp://user:" + TWILIO_TOKEN + "@gw.test"],
                 ["serve", "--provider", "scripted", "--max-calls", "many"]):
        with pytest.raises(ConfigError) as error:
            configure(build_parser().parse_args(argv), env)
        assert TWILIO_TOKEN not in str(error.value)


@pytest.mark.skipif(not CLOUD, reason="no cloud provider is built yet")
def test_the_cli_never_prints_secrets():
    name = CLOUD[0]
    env = {"TWILIO_AUTH_TOKEN": TWILIO_TOKEN, available_providers()[name].key_env: PROVIDER_KEY}
    for args in (["serve", "--provider", name, "--sink", "kafka:x"], ["providers"],
                 ["serve", "--provider", name, "--max-message-bytes", "-1"]):
        result = run(*args, env=env)
        for secret in (TWILIO_TOKEN, PROVIDER_KEY):
            assert secret not in result.stdout + result.stderr
