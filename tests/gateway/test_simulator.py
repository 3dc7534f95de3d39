"""gateway.simulator plays Twilio faithfully; gateway.twiml builds and reads the webhook's TwiML."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import attrs
import pytest
import trio
import trio.testing
import trio_websocket
from hypothesis import given
from hypothesis import strategies as st

from gateway.simulator import (
    SimulatedCall,
    WebhookError,
    frames,
    new_sid,
    post_voice_webhook,
    simulate_call,
)
from gateway.twiml import (
    CallRejected,
    ConnectStream,
    connect_stream_twiml,
    parse_connect_stream,
    reject_twiml,
)
from providers.twilio import (
    MULAW_8K_MONO,
    Connected,
    Dtmf,
    Media,
    Start,
    Stop,
    TwilioStreamDecoder,
    encode_clear,
    encode_mark,
    encode_media,
)

CALL_SID = "CA" + "1" * 32
STREAM_SID = "MZ" + "2" * 32
ACCOUNT_SID = "AC" + "0" * 31 + "1"
SIDS = {"call_sid": CALL_SID, "stream_sid": STREAM_SID, "account_sid": ACCOUNT_SID}
TIMEOUT_S = 10


def audio(n_bytes: int) -> bytes:
    """Recognisable mu-law that is never the 0xFF padding."""
    return bytes(i % 255 for i in range(n_bytes))


# --- a fake gateway: a real trio-websocket server on loopback ------------------------------


@attrs.define
class FakeGateway:
    """Accepts one stream at a time, records what arrives (with trio's clock) and how it closed."""

    url: str = ""
    path: str | None = None
    headers: dict[str, str] = attrs.Factory(dict)
    subprotocols: list[str] = attrs.Factory(list)
    messages: list[str] = attrs.Factory(list)
    arrival_times: list[float] = attrs.Factory(list)
    close: trio_websocket.CloseReason | None = None
    done: trio.Event = attrs.Factory(trio.Event)

    def events(self) -> list[object]:
        decoder = TwilioStreamDecoder()
        events = [decoder.receive(message) for message in self.messages]
        stats = decoder.statistics()
        assert (stats.sequence_gaps, stats.duplicates, stats.unknown_events) == (0, 0, 0)
        return events


# What the fake gateway does once a socket is accepted; it returns when it is done reading.
Behaviour = Callable[[trio_websocket.WebSocketConnection, FakeGateway], Awaitable[None]]


async def record_everything(ws: trio_websocket.WebSocketConnection, gateway: FakeGateway) -> None:
    while True:
        gateway.messages.append(await ws.get_message())
        gateway.arrival_times.append(trio.current_time())


def close_after(n_messages: int, code: int, reason: str) -> Behaviour:
    async def behaviour(ws: trio_websocket.WebSocketConnection, gateway: FakeGateway) -> None:
        for _ in range(n_messages):
            gateway.messages.append(await ws.get_message())
        await ws.aclose(code, reason)

    return behaviour


async def close_on_stop(ws: trio_websocket.WebSocketConnection, gateway: FakeGateway) -> None:
    """What a gateway usually does: close (1000) as soon as ``stop`` arrives."""
    while True:
        gateway.messages.append(await ws.get_message())
        if json.loads(gateway.messages[-1])["event"] == "stop":
            await ws.aclose(1000, "call over")
            return


async def reply_after_start(ws: trio_websocket.WebSocketConnection, gateway: FakeGateway) -> None:
    """A bidirectional app: after ``start`` it plays audio, sets a mark, clears, sends a binary frame."""
    for _ in range(2):
        gateway.messages.append(await ws.get_message())
    await ws.send_message(encode_media(STREAM_SID, b"\x7f" * 160))
    await ws.send_message(encode_mark(STREAM_SID, "utt-1"))
    await ws.send_message(encode_clear(STREAM_SID))
    await ws.send_message(b"\x00\x01")
    await record_everything(ws, gateway)


@asynccontextmanager
async def open_fake_gateway(behaviour: Behaviour = record_everything) -> AsyncIterator[FakeGateway]:
    gateway = FakeGateway()

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        gateway.path = request.path
        gateway.headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        gateway.subprotocols = list(request.proposed_subprotocols)
        ws = await request.accept()
        try:
            await behaviour(ws, gateway)
        except trio_websocket.ConnectionClosed:
            pass
        # Let the close handshake (or the drop) finish before looking at the reason.
        with trio.move_on_after(TIMEOUT_S):
            while ws.closed is None:
                await trio.sleep(0.001)
        gateway.close = ws.closed
        gateway.done.set()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None
        )
        gateway.url = f"ws://127.0.0.1:{server.port}/twilio/stream"
        yield gateway
        nursery.cancel_scope.cancel()


