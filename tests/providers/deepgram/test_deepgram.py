"""Deepgram: the v1 and Flux codecs as tables, the client's configuration, and whole
calls through a real gateway against the fake Deepgram server on 127.0.0.1."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
import trio

from actors.stats import CallStats
from actors.session_link import DirectLink
from actors.stt_receiver import SttReceiver
from actors.stt_sender import SttSender
from actors.messages import AudioBatch
from gateway.simulator import simulate_call
from providers.base import MULAW_8K, AudioFormat
from providers.deepgram import SPEC, DeepgramCodec, FluxCodec, create
from providers.deepgram.flux import FORCE_END_TURN
from providers.deepgram.protocol import CLOSE_STREAM, FINALIZE, KEEPALIVE
from providers.errors import (
    ProviderAuthError,
    ProviderConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloadedError,
    ProviderProtocolError,
    ProviderQuotaError,
)
from providers.events import (
    Finalized,
    FinalTranscript,
    PartialTranscript,
    ProviderClosed,
    ProviderFailed,
    SessionStarted,
)
from tests.conftest import running_gateway
from tests.fakes.deepgram_server import DeepgramFake, span_text
from tests.fakes.ws_server import serve_fake
from tests.helpers import ListSink, tone

KEY = "dg-test-key-0123456789"
CALL_LIMIT = 20  # seconds: a bound on each real-socket test, never an assertion on speed


def results(text: str, start: float, duration: float, *, is_final: bool, speech_final: bool = False,
            **extra: object) -> str:
    return orjson.dumps({
        "type": "Results", "channel_index": [0, 1], "start": start, "duration": duration,
        "is_final": is_final, "speech_final": speech_final, "from_finalize": False,
        "channel": {"alternatives": [{"transcript": text, "confidence": 0.9, "words": []}]},
        **extra,
    }).decode()


def dumps(body: object) -> str:
    return orjson.dumps(body).decode()


# --------------------------------------------------------------------- v1 codec


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (results("hello", 0.0, 1.04, is_final=False), [PartialTranscript("hello", 0, 1040)]),
        (results("hello there", 1.5, 0.75, is_final=True), [FinalTranscript("hello there", 1500, 2250)]),
        (results("hello there", 1.5, 0.75, is_final=True, speech_final=True),
         [FinalTranscript("hello there", 1500, 2250)]),
        (results("", 2.0, 1.0, is_final=True), []),
        (results("   ", 2.0, 1.0, is_final=False), []),
        (dumps({"type": "Results", "start": 0, "duration": 1, "is_final": True, "channel": {"alternatives": []}}), []),
        (dumps({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 2.3}), []),
        (dumps({"type": "SpeechStarted", "channel": [0, 1], "timestamp": 0.6}), []),
        (dumps({"type": "ConfigureSuccess", "request_id": "r", "keyterms": []}), []),
        (dumps({"type": "SomethingNew", "x": 1}), []),
        (dumps({"type": "Metadata", "request_id": "r", "duration": 1.0, "channels": 1}), []),
    ],
)
def test_deepgram_codec_maps_server_messages(message, expected):
    assert DeepgramCodec().receive(message) == expected


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        "[1, 2]",
        '"Results"',
        b'{"type": "Results"}',
        dumps({"kind": "Results"}),
        dumps({"type": 7}),
        dumps({"type": "Results", "start": 0, "duration": 1, "is_final": True}),
        dumps({"type": "Results", "start": 0, "duration": 1, "channel": {"alternatives": []}}),
        dumps({"type": "Results", "start": "0", "duration": 1, "is_final": True, "channel": {"alternatives": []}}),
        dumps({"type": "Results", "start": True, "duration": 1, "is_final": True, "channel": {"alternatives": []}}),
        dumps({"type": "Results", "start": 0, "duration": 1, "is_final": 1, "channel": {"alternatives": []}}),
        dumps({"type": "Results", "start": 0, "duration": 1, "is_final": True, "channel": {"alternatives": {}}}),
        dumps({"type": "Results", "start": 0, "duration": 1, "is_final": True, "channel": {"alternatives": ["x"]}}),
        dumps({"type": "Results", "start": 0, "duration": 1, "is_final": True,
               "channel": {"alternatives": [{"transcript": 5}]}}),
        dumps({"type": "Results", "start": -1, "duration": 1, "is_final": True,
               "channel": {"alternatives": [{"transcript": "x"}]}}),
        dumps({"type": "Error", "variant": 3}),
    ],
)
def test_deepgram_codec_malformed_message_is_a_protocol_error(message):
    with pytest.raises(ProviderProtocolError):
        DeepgramCodec().receive(message)


@pytest.mark.parametrize(
    ("body", "error_type", "fatal"),
    [
        ({"variant": "SchemaError", "description": "bad message", "message": '{"type":"Nope"}'},
         ProviderConfigError, True),
        ({"variant": "INVALID_AUTH", "description": "Invalid credentials."}, ProviderAuthError, True),
        ({"variant": "INSUFFICIENT_PERMISSIONS", "description": "no"}, ProviderAuthError, True),
        ({"variant": "ASR_PAYMENT_REQUIRED", "description": "balance"}, ProviderQuotaError, True),
        ({"variant": "TOO_MANY_REQUESTS", "description": "slow down"}, ProviderOverloadedError, False),
        ({"code": "INTERNAL_SERVER_ERROR", "description": "oops"}, ProviderConnectionError, False),
        ({}, ProviderConnectionError, False),
    ],
)
def test_deepgram_error_message_is_typed(body, error_type, fatal):
    [event] = DeepgramCodec().receive(dumps({"type": "Error", **body}))
    assert isinstance(event, ProviderFailed)
    assert type(event.error) is error_type and event.error.fatal is fatal


def test_deepgram_codec_sends_audio_unchanged_as_binary_frames():
    codec = DeepgramCodec()
    chunk = tone(100)
    codec.send_audio(chunk)
    codec.send_audio(b"")  # a zero-length frame would close the stream: never sent
    [frame] = codec.data_to_send()
    assert frame is chunk  # no copy
    assert codec.data_to_send() == []


def test_deepgram_codec_splits_sends_longer_than_250_ms():
    codec = DeepgramCodec()
    audio = tone(600)
    codec.send_audio(audio)
    frames = codec.data_to_send()
    assert [len(f) for f in frames] == [2000, 2000, 800]
    assert b"".join(frames) == audio


def test_deepgram_codec_pcm16_frames_stay_sample_aligned():
    codec = DeepgramCodec(AudioFormat("pcm16", 22050))
    audio = bytes(range(256)) * 100
    codec.send_audio(audio)
    frames = codec.data_to_send()
    assert all(len(f) % 2 == 0 for f in frames) and b"".join(frames) == audio


def test_deepgram_finalize_then_metadata_is_finalized():
    codec = DeepgramCodec()
    codec.keepalive()
    codec.finalize()
    codec.finalize()
    codec.keepalive()
    assert codec.data_to_send() == [KEEPALIVE, FINALIZE, CLOSE_STREAM]
    with pytest.raises(RuntimeError):
        codec.send_audio(b"\xff" * 160)
    assert codec.receive(results("bye", 2.0, 0.5, is_final=True)) == [FinalTranscript("bye", 2000, 2500)]
    assert codec.receive(dumps({"type": "Metadata", "request_id": "r"})) == [Finalized()]
    # the close that follows completes the sequence too (never read: the session is over)
    assert codec.connection_closed(1000, "") == [Finalized(), ProviderClosed(1000, "")]


def test_deepgram_normal_close_after_close_stream_completes_the_finalize():
    codec = DeepgramCodec()
    codec.finalize()
    assert codec.connection_closed(1000, "") == [Finalized(), ProviderClosed(1000, "")]


@pytest.mark.parametrize(
    ("code", "reason", "error_type"),
    [
        (1011, "NET-0001", ProviderConnectionError),
        (1011, "NET-0000", ProviderConnectionError),
        (1008, "DATA-0000", ProviderConfigError),
        (1002, "DATA-0000", ProviderConfigError),
        (1008, "", ProviderAuthError),
        (1011, "internal", ProviderConnectionError),
        (1013, "", ProviderOverloadedError),
    ],
)
def test_deepgram_close_mid_stream_is_a_typed_failure(code, reason, error_type):
    events = DeepgramCodec().connection_closed(code, reason)
    assert events[-1] == ProviderClosed(code, reason)
    [failed] = events[:-1]
    assert isinstance(failed, ProviderFailed) and type(failed.error) is error_type
    assert failed.error.code == code


@pytest.mark.parametrize("code", [1006, 1000])
def test_deepgram_drop_or_unasked_close_is_only_closed(code):
    assert DeepgramCodec().connection_closed(code, "") == [ProviderClosed(code, "")]


# --------------------------------------------------------------------- Flux codec


def turn(event: str, index: int, text: str, start: float = 0.0, end: float = 1.0, **extra: object) -> str:
    return dumps({"type": "TurnInfo", "request_id": "r", "sequence_id": 1, "event": event, "turn_index": index,
                  "audio_window_start": start, "audio_window_end": end, "transcript": text, "words": [],
                  "end_of_turn_confidence": 0.5, **extra})


def test_flux_turns_map_to_partials_and_one_final_per_turn():
    codec = FluxCodec()
    assert codec.receive(dumps({"type": "Connected", "request_id": "abc", "sequence_id": 0})) == [
        SessionStarted("abc")]
    assert codec.receive(turn("StartOfTurn", 0, "")) == []
    assert codec.receive(turn("Update", 0, "hello", 0.1, 0.5)) == [PartialTranscript("hello", 100, 500)]
    assert codec.receive(turn("EagerEndOfTurn", 0, "hello there", 0.1, 0.9)) == [
        PartialTranscript("hello there", 100, 900)]
    assert codec.receive(turn("TurnResumed", 0, "hello there", 0.1, 0.9)) == [
        PartialTranscript("hello there", 100, 900)]
    assert codec.receive(turn("EndOfTurn", 0, "Hello there.", 0.1, 1.2, trigger="model")) == [
        FinalTranscript("Hello there.", 100, 1200)]
    assert codec.receive(turn("EndOfTurn", 0, "Hello there.", 0.1, 1.2)) == []  # once per turn_index
    assert codec.receive(turn("Update", 0, "late", 0.1, 1.2)) == []  # a finished turn
    assert codec.receive(dumps({"type": "Warning", "code": "X", "description": "y"})) == []


def test_flux_finalize_with_an_open_turn_waits_for_end_of_turn_before_close_stream():
    codec = FluxCodec()
    codec.receive(turn("Update", 0, "hello"))
    codec.finalize()
    assert codec.data_to_send() == [FORCE_END_TURN]
    assert codec.receive(turn("EndOfTurn", 0, "Hello.", trigger="manual")) == [
        FinalTranscript("Hello.", 0, 1000), Finalized()]
    assert codec.data_to_send() == [CLOSE_STREAM]
    assert codec.connection_closed(1005, "") == [Finalized(), ProviderClosed(1005, "")]


def test_flux_model_end_of_turn_racing_force_end_turn_closes_and_finalizes_at_the_close():
    codec = FluxCodec()
    codec.receive(turn("Update", 0, "hello"))
    codec.finalize()
    codec.data_to_send()
    assert codec.receive(turn("EndOfTurn", 0, "Hello.", trigger="model")) == [FinalTranscript("Hello.", 0, 1000)]
    assert codec.data_to_send() == [CLOSE_STREAM]
    assert codec.connection_closed(1005, "") == [Finalized(), ProviderClosed(1005, "")]


def test_flux_finalize_without_a_turn_closes_at_once():
    codec = FluxCodec()
    codec.finalize()
    assert codec.data_to_send() == [FORCE_END_TURN, CLOSE_STREAM]
    assert codec.connection_closed(1000, "") == [Finalized(), ProviderClosed(1000, "")]


def test_flux_close_while_finalizing_delivers_the_open_turn_once():
    codec = FluxCodec()
    codec.finalize()
    codec.data_to_send()
    codec.receive(turn("Update", 0, "late words", 2.0, 2.4))  # decoded after CloseStream
    assert codec.connection_closed(1005, "") == [
        FinalTranscript("late words", 2000, 2400), Finalized(), ProviderClosed(1005, "")]


def test_flux_error_and_keepalive():
    codec = FluxCodec()
    [failed] = codec.receive(dumps({"type": "Error", "sequence_id": 7, "code": "INTERNAL_SERVER_ERROR",
                                    "description": "boom"}))
    assert isinstance(failed, ProviderFailed) and not failed.error.fatal
    codec.keepalive()  # Flux documents no KeepAlive
    assert codec.data_to_send() == []


@pytest.mark.parametrize(
    "message",
    [
        dumps({"type": "TurnInfo", "turn_index": 0}),
        dumps({"type": "TurnInfo", "event": "Update", "turn_index": "0"}),
        dumps({"type": "TurnInfo", "event": "Update", "turn_index": 0, "transcript": 1}),
        dumps({"type": "TurnInfo", "event": "Update", "turn_index": 0, "audio_window_start": "x"}),
        "{",
    ],
)
def test_flux_malformed_message_is_a_protocol_error(message):
    with pytest.raises(ProviderProtocolError):
        FluxCodec().receive(message)


# --------------------------------------------------------------------- configuration


def test_defaults_are_nova3_mulaw_8k_with_token_auth():
    provider = create({"DEEPGRAM_API_KEY": KEY})
    parts = urlsplit(provider.url)
    assert (parts.scheme, parts.netloc, parts.path) == ("wss", "api.deepgram.com", "/v1/listen")
    assert parse_qs(parts.query) == {
        "model": ["nova-3"], "encoding": ["mulaw"], "sample_rate": ["8000"], "channels": ["1"],
        "language": ["en"], "interim_results": ["true"], "endpointing": ["300"],
        "utterance_end_ms": ["1000"], "smart_format": ["true"]}
    assert provider.headers() == [("Authorization", f"Token {KEY}")]
    assert (provider.audio_format, provider.chunk_ms, provider.keepalive_interval) == (MULAW_8K, 100, 4.0)
    assert KEY not in repr(provider) and KEY not in provider.url
    assert SPEC.key_env == "DEEPGRAM_API_KEY" and SPEC.audio_format == MULAW_8K
    https = create({"DEEPGRAM_API_KEY": KEY, "DEEPGRAM_BASE_URL": "https://api.eu.deepgram.com/"})
    assert https.url.startswith("wss://api.eu.deepgram.com/v1/listen?")


def test_options_from_the_environment():
    provider = create({
        "DEEPGRAM_API_KEY": KEY, "DEEPGRAM_BASE_URL": "ws://127.0.0.1:9000/", "DEEPGRAM_MODEL": "nova-3",
        "DEEPGRAM_LANGUAGE": "multi", "DEEPGRAM_ENDPOINTING": "false", "DEEPGRAM_UTTERANCE_END_MS": "off",
        "DEEPGRAM_SMART_FORMAT": "no", "DEEPGRAM_KEYTERMS": "Acme, refund policy",
        "DEEPGRAM_ENCODING": "linear16", "DEEPGRAM_SAMPLE_RATE": "16000"})
    parts = urlsplit(provider.url)
    query = parse_qs(parts.query)
    assert parts.netloc == "127.0.0.1:9000" and parts.scheme == "ws"
    assert query["endpointing"] == ["false"] and "utterance_end_ms" not in query
    assert query["smart_format"] == ["false"] and query["language"] == ["multi"]
    assert query["keyterm"] == ["Acme", "refund policy"]
    assert (query["encoding"], query["sample_rate"]) == (["linear16"], ["16000"])
    assert provider.audio_format == AudioFormat("pcm16", 16000)


def test_flux_model_selects_v2():
    provider = create({"DEEPGRAM_API_KEY": KEY, "DEEPGRAM_MODEL": "flux-general-en",
                       "DEEPGRAM_EOT_THRESHOLD": "0.8", "DEEPGRAM_EOT_TIMEOUT_MS": "3000"})
    parts = urlsplit(provider.url)
    assert parts.path == "/v2/listen"
    assert parse_qs(parts.query) == {"model": ["flux-general-en"], "encoding": ["mulaw"], "sample_rate": ["8000"],
                                     "eot_threshold": ["0.8"], "eot_timeout_ms": ["3000"]}
    assert (provider.chunk_ms, provider.keepalive_interval) == (80, None)
    assert isinstance(provider.make_codec(), FluxCodec)


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"DEEPGRAM_API_KEY": ""}, "DEEPGRAM_API_KEY"),
        ({"DEEPGRAM_API_KEY": "two words"}, "DEEPGRAM_API_KEY"),
        ({"DEEPGRAM_BASE_URL": "ftp://api.deepgram.com"}, "DEEPGRAM_BASE_URL"),
        ({"DEEPGRAM_BASE_URL": "wss://host/v1/listen"}, "DEEPGRAM_BASE_URL"),
        ({"DEEPGRAM_MODEL": "nova 3"}, "DEEPGRAM_MODEL"),
        ({"DEEPGRAM_ENCODING": "opus"}, "DEEPGRAM_ENCODING"),
        ({"DEEPGRAM_SAMPLE_RATE": "16000"}, "DEEPGRAM_SAMPLE_RATE"),  # mulaw is 8 kHz
        ({"DEEPGRAM_ENDPOINTING": "soon"}, "DEEPGRAM_ENDPOINTING"),
        ({"DEEPGRAM_UTTERANCE_END_MS": "-5"}, "DEEPGRAM_UTTERANCE_END_MS"),
        ({"DEEPGRAM_SMART_FORMAT": "maybe"}, "DEEPGRAM_SMART_FORMAT"),
        ({"DEEPGRAM_MODEL": "nova-2-phonecall", "DEEPGRAM_KEYTERMS": "Acme"}, "DEEPGRAM_KEYTERMS"),
        ({"DEEPGRAM_MODEL": "flux-general-en", "DEEPGRAM_EOT_THRESHOLD": "2"}, "DEEPGRAM_EOT_THRESHOLD"),
        ({"DEEPGRAM_MODEL": "flux-general-en", "DEEPGRAM_ENCODING": "linear16",
          "DEEPGRAM_SAMPLE_RATE": "22050"}, "DEEPGRAM_SAMPLE_RATE"),
    ],
)
def test_bad_configuration_is_one_line_that_names_the_variable(env, mentions):
    with pytest.raises(ProviderConfigError) as caught:
        create({"DEEPGRAM_API_KEY": KEY, **env})
    message = str(caught.value)
    assert mentions in message and "\n" not in message and KEY not in message


# --------------------------------------------------------------------- real sockets


async def _call(fake: DeepgramFake, audio: bytes, env: dict[str, str] | None = None, **settings):
    sink = ListSink()
    async with serve_fake(fake.handler) as base:
        provider = create({"DEEPGRAM_API_KEY": KEY, "DEEPGRAM_BASE_URL": base, **(env or {})})
        with trio.fail_after(CALL_LIMIT):
            async with running_gateway(provider, [sink], **settings) as gw:
                call = await simulate_call(gw.ws_url, audio, fast=True)
                await gw.idle()
    return call, sink


async def test_call_delivers_every_transcript_once_in_order_and_every_byte():
    fake = DeepgramFake(api_key=KEY)
    audio = tone(2500, seed=1)
    call, sink = await _call(fake, audio)
    [session] = fake.sessions
    assert bytes(session.audio) == audio
    assert max(session.frames) == 800  # 100 ms batches
    assert session.controls == ["Finalize", "CloseStream"]
    assert session.close_code == 1000
    assert sink.committed(call.call_sid) == [span_text(0, 1000), span_text(1000, 2000), span_text(2000, 2500)]
    committed = [e for e in sink.of_call(call.call_sid) if e.get("kind") == "committed"]
    assert [(e["audio_start_ms"], e["audio_end_ms"]) for e in committed] == [(0, 1000), (1000, 2000), (2000, 2500)]
    partials = [e["text"] for e in sink.of_call(call.call_sid) if e.get("kind") == "partial"]
    assert partials == [span_text(0, 500), span_text(1000, 1500), span_text(2000, 2500)]
    assert sink.types(call.call_sid)[0] == "call_started"
    ended = sink.of_call(call.call_sid)[-1]
    assert (ended["type"], ended["reason"], ended["forwarded_ms"], ended["dropped_ms"]) == ("call_ended", "stop",
                                                                                            2500, 0)
    assert "provider_error" not in sink.types()


async def test_wrong_key_is_a_fatal_provider_error_and_the_call_still_ends():
    fake = DeepgramFake(api_key="the-right-key")
    call, sink = await _call(fake, tone(1000))
    assert fake.sessions == [] and fake.rejected == [(401, "Invalid credentials.")]
    types = sink.types(call.call_sid)
    assert types == ["call_started", "provider_error", "call_ended"]
    error = sink.of_call(call.call_sid)[1]
    assert error["fatal"] is True and "401" in error["detail"] and KEY not in error["detail"]
    assert sink.of_call(call.call_sid)[-1]["reason"] == "stop"


def committed_spans(sink: ListSink, call_sid: str) -> list[tuple[int, int]]:
    return [(e["audio_start_ms"], e["audio_end_ms"]) for e in sink.of_call(call_sid) if e.get("kind") == "committed"]


async def test_provider_closing_mid_call_is_reported_then_a_new_session_finishes_the_call():
    fake = DeepgramFake(api_key=KEY, close_at_ms=(1200, 1011, "NET-0000"))
    call, sink = await _call(fake, tone(3000))
    events = sink.of_call(call.call_sid)
    [error] = [e for e in events if e["type"] == "provider_error"]
    assert error["fatal"] is False and "1011" in error["detail"] and "NET-0000" in error["detail"]
    assert "provider_reconnected" in sink.types(call.call_sid)
    assert fake.sessions[0].close_code == 1011 and fake.sessions[-1].close_code == 1000
    spans = committed_spans(sink, call.call_sid)
    assert spans[0] == (0, 1000) and spans[-1][1] == 3000
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous: nothing lost, nothing twice
    assert events[-1]["type"] == "call_ended" and events[-1]["reason"] == "stop"


async def test_undecodable_audio_close_is_fatal():
    fake = DeepgramFake(api_key=KEY, close_at_ms=(500, 1008, "DATA-0000"))
    call, sink = await _call(fake, tone(2000))
    [error] = [e for e in sink.of_call(call.call_sid) if e["type"] == "provider_error"]
    assert error["fatal"] is True


async def test_flux_call_commits_each_turn_and_the_last_after_stop():
    fake = DeepgramFake(api_key=KEY)
    audio = tone(2200, seed=2)
    call, sink = await _call(fake, audio, {"DEEPGRAM_MODEL": "flux-general-en"})
    [session] = fake.sessions
    assert session.path == "/v2/listen" and bytes(session.audio) == audio
    assert max(session.frames) == 640  # 80 ms batches
    assert session.controls == ["ForceEndTurn", "CloseStream"]
    assert sink.committed(call.call_sid) == [span_text(0, 1000), span_text(1000, 2000), span_text(2000, 2200)]
    assert sink.of_call(call.call_sid)[-1]["reason"] == "stop"


async def _session_with_idle_gap(fake: DeepgramFake, keepalive_interval: float | None, gap: float):
    """Audio, then ``gap`` seconds of none, then the rest: through SttSender/SttReceiver."""
    async with serve_fake(fake.handler) as base:
        provider = create({"DEEPGRAM_API_KEY": KEY, "DEEPGRAM_BASE_URL": base})
        audio_send, audio_receive = trio.open_memory_channel[AudioBatch](0)
        events_send, events_receive = trio.open_memory_channel(100)
        stats = CallStats()

        async def feed() -> None:
            async with audio_send:
                await audio_send.send(AudioBatch(0, 100, tone(100)))
                await trio.sleep(gap)  # the scenario: no audio for longer than Deepgram's idle limit
                await audio_send.send(AudioBatch(100, 100, tone(100, seed=1)))

        failure: ProviderError | None = None
        with trio.fail_after(CALL_LIMIT):
            try:
                async with provider.open_session() as session, trio.open_nursery() as nursery:
                    nursery.start_soon(feed)
                    link = DirectLink(session, audio_receive, stats, provider=provider.name)
                    nursery.start_soon(SttSender(keepalive_interval).run, link)
                    await SttReceiver().run(link, events_send)
            except* ProviderError as group:
                failure = group.exceptions[0]
    events_send.close()
    return [event async for event in events_receive], failure


async def test_keepalive_holds_the_session_open_through_silence():
    fake = DeepgramFake(api_key=KEY, idle_timeout=0.8, final_every_ms=10_000, partial_every_ms=10_000)
    transcripts, failure = await _session_with_idle_gap(fake, keepalive_interval=0.1, gap=1.6)
    assert failure is None
    [session] = fake.sessions
    assert session.controls.count("KeepAlive") >= 5
    assert session.controls[-2:] == ["Finalize", "CloseStream"] and session.close_code == 1000
    assert [t.text for t in transcripts] == [span_text(0, 200)]


async def test_without_keepalive_deepgram_closes_an_idle_session_net_0001():
    fake = DeepgramFake(api_key=KEY, idle_timeout=0.3)
    _, failure = await _session_with_idle_gap(fake, keepalive_interval=None, gap=5.0)
    assert isinstance(failure, ProviderConnectionError) and not failure.fatal
    assert "NET-0001" in str(failure)
    assert fake.sessions[0].close_code == 1011


async def test_flux_close_without_status_after_close_stream_is_finalized():
    """Flux closes with no status code (the client sees 1005) after CloseStream."""
    fake = DeepgramFake(api_key=KEY, partial_every_ms=100_000, final_every_ms=100_000)
    async with serve_fake(fake.handler) as base:
        provider = create({"DEEPGRAM_API_KEY": KEY, "DEEPGRAM_BASE_URL": base, "DEEPGRAM_MODEL": "flux-general-en"})
        events = []
        with trio.fail_after(CALL_LIMIT):
            async with provider.open_session() as session:
                assert await session.receive() == SessionStarted("req-fake")
                await session.finalize()  # no turn open: ForceEndTurn + CloseStream at once
                while not isinstance(event := await session.receive(), ProviderClosed):
                    events.append(event)
    assert events == [Finalized()]
    assert event == ProviderClosed(1005, "")
    assert fake.sessions[0].controls == ["ForceEndTurn", "CloseStream"]
