"""End to end on a real Hypercorn server (127.0.0.1, port 0), driven like Twilio."""

from __future__ import annotations

import httpx
import orjson
import pytest
import trio
import trio_websocket

from gateway.simulator import post_voice_webhook, simulate_call
from gateway.sinks import JsonlSink
from gateway.twiml import CallRejected, parse_connect_stream
from providers.scripted import ScriptedProvider
from tests.conftest import running_gateway
from tests.helpers import ACCOUNT_SID, ListSink, call_ids, open_stream_socket, task_count, tone
from providers.twilio import encode_connected, encode_start

CALL_LIMIT = 30  # seconds: a bound on each test, never an assertion on speed


async def test_webhook_then_stream_gives_exact_transcripts_and_audio():
    provider, sink = ScriptedProvider(), ListSink()
    audio = tone(5000)
    call_sid, stream_sid = call_ids(7)
    before = task_count()
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            twiml = await post_voice_webhook(gw.http_url, call_sid=call_sid, account_sid=ACCOUNT_SID)
            stream = parse_connect_stream(twiml)
            assert stream.url == gw.ws_url
            assert stream.parameters == {"From": "+15005550006", "To": "+15005550001", "CallSid": call_sid}
            result = await simulate_call(stream.url, audio, fast=True, custom_parameters=stream.parameters,
                                         call_sid=call_sid, stream_sid=stream_sid)
            await gw.idle()
    assert task_count() == before
    assert not result.closed_by_gateway or result.close_code == 1000
    assert bytes(provider.sessions[0].received) == audio
    assert sink.types() == ["call_started"] + ["transcript"] * (len(sink.events) - 2) + ["call_ended"]
    assert sink.committed() == ["audio 0 to 2000", "audio 2000 to 4000", "audio 4000 to 5000"]
    assert [e["seq"] for e in sink.events] == list(range(1, len(sink.events) + 1))
    started, ended = sink.events[0], sink.events[-1]
    assert started["custom_parameters"]["CallSid"] == call_sid
    assert (started["call_sid"], started["stream_sid"]) == (call_sid, stream_sid)
    assert (ended["reason"], ended["audio_ms"], ended["forwarded_ms"], ended["dropped_ms"]) == ("stop", 5000, 5000, 0)


async def test_concurrent_calls_are_isolated_and_bad_input_ends_only_its_call():
    provider, sink = ScriptedProvider(), ListSink()
    good_audio = tone(4000, seed=3)
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: simulate_call(gw.ws_url, good_audio, call_sid=call_ids(1)[0],
                                                         stream_sid=call_ids(1)[1]))
                nursery.start_soon(_binary_frame_call, gw.ws_url, 2)
                nursery.start_soon(lambda: simulate_call(gw.ws_url, tone(3000, seed=4), fast=True,
                                                         call_sid=call_ids(3)[0], stream_sid=call_ids(3)[1]))
            await gw.idle()
    good = sink.of_call(call_ids(1)[0])
    assert [e["text"] for e in good if e.get("kind") == "committed"] == ["audio 0 to 2000", "audio 2000 to 4000"]
    assert good[-1]["reason"] == "stop" and good[-1]["dropped_ms"] == 0
    bad = sink.of_call(call_ids(2)[0])
    assert bad[-1]["type"] == "call_ended" and bad[-1]["reason"] == "error"
    assert "binary frame" in bad[-1]["detail"]
    other = sink.of_call(call_ids(3)[0])
    assert other[-1]["reason"] == "stop" and other[-1]["audio_ms"] == 3000
    received = sorted(bytes(s.received) for s in provider.sessions)
    assert good_audio in received and tone(3000, seed=4) in received


async def _binary_frame_call(url: str, n: int) -> None:
    call_sid, stream_sid = call_ids(n)
    async with open_stream_socket(url) as ws:
        await ws.send_message(encode_connected())
        await ws.send_message(encode_start(stream_sid=stream_sid, account_sid=ACCOUNT_SID, call_sid=call_sid,
                                           custom_parameters={}))
        await ws.send_message(b"\x00\x01binary")
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason.code == 1008


async def test_socket_dropped_without_stop_ends_with_disconnect_after_final_flush():
    provider, sink = ScriptedProvider(), ListSink()
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            await simulate_call(gw.ws_url, tone(2500), fast=True, end="drop")
            await gw.idle()
    assert sink.committed() == ["audio 0 to 2000", "audio 2000 to 2500"]
    assert sink.events[-1]["reason"] == "disconnect"


async def test_health_readiness_and_busy_reject_at_max_calls():
    provider, sink = ScriptedProvider(), ListSink()
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink], max_calls=1) as gw:
            async with httpx.AsyncClient(base_url=gw.http_url) as client:
                assert (await client.get("/healthz")).status_code == 200
                assert (await client.get("/readyz")).status_code == 200
                async with open_stream_socket(gw.ws_url) as ws:
                    await ws.send_message(encode_connected())
                    while gw.gateway.registry.ready:  # admitted at the upgrade
                        await trio.sleep(0.01)
                    ready = await client.get("/readyz")
                    assert ready.status_code == 503 and "full" in ready.text
                    with pytest.raises(CallRejected) as rejected:
                        parse_connect_stream(await post_voice_webhook(gw.http_url, call_sid=call_ids(9)[0],
                                                                      account_sid=ACCOUNT_SID))
                    assert rejected.value.reason == "busy"
                    with pytest.raises(trio_websocket.ConnectionRejected):
                        await simulate_call(gw.ws_url, tone(100), fast=True)
                await gw.idle()
                assert (await client.get("/readyz")).status_code == 200


async def test_jsonl_sink_writes_every_event_as_one_line(tmp_path):
    provider = ScriptedProvider()
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path)
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink]) as gw:
            await simulate_call(gw.ws_url, tone(2100), fast=True)
            await gw.idle()
    await sink.aclose()
    events = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [e["type"] for e in events][0] == "call_started"
    assert events[-1]["type"] == "call_ended"
    assert [e["text"] for e in events if e.get("kind") == "committed"] == ["audio 0 to 2000", "audio 2000 to 2100"]
    assert all(e["emitted_at"].endswith("Z") for e in events)