async def call(gateway: FakeGateway, mulaw: bytes, **kwargs: object) -> SimulatedCall:
    with trio.fail_after(TIMEOUT_S):
        result = await simulate_call(gateway.url, mulaw, **{**SIDS, **kwargs})  # type: ignore[arg-type]
        await gateway.done.wait()
    return result


# --- SIDs and frames ----------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["CA", "MZ", "AC"])
def test_new_sid_is_prefix_and_32_lowercase_hex(prefix: str) -> None:
    sid = new_sid(prefix)
    assert re.fullmatch(prefix + "[0-9a-f]{32}", sid)
    assert new_sid(prefix) != sid


def test_frames_are_160_bytes_with_last_padded_with_silence() -> None:
    mulaw = audio(330)
    chunks = frames(mulaw)
    assert [len(c) for c in chunks] == [160, 160, 160]
    assert b"".join(chunks) == mulaw + b"\xff" * 150
    assert frames(b"") == []
    assert frames(audio(320)) == [audio(320)[:160], audio(320)[160:]]
    assert frames(audio(5), frame_bytes=2) == [audio(5)[:2], audio(5)[2:4], audio(5)[4:] + b"\xff"]


# --- the stream, message by message ---------------------------------------------------------


async def test_fast_call_sends_twilio_messages_in_order() -> None:
    """connected, start (seq 1, customParameters), media (chunk/timestamp/seq), stop last."""
    mulaw = audio(1010)  # 6 full frames + 50 bytes
    async with open_fake_gateway() as gateway:
        result = await call(gateway, mulaw, fast=True, custom_parameters={"From": "+15005550006", "session": "a&b"})

    events = gateway.events()
    assert json.loads(gateway.messages[0]) == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert events[0] == Connected("Call", "1.0.0")
    assert events[1] == Start(
        sequence_number=1,
        stream_sid=STREAM_SID,
        account_sid=ACCOUNT_SID,
        call_sid=CALL_SID,
        tracks=("inbound",),
        custom_parameters={"From": "+15005550006", "session": "a&b"},
        media_format=MULAW_8K_MONO,
    )
    media = events[2:-1]
    assert all(isinstance(m, Media) for m in media)
    assert [(m.sequence_number, m.chunk, m.timestamp, m.track) for m in media] == [
        (i + 2, i + 1, i * 20, "inbound") for i in range(7)
    ]
    assert all(m.stream_sid == STREAM_SID and len(m.payload) == 160 for m in media)
    assert b"".join(m.payload for m in media) == mulaw + b"\xff" * 110
    assert events[-1] == Stop(sequence_number=9, stream_sid=STREAM_SID, account_sid=ACCOUNT_SID, call_sid=CALL_SID)
    # Counters travel as JSON strings, as Twilio sends them.
    raw = json.loads(gateway.messages[2])
    assert (raw["sequenceNumber"], raw["media"]["chunk"], raw["media"]["timestamp"]) == ("2", "1", "0")

    assert gateway.close is not None and gateway.close.code == 1000
    assert result == SimulatedCall(
        call_sid=CALL_SID, stream_sid=STREAM_SID, account_sid=ACCOUNT_SID,
        frames_sent=7, bytes_sent=1120, messages_sent=10,
        closed_by_gateway=False, close_code=1000, close_reason=None, received=[],
    )


async def test_handshake_looks_like_twilio() -> None:
    """User-Agent Twilio.TmeWs/1.0, extra headers passed through, no subprotocol, no Origin."""
    async with open_fake_gateway() as gateway:
        await call(gateway, b"", fast=True, extra_headers=[("X-Twilio-Signature", "c2ln")])
    assert gateway.path == "/twilio/stream"
    assert gateway.headers["user-agent"] == "Twilio.TmeWs/1.0"
    assert gateway.headers["x-twilio-signature"] == "c2ln"
    assert gateway.subprotocols == []
    assert "origin" not in gateway.headers
    assert "sec-websocket-protocol" not in gateway.headers


