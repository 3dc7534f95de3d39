"""Bad input, one row per call, each beside a good call on the same real Hypercorn server.

A fatal row ends only its own call: ``call_ended`` reason ``error`` with a detail a human
understands when a ``start`` was accepted, else just a 1008 close whose reason says why
(and one log line either way).  A tolerated row is counted and the call goes on, its
audio forwarded exactly once.  In every row the good call's transcripts and audio are
exact and the process stays up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import httpx
import pytest
import trio
import trio_websocket

from providers.scripted import ScriptedProvider
from providers.twilio import (
    MediaFormat,
    encode_connected,
    encode_media_event,
    encode_start,
    encode_stop,
)
from tests.conftest import running_gateway
from tests.helpers import ACCOUNT_SID, ListSink, call_ids, open_stream_socket, tone

CALL_LIMIT = 30  # seconds: a bound on each test, never an assertion on speed
GOOD_CALL, BAD_CALL = call_ids(1), call_ids(2)
GOOD_AUDIO = tone(4000, seed=1)
BAD_AUDIO = tone(600, seed=5)
FRAME = 160


def _frames(audio: bytes) -> list[bytes]:
    return [audio[i:i + FRAME] for i in range(0, len(audio), FRAME)]


def connected() -> str:
    return encode_connected()


def start(call: tuple[str, str] = BAD_CALL, **options) -> str:
    options.setdefault("custom_parameters", {"From": "+15005550006"})
    return encode_start(stream_sid=call[1], account_sid=ACCOUNT_SID, call_sid=call[0], **options)


def media(seq: int, chunk: int, payload: bytes, call: tuple[str, str] = BAD_CALL) -> str:
    return encode_media_event(stream_sid=call[1], sequence_number=seq, chunk=chunk,
                              timestamp=(chunk - 1) * 20, payload=payload)


def stop(seq: int, call: tuple[str, str] = BAD_CALL) -> str:
    return encode_stop(stream_sid=call[1], sequence_number=seq, account_sid=ACCOUNT_SID, call_sid=call[0])


def media_run(first_seq: int, first_chunk: int, payloads: list[bytes]) -> list[str]:
    return [media(first_seq + i, first_chunk + i, p) for i, p in enumerate(payloads)]


BAD = _frames(BAD_AUDIO)  # 30 frames
OPENING = [connected(), start(), *media_run(2, 1, BAD[:5])]  # seq 1 is start; frames 1-5 are seq 2-6
ONE_MIB = 1024 * 1024


def _huge_message() -> str:
    return ('{"event":"media","sequenceNumber":"7","streamSid":"%s","media":{"track":"inbound",'
            '"chunk":"6","timestamp":"100","payload":"%s"}}' % (BAD_CALL[1], "/" * ONE_MIB))


@attrs.frozen
class Row:
    """``send``: what the bad call sends.  ``fatal``: the gateway closes it with
    ``close_code``, its reason (and the call_ended detail, when ``started``) containing
    ``says``.  Otherwise the call stops normally and ``counted`` are its call_ended
    counters, with ``forwarded`` the exact audio its provider session received."""

    name: str
    send: Callable[[], list[str | bytes]]
    fatal: bool = True
    started: bool = True
    says: str = ""
    close_code: int = 1008
    reason: str = "error"
    counted: dict[str, int] = attrs.field(factory=dict)
    forwarded: bytes = BAD_AUDIO
    settings: dict[str, object] = attrs.field(factory=dict)


ROWS = [
    # --- fatal for that call, after an accepted start
    Row("malformed JSON", lambda: [*OPENING, '{"event": "media", "sequenceNumber": '], says="invalid JSON"),
    Row("a JSON array", lambda: [*OPENING, '[{"event": "media"}]'], says="expected a JSON object, got array"),
    Row("a second start", lambda: [*OPENING, start(sequence_number=7)], says="a second start"),
    Row("invalid base64", lambda: [*OPENING, media(7, 6, b"").replace('"payload":""', '"payload":"@@@"')],
        says="media.payload: invalid base64"),
    Row("a binary frame", lambda: [*OPENING, b"\x00\x01 not text"], says="binary frame"),
    Row("a payload over max_payload_bytes", lambda: [*OPENING, media(7, 6, b"\xff" * 8001)],
        says="8001 decoded bytes exceed max_payload_bytes=8000"),
    Row("media of another stream", lambda: [*OPENING, media(7, 6, BAD[5], call=call_ids(3))],
        says="is not this stream's streamSid"),
    Row("a message over max_message_bytes (1 MiB)", lambda: [*OPENING, _huge_message()],
        close_code=1009, says="a message over 65536 bytes (max_message_bytes)"),
    # --- fatal before any call: the start is refused or never came
    Row("media before start", lambda: [connected(), *media_run(2, 1, BAD[:1])], started=False,
        says="media before start"),
    Row("malformed JSON first", lambda: ["{nope"], started=False, says="invalid JSON"),
    Row("mediaFormat audio/L16 16 kHz", lambda: [connected(), start(media_format=MediaFormat("audio/L16", 16000, 1))],
        started=False, says="unsupported media format audio/L16, 16000 Hz, 1 channel"),
    Row("mediaFormat mu-law 16 kHz", lambda: [connected(), start(media_format=MediaFormat("audio/x-mulaw", 16000, 1))],
        started=False, says="start.mediaFormat.sampleRate: unsupported media format"),
    Row("too many customParameters", lambda: [connected(), start(custom_parameters={f"p{i}": "v" for i in range(5)})],
        started=False, says="5 parameters exceed max_custom_parameters=4", settings={"max_custom_parameters": 4}),
    Row("a customParameter too long", lambda: [connected(), start(custom_parameters={"session": "x" * 1000})],
        started=False, says="start.customParameters.session: name and value of 1007 characters exceed"),
    # --- tolerated and counted: the call goes on
    Row("an unknown event", lambda: [
        *OPENING, *media_run(7, 6, BAD[5:10]),
        '{"event": "transcription", "sequenceNumber": "12", "streamSid": "%s", "x": {"y": 1}}' % BAD_CALL[1],
        *media_run(13, 11, BAD[10:]), stop(33)],
        fatal=False, counted={"unknown_events": 1, "sequence_gaps": 0, "duplicates": 0, "media_frames": 30}),
    Row("a sequence gap", lambda: [*OPENING, *media_run(7, 6, BAD[5:10]), *media_run(15, 11, BAD[10:]), stop(35)],
        fatal=False, counted={"unknown_events": 0, "sequence_gaps": 1, "duplicates": 0, "media_frames": 30}),
    Row("a duplicated sequence number", lambda: [
        *OPENING, *media_run(7, 6, BAD[5:10]), media(11, 10, BAD[9]), *media_run(12, 11, BAD[10:]), stop(32)],
        fatal=False, counted={"unknown_events": 0, "sequence_gaps": 0, "duplicates": 1, "media_frames": 30}),
    Row("a backwards sequence number", lambda: [
        *OPENING, *media_run(7, 6, BAD[5:10]), media(5, 4, b"\x00" * FRAME), *media_run(12, 11, BAD[10:]), stop(32)],
        fatal=False, counted={"unknown_events": 0, "sequence_gaps": 0, "duplicates": 1, "media_frames": 30}),
]


async def _closed(ws: trio_websocket.WebSocketConnection) -> trio_websocket.CloseReason:
    """Wait for the gateway to close the socket (it sends nothing else)."""
    while True:
        try:
            await ws.get_message()
        except trio_websocket.ConnectionClosed as closed:
            return closed.reason


async def _bad_call(url: str, row: Row) -> trio_websocket.CloseReason:
    async with open_stream_socket(url) as ws:
        try:
            for message in row.send():
                await ws.send_message(message)
        except trio_websocket.ConnectionClosed as closed:  # the gateway closed while we were still sending
            return closed.reason
        return await _closed(ws)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
async def test_bad_input_row_beside_a_good_call(row: Row, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    provider, sink = ScriptedProvider(), ListSink()
    good = _frames(GOOD_AUDIO)
    half = len(good) // 2
    with trio.fail_after(CALL_LIMIT):
        async with running_gateway(provider, [sink], **row.settings) as gw:
            async with open_stream_socket(gw.ws_url) as good_ws:
                for message in [connected(), start(GOOD_CALL),
                                *[media(2 + i, 1 + i, p, call=GOOD_CALL) for i, p in enumerate(good[:half])]]:
                    await good_ws.send_message(message)
                # the good call is live, mid-stream, while the bad one runs and ends
                bad_close = await _bad_call(gw.ws_url, row)
                for i, payload in enumerate(good[half:], start=half):
                    await good_ws.send_message(media(2 + i, 1 + i, payload, call=GOOD_CALL))
                await good_ws.send_message(stop(2 + len(good), call=GOOD_CALL))
                good_close = await _closed(good_ws)
            await gw.idle()
            async with httpx.AsyncClient(base_url=gw.http_url) as client:
                assert (await client.get("/healthz")).status_code == 200
            assert gw.gateway.registry.calls == {}

    # the good call, exactly
    assert good_close.code == 1000
    assert sink.committed(GOOD_CALL[0]) == ["audio 0 to 2000", "audio 2000 to 4000"]
    good_end = sink.of_call(GOOD_CALL[0])[-1]
    assert (good_end["type"], good_end["reason"], good_end["audio_ms"], good_end["dropped_ms"]) == (
        "call_ended", "stop", 4000, 0)
    good_sessions = [s for s in provider.sessions if bytes(s.received[:FRAME]) == GOOD_AUDIO[:FRAME]]
    assert len(good_sessions) == 1 and bytes(good_sessions[0].received) == GOOD_AUDIO

    bad_events = sink.of_call(BAD_CALL[0])
    bad_sessions = [s for s in provider.sessions if s not in good_sessions]
    if not row.fatal:
        assert bad_close.code == 1000
        end = bad_events[-1]
        assert (end["type"], end["reason"]) == ("call_ended", "stop")
        assert {name: end[name] for name in row.counted} == row.counted
        assert end["audio_ms"] == end["forwarded_ms"] == len(row.forwarded) // 8
        assert len(bad_sessions) == 1 and bytes(bad_sessions[0].received) == row.forwarded
        return

    assert bad_close.code == row.close_code
    if row.close_code == 1008:
        assert row.says in (bad_close.reason or "")
    if row.started:
        end = bad_events[-1]
        assert bad_events[0]["type"] == "call_started"
        assert (end["type"], end["reason"]) == ("call_ended", row.reason)
        assert row.says in end["detail"]
    else:
        assert bad_events == [] and bad_sessions == []
    ended_lines = [r.getMessage() for r in caplog.records
                   if r.name == "earpiece.call" and "call ended" in r.getMessage() and GOOD_CALL[0] not in r.getMessage()]
    assert len(ended_lines) == 1, ended_lines
    if row.reason == "error":
        assert row.says in ended_lines[0]
