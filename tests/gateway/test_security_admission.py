"""``--max-calls``: concurrent upgrades can never be admitted past N; the webhook answers
``<Reject reason="busy"/>`` and ``/readyz`` 503 while full."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio_websocket

from gateway.simulator import post_voice_webhook
from gateway.twiml import CallRejected, parse_connect_stream
from providers.scripted import ScriptedProvider
from providers.twilio import encode_connected
from tests.conftest import running_gateway
from tests.helpers import ACCOUNT_SID, ListSink, call_ids, open_stream_socket

CALL_LIMIT = 30
MAX_CALLS = 2
CALLERS = 8


def _rejection(exc: BaseException) -> trio_websocket.ConnectionRejected | None:
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _rejection(exc.exceptions[0])
    return None


async def test_concurrent_upgrades_are_never_admitted_past_max_calls():
    provider = ScriptedProvider()
    accepted: list[int] = []
    refused: list[int] = []
    everyone_tried = trio.Event()
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [ListSink()], max_calls=MAX_CALLS) as gw:
            registry = gw.gateway.registry

            def tried() -> None:
                if len(accepted) + len(refused) == CALLERS:
                    everyone_tried.set()

            async def caller(n: int) -> None:
                try:
                    async with open_stream_socket(gw.ws_url) as ws:
                        accepted.append(n)
                        tried()
                        await ws.send_message(encode_connected())
                        await everyone_tried.wait()  # hold the slot until every caller has tried
                        async with httpx.AsyncClient(base_url=gw.http_url) as client:
                            ready = await client.get("/readyz")
                        assert ready.status_code == 503 and f"full ({MAX_CALLS}/{MAX_CALLS} calls)" in ready.text
                        with pytest.raises(CallRejected) as rejected:
                            parse_connect_stream(await post_voice_webhook(
                                gw.http_url, call_sid=call_ids(100 + n)[0], account_sid=ACCOUNT_SID))
                        assert rejected.value.reason == "busy"
                        assert len(registry.calls) == MAX_CALLS
                except BaseException as exc:  # noqa: BLE001 - a refused handshake, possibly grouped
                    rejection = _rejection(exc)
                    if rejection is None:
                        raise
                    assert rejection.status_code == 503
                    assert b"full" in (rejection.body or b"")
                    refused.append(n)
                    tried()

            async with trio.open_nursery() as nursery:
                for n in range(CALLERS):
                    nursery.start_soon(caller, n)
            await gw.idle()
            assert (len(accepted), len(refused)) == (MAX_CALLS, CALLERS - MAX_CALLS)
            assert (registry.total_calls, registry.rejected_calls) == (MAX_CALLS, CALLERS - MAX_CALLS)
            async with httpx.AsyncClient(base_url=gw.http_url) as client:
                assert (await client.get("/readyz")).status_code == 200
            twiml = await post_voice_webhook(gw.http_url, call_sid=call_ids(99)[0], account_sid=ACCOUNT_SID)
            assert parse_connect_stream(twiml).url == gw.ws_url


async def test_a_draining_gateway_is_not_ready_and_rejects_calls():
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(ScriptedProvider(), [ListSink()]) as gw:
            gw.gateway.registry.draining = True
            async with httpx.AsyncClient(base_url=gw.http_url) as client:
                ready = await client.get("/readyz")
            assert ready.status_code == 503 and "draining" in ready.text
            with pytest.raises(CallRejected):
                parse_connect_stream(await post_voice_webhook(gw.http_url, call_sid=call_ids(1)[0],
                                                              account_sid=ACCOUNT_SID))
            with pytest.raises(BaseException) as refused:
                async with open_stream_socket(gw.ws_url):
                    pass
            rejection = _rejection(refused.value)
            assert rejection is not None and rejection.status_code == 503