async def test_sids_are_generated_when_not_given() -> None:
    async with open_fake_gateway() as gateway:
        with trio.fail_after(TIMEOUT_S):
            result = await simulate_call(gateway.url, audio(160), fast=True)
            await gateway.done.wait()
    start = gateway.events()[1]
    assert isinstance(start, Start)
    assert (start.call_sid, start.stream_sid, start.account_sid) == (
        result.call_sid, result.stream_sid, result.account_sid)
    assert re.fullmatch("CA[0-9a-f]{32}", result.call_sid)
    assert re.fullmatch("MZ[0-9a-f]{32}", result.stream_sid)
    assert re.fullmatch("AC[0-9a-f]{32}", result.account_sid)
    assert start.custom_parameters == {}


async def test_no_audio_is_connected_start_stop() -> None:
    async with open_fake_gateway() as gateway:
        result = await call(gateway, b"", fast=True)
    assert [type(e) for e in gateway.events()] == [Connected, Start, Stop]
    assert gateway.events()[-1].sequence_number == 2  # type: ignore[attr-defined]
    assert (result.frames_sent, result.bytes_sent, result.messages_sent) == (0, 0, 3)


async def test_timestamps_may_start_after_zero() -> None:
    async with open_fake_gateway() as gateway:
        await call(gateway, audio(480), fast=True, first_timestamp_ms=102)
    media = [e for e in gateway.events() if isinstance(e, Media)]
    assert [(m.chunk, m.timestamp) for m in media] == [(1, 102), (2, 122), (3, 142)]


async def test_dtmf_is_interleaved_at_its_audio_position() -> None:
    """A digit at p ms follows the frames covering [0, p); digits past the audio precede stop."""
    async with open_fake_gateway() as gateway:
        result = await call(gateway, audio(800), fast=True, dtmf=[(40, "5"), (0, "1"), (30, "*"), (10_000, "#")])

    shape = [
        f"dtmf {e.digit}" if isinstance(e, Dtmf) else f"media {e.chunk}" if isinstance(e, Media) else type(e).__name__
        for e in gateway.events()
    ]
    assert shape == [
        "Connected", "Start", "dtmf 1", "media 1", "media 2", "dtmf *", "dtmf 5",
        "media 3", "media 4", "media 5", "dtmf #", "Stop",
    ]
    dtmf = [e for e in gateway.events() if isinstance(e, Dtmf)]
    assert all(d.track == "inbound_track" and d.stream_sid == STREAM_SID for d in dtmf)
    assert [d.sequence_number for d in dtmf] == [2, 5, 6, 10]
    assert (result.frames_sent, result.messages_sent) == (5, 12)


async def test_real_time_call_on_the_real_clock_sends_the_same_messages() -> None:
    """Real-time pacing (a 0.2 s clip on the real clock): content identical to fast mode."""
    mulaw = audio(1600)
    async with open_fake_gateway() as gateway:
        result = await call(gateway, mulaw, fast=False, dtmf=[(100, "9")])
    events = gateway.events()
    assert [type(e) for e in events] == [Connected, Start] + [Media] * 5 + [Dtmf] + [Media] * 5 + [Stop]
    assert b"".join(e.payload for e in events if isinstance(e, Media)) == mulaw
    assert result.frames_sent == 10 and not result.closed_by_gateway


async def test_real_time_pacing_follows_an_absolute_20ms_schedule(autojump_clock: trio.testing.MockClock) -> None:
    """Under virtual time, frame i arrives at t0 + i * 20 ms exactly, and stop when the audio has played.

    (Loopback sockets deliver within the sending call, so the autojump clock never
    outruns them.)
    """
    async with open_fake_gateway() as gateway:
        await call(gateway, audio(160 * 25), fast=False, dtmf=[(130, "3")])
    events = gateway.events()
    times = dict(zip(range(len(events)), gateway.arrival_times))
    t0 = times[2]  # first media
    offsets = {
        (f"media {e.chunk}" if isinstance(e, Media) else type(e).__name__): round((times[i] - t0) * 1000)
        for i, e in enumerate(events) if i >= 2
    }
    assert all(offsets[f"media {i + 1}"] == i * 20 for i in range(25))
    assert offsets["Dtmf"] == 130
    assert offsets["Stop"] == 500


