"""What the vendor test modules share: whole calls through a real gateway into a
vendor's loopback fake, reading what the sink got, and the check that a bad setting is
a one-line fix that never shows the key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
import pytest
import trio

from gateway.simulator import simulate_call
from providers.errors import ProviderConfigError
from tests.conftest import running_gateway
from tests.fakes.ws_server import serve_fake
from tests.helpers import ListSink

CALL_LIMIT = 30  # seconds: a bound on each test, never an assertion on speed


def j(value: object) -> str:
    return orjson.dumps(value).decode()


async def call_through_gateway(create: Callable[[Mapping[str, str]], Any], env: Mapping[str, str], handler: Any,
                               audio: bytes, *, base_url_variable: str, drain_timeout: float = 2.0) -> ListSink:
    """One simulated Twilio call through a gateway whose provider ``create(env)`` makes,
    pointed at a fake serving ``handler`` on 127.0.0.1; returns the sink's events."""
    sink = ListSink()
    with trio.fail_after(CALL_LIMIT):
        async with serve_fake(handler) as base_url:
            provider = create({**env, base_url_variable: base_url})
            async with running_gateway(provider, [sink], drain_timeout=drain_timeout) as gw:
                await simulate_call(gw.ws_url, audio, fast=True)
                await gw.idle()
    return sink


def vendor_call(create: Callable[[Mapping[str, str]], Any], *, key_variable: str, base_url_variable: str,
                default_key: str) -> Callable[..., Awaitable[ListSink]]:
    """``run_call(fake, audio, *, key=default_key, env=None, drain_timeout=2.0)`` for one
    vendor: ``call_through_gateway`` with the key in ``key_variable`` and ``env`` added."""

    async def run_call(fake: Any, audio: bytes, *, key: str = default_key, env: Mapping[str, str] | None = None,
                       drain_timeout: float = 2.0) -> ListSink:
        return await call_through_gateway(create, {key_variable: key, **(env or {})}, fake.handler, audio,
                                          base_url_variable=base_url_variable, drain_timeout=drain_timeout)

    return run_call


def transcripts(sink: ListSink, kind: str) -> list[tuple[str, int, int]]:
    return [(e["text"], e["audio_start_ms"], e["audio_end_ms"]) for e in sink.events
            if e["type"] == "transcript" and e["kind"] == kind]


def provider_errors(sink: ListSink) -> list[dict]:
    return [e for e in sink.events if e["type"] == "provider_error"]


def assert_one_line_fix(create: Callable[[Mapping[str, str]], Any], env: Mapping[str, str], secret: str,
                        fix: str) -> None:
    """``create(env)`` refuses with a one-line ``ProviderConfigError`` saying ``fix``,
    without ``secret`` (the API key) in it."""
    with pytest.raises(ProviderConfigError) as caught:
        create(env)
    message = str(caught.value)
    assert fix in message and "\n" not in message and secret not in message