# --- how the stream ends --------------------------------------------------------------------


async def test_stop_then_close_1000() -> None:
    async with open_fake_gateway() as gateway:
        result = await call(gateway, audio(320), fast=True)
    assert isinstance(gateway.events()[-1], Stop)
    assert gateway.close is not None and gateway.close.code == 1000
    assert (result.closed_by_gateway, result.close_code) == (False, 1000)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "real-time"])
async def test_drop_sends_no_stop_and_no_close_frame(fast: bool, autojump_clock: trio.testing.MockClock) -> None:
    """end="drop": the gateway sees the audio, then the TCP connection vanish (1006)."""
    async with open_fake_gateway() as gateway:
        result = await call(gateway, audio(480), fast=fast, end="drop")
    events = gateway.events()
    assert [type(e) for e in events] == [Connected, Start, Media, Media, Media]
    assert gateway.close is not None and gateway.close.code == 1006
    assert result.messages_sent == 5 and result.frames_sent == 3
    assert (result.closed_by_gateway, result.close_code) == (False, 1006)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "real-time"])
async def test_gateway_closing_early_is_recorded_and_stops_sending(fast: bool, autojump_clock: trio.testing.MockClock) -> None:
    async with open_fake_gateway(close_after(4, 4000, "provider gave up")) as gateway:
        result = await call(gateway, audio(160 * 3000), fast=fast)
    assert result.closed_by_gateway
    assert (result.close_code, result.close_reason) == (4000, "provider gave up")
    assert 2 <= result.frames_sent < 3000
    assert not any(json.loads(m)["event"] == "stop" for m in gateway.messages)


async def test_gateway_closing_after_stop_is_not_early() -> None:
    """The gateway may close first once stop is sent: a normal end, with the gateway's close code."""
    async with open_fake_gateway(close_on_stop) as gateway:
        result = await call(gateway, audio(480), fast=True)
    assert isinstance(gateway.events()[-1], Stop)
    assert not result.closed_by_gateway
    assert result.close_code == 1000 and result.frames_sent == 3


async def test_gateway_messages_are_recorded_in_order(autojump_clock: trio.testing.MockClock) -> None:
    """media / mark / clear from a bidirectional app are kept verbatim and passed to on_message."""
    seen: list[str] = []
    async with open_fake_gateway(reply_after_start) as gateway:
        result = await call(gateway, audio(1600), fast=False, on_message=seen.append)
    assert [json.loads(m)["event"] for m in result.received] == ["media", "mark", "clear"]
    assert json.loads(result.received[1]) == {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "utt-1"}}
    assert seen == result.received
    assert result.binary_received == 1
    assert not result.closed_by_gateway and isinstance(gateway.events()[-1], Stop)


async def test_bad_arguments_are_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="dtmf position"):
        await simulate_call("ws://127.0.0.1:9/x", b"", dtmf=[(-1, "1")])
    with pytest.raises(ValueError, match="end must be"):
        await simulate_call("ws://127.0.0.1:9/x", b"", end="hangup")  # type: ignore[arg-type]


async def test_non_101_answer_raises_connection_rejected() -> None:
    """Twilio's 31920: the gateway refuses the upgrade."""

    async def refuse(request: trio_websocket.WebSocketRequest) -> None:
        await request.reject(403, body=b"forbidden")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, refuse, "127.0.0.1", 0, None)
        with trio.fail_after(TIMEOUT_S), pytest.raises(trio_websocket.ConnectionRejected) as info:
            await simulate_call(f"ws://127.0.0.1:{server.port}/twilio/stream", audio(160), fast=True)
        assert info.value.status_code == 403
        nursery.cancel_scope.cancel()


# --- the voice webhook ----------------------------------------------------------------------


@attrs.define
class FakeHttp:
    url: str = ""
    requests: list[tuple[str, str, dict[str, str], bytes]] = attrs.Factory(list)


@asynccontextmanager
async def open_fake_http(status: int, body: bytes) -> AsyncIterator[FakeHttp]:
    """A one-route HTTP/1.1 server: records each request, answers ``status`` with ``body``."""
    fake = FakeHttp()

    async def serve(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        while len(rest) < int(headers.get("content-length", "0")):
            rest += await stream.receive_some(65536)
        method, target, _ = request_line.split(" ", 2)
        fake.requests.append((method, target, headers, rest))
        reason = {200: "OK", 500: "Internal Server Error"}.get(status, "Status")
        await stream.send_all(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n".encode() + body
        )
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        fake.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        yield fake
        nursery.cancel_scope.cancel()


async def test_voice_webhook_posts_twilio_form_and_returns_twiml() -> None:
    twiml = connect_stream_twiml("wss://gw.example.test/twilio/stream", {"From": "+15005550006"})
    async with open_fake_http(200, twiml.encode()) as http:
        with trio.fail_after(TIMEOUT_S):
            got = await post_voice_webhook(
                http.url, call_sid=CALL_SID, account_sid=ACCOUNT_SID,
                extra_headers=[("X-Twilio-Signature", "OOQAjMmDOurxhMZZp7VI1f9nov8=")],
            )
    assert got == twiml
    [(method, target, headers, body)] = http.requests
    assert (method, target) == ("POST", "/twilio/voice")
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert headers["user-agent"] == "TwilioProxy/1.1"
    assert headers["x-twilio-signature"] == "OOQAjMmDOurxhMZZp7VI1f9nov8="
    assert dict(urllib.parse.parse_qsl(body.decode())) == {
        "AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": CALL_SID,
        "CallStatus": "ringing", "Called": "+15005550001", "Caller": "+15005550006",
        "Direction": "inbound", "From": "+15005550006", "To": "+15005550001",
    }


async def test_voice_webhook_non_200_raises_webhook_error() -> None:
    async with open_fake_http(500, b"boom") as http:
        with trio.fail_after(TIMEOUT_S), pytest.raises(WebhookError, match="500") as info:
            await post_voice_webhook(http.url + "/", call_sid=CALL_SID, account_sid=ACCOUNT_SID)
    assert (info.value.status_code, info.value.body) == (500, "boom")


# --- TwiML ----------------------------------------------------------------------------------


def test_connect_stream_twiml_exact_document() -> None:
    assert connect_stream_twiml(
        "wss://gw.example.test/twilio/stream",
        {"From": "+15005550006", "session": "abc123"},
        status_callback="https://gw.example.test/twilio/status",
    ) == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://gw.example.test/twilio/stream" statusCallback="https://gw.example.test/twilio/status">'
        '<Parameter name="From" value="+15005550006"/><Parameter name="session" value="abc123"/>'
        "</Stream></Connect></Response>"
    )
    assert connect_stream_twiml("wss://h/s", {}) == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://h/s"></Stream></Connect></Response>'
    )


def test_connect_stream_twiml_escapes_attribute_values() -> None:
    twiml = connect_stream_twiml("wss://h/s", {'a"b': "<&>\"'\n\t"})
    assert '<Parameter name="a&quot;b" value="&lt;&amp;&gt;&quot;\'&#10;&#9;"/>' in twiml
    assert parse_connect_stream(twiml).parameters == {'a"b': "<&>\"'\n\t"}


def test_connect_stream_twiml_refuses_what_twilio_or_xml_would() -> None:
    with pytest.raises(ValueError, match="under 500"):
        connect_stream_twiml("wss://h/s", {"k": "v" * 499})
    with pytest.raises(ValueError, match="cannot appear in XML"):
        connect_stream_twiml("wss://h/s", {"k": "a\x00b"})
    connect_stream_twiml("wss://h/s", {"k": "v" * 498})  # 499 characters: fine


xml_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n\r"), max_size=40)


@given(parameters=st.dictionaries(xml_text.filter(bool), xml_text, max_size=5), callback=st.none() | xml_text)
def test_twiml_round_trip(parameters: dict[str, str], callback: str | None) -> None:
    """Whatever the gateway builds, the simulator reads back unchanged."""
    twiml = connect_stream_twiml("wss://gw.example.test/twilio/stream", parameters, callback)
    assert parse_connect_stream(twiml, require_wss=True) == ConnectStream(
        "wss://gw.example.test/twilio/stream", parameters, callback
    )


def test_reject_twiml_and_call_rejected() -> None:
    assert reject_twiml() == '<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="busy"/></Response>'
    with pytest.raises(CallRejected) as info:
        parse_connect_stream(reject_twiml("rejected"))
    assert info.value.reason == "rejected"
    assert isinstance(info.value, ValueError)
    with pytest.raises(CallRejected) as info:
        parse_connect_stream("<Response><Reject/></Response>")
    assert info.value.reason == "rejected"  # Twilio's default
    with pytest.raises(ValueError, match="reason must be"):
        reject_twiml("go away")


def test_parse_connect_stream_reads_twilio_python_style_twiml() -> None:
    """Attribute order, spacing, extra verbs and extra attributes do not matter."""
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response>\n  <Connect action="https://h/after">'
        '<Stream statusCallback="https://h/status" statusCallbackMethod="POST" url="wss://h/twilio/stream">'
        '<Parameter name="session" value="abc123" /></Stream></Connect>\n  <Say>bye</Say>\n</Response>'
    )
    assert parse_connect_stream(twiml) == ConnectStream("wss://h/twilio/stream", {"session": "abc123"}, "https://h/status")


@pytest.mark.parametrize(
    ("twiml", "message"),
    [
        ("not xml", "not well-formed"),
        ("<Reply/>", "root element must be <Response>"),
        ("<Response><Say>hi</Say></Response>", r"no <Connect><Stream> \(found <Say>\)"),
        ("<Response/>", r"no <Connect><Stream> \(found nothing\)"),
        ("<Response><Connect/></Response>", "no <Connect><Stream>"),
        ("<Response><Start><Stream url='wss://h/s'/></Start></Response>", "no <Connect><Stream>"),
        ("<Response><Say>x</Say><Reject/></Response>", "no <Connect><Stream>"),
        ("<Response><Connect><Stream/></Connect></Response>", "no url"),
        ("<Response><Connect><Stream url='/twilio/stream'/></Connect></Response>", "absolute"),
        ("<Response><Connect><Stream url='https://h/s'/></Connect></Response>", "absolute ws or wss"),
        ("<Response><Connect><Stream url='wss://h/s?call=1'/></Connect></Response>", "query strings"),
        ("<Response><Connect><Stream url='wss://h/s' track='both_tracks'/></Connect></Response>", "inbound_track"),
        ("<Response><Connect><Stream url='wss://h/s'><Parameter value='v'/></Stream></Connect></Response>",
         "no name"),
        (f"<Response><Connect><Stream url='wss://h/s'><Parameter name='k' value='{'v' * 499}'/></Stream>"
         "</Connect></Response>", "under 500"),
    ],
)
def test_parse_connect_stream_rejects_what_twilio_would(twiml: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_connect_stream(twiml)
    assert not isinstance(info.value, CallRejected)


def test_parse_connect_stream_require_wss() -> None:
    twiml = connect_stream_twiml("ws://127.0.0.1:8080/twilio/stream", {})
    assert parse_connect_stream(twiml).url == "ws://127.0.0.1:8080/twilio/stream"
    with pytest.raises(ValueError, match="absolute wss:// URL"):
        parse_connect_stream(twiml, require_wss=True)


async def test_webhook_twiml_drives_a_call() -> None:
    """The simulator's whole path: webhook → TwiML → <Stream url> with <Parameter>s → call."""
    async with open_fake_gateway() as gateway:
        twiml = connect_stream_twiml(gateway.url, {"CallSid": CALL_SID, "From": "+15005550006"})
        async with open_fake_http(200, twiml.encode()) as http:
            with trio.fail_after(TIMEOUT_S):
                stream = parse_connect_stream(
                    await post_voice_webhook(http.url, call_sid=CALL_SID, account_sid=ACCOUNT_SID)
                )
        await call(gateway, audio(320), fast=True, custom_parameters=stream.parameters)
    start = gateway.events()[1]
    assert isinstance(start, Start)
    assert start.custom_parameters == {"CallSid": CALL_SID, "From": "+15005550006"}
