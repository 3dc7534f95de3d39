"""AssemblyAI v3: the codec as tables (turns, format_turns de-duplication, frame rules,
errors), real-time pacing on trio's clock, the client's configuration, and whole calls
through a real gateway against the fake AssemblyAI server on 127.0.0.1."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from gateway.simulator import simulate_call
from providers.assemblyai import SPEC, AssemblyAICodec, PacedSession, RealTimePacer, create
from providers.assemblyai.protocol import FORCE_ENDPOINT, KEEPALIVE, TERMINATE, error_for_code
from providers.base import MULAW_8K, AudioFormat
from providers.errors import (
    ProviderAuthError,
    ProviderConfigError,
    ProviderConnectionError,
    ProviderOverloadedError,
    ProviderProtocolError,
)
from providers.events import (
    Finalized,
    FinalTranscript,
    PartialTranscript,
    ProviderClosed,
    ProviderEvent,
    ProviderFailed,
    SessionStarted,
)
from tests.conftest import running_gateway
from tests.fakes.assemblyai_server import AssemblyAIFake, formatted_text
from tests.fakes.ws_server import serve_fake
from tests.helpers import ListSink, tone

KEY = "aai-test-key-0123456789abcdef"
CALL_LIMIT = 20  # seconds: a bound on each real-socket test, never an assertion on speed
DRAIN = 10.0  # a fast simulated call's backlog is paced to real time after its stop


def dumps(body: object) -> str:
    return orjson.dumps(body).decode()


def turn(order: int, text: str, *, eot: bool, formatted: bool = False, words: list | None = None) -> str:
    if words is None:
        words = [{"text": w, "start": 1000 + 100 * i, "end": 1080 + 100 * i, "confidence": 0.9,
                  "word_is_final": True} for i, w in enumerate(text.split())]
    return dumps({"type": "Turn", "turn_order": order, "turn_is_formatted": formatted, "end_of_turn": eot,
                  "transcript": text, "utterance": text if eot else "", "end_of_turn_confidence": 0.5,
                  "words": words})


TERMINATION = dumps({"type": "Termination", "audio_duration_seconds": 3, "session_duration_seconds": 4})


# --------------------------------------------------------------------- turns


def test_begin_partial_and_final_turns():
    codec = AssemblyAICodec()
    assert codec.receive(dumps({"type": "Begin", "id": "de5d", "expires_at": 1759796682})) == [
        SessionStarted("de5d")]
    assert codec.receive(turn(0, "hi my", eot=False)) == [PartialTranscript("hi my", 1000, 1180)]
    assert codec.receive(turn(0, "hi my name", eot=True)) == [FinalTranscript("hi my name", 1000, 1280)]
    assert codec.receive(turn(0, "hi my name", eot=True)) == []  # once per turn_order
    assert codec.receive(turn(1, "", eot=False, words=[])) == []


def test_turn_without_words_spans_the_audio_sent():
    codec = AssemblyAICodec()
    codec.send_audio(tone(300))
    assert codec.receive(turn(0, "hello", eot=False, words=[])) == [PartialTranscript("hello", 0, 300)]
    assert codec.receive(turn(0, "hello", eot=True, words=[])) == [FinalTranscript("hello", 0, 300)]
    codec.send_audio(tone(200))
    assert codec.receive(turn(1, "again", eot=False, words=[])) == [PartialTranscript("again", 300, 500)]


def test_format_turns_pair_is_delivered_once_formatted():
    codec = AssemblyAICodec(format_turns=True)
    assert codec.receive(turn(0, "hi my name is sonny", eot=True)) == [
        PartialTranscript("hi my name is sonny", 1000, 1480)]
    assert codec.receive(turn(0, "Hi, my name is Sonny.", eot=True, formatted=True)) == [
        FinalTranscript("Hi, my name is Sonny.", 1000, 1480)]
    assert codec.receive(turn(0, "Hi, my name is Sonny.", eot=True, formatted=True)) == []


def test_format_turns_formatted_only_is_delivered_once():
    codec = AssemblyAICodec(format_turns=True)
    assert codec.receive(turn(0, "Hello.", eot=True, formatted=True)) == [FinalTranscript("Hello.", 1000, 1080)]
    assert codec.receive(turn(1, "Next", eot=False, formatted=True)) == [PartialTranscript("Next", 1000, 1080)]


@pytest.mark.parametrize(
    ("after", "expected_tail"),
    [
        (turn(1, "next one", eot=False), [PartialTranscript("next one", 1000, 1180)]),
        (TERMINATION, []),
    ],
)
def test_format_turns_unformatted_end_is_delivered_when_the_formatted_never_comes(after, expected_tail):
    codec = AssemblyAICodec(format_turns=True)
    codec.receive(turn(0, "hello there", eot=True))
    events = codec.receive(after)
    assert events == [FinalTranscript("hello there", 1000, 1180), *expected_tail]
    assert codec.receive(turn(0, "Hello there.", eot=True, formatted=True)) == []  # too late: already delivered


@pytest.mark.parametrize("code", [1000, 1006, 3005])
def test_held_unformatted_turn_is_delivered_before_the_close(code):
    codec = AssemblyAICodec(format_turns=True)
    codec.receive(turn(0, "hello there", eot=True))
    events = codec.connection_closed(code, "")
    assert events[0] == FinalTranscript("hello there", 1000, 1180)
    assert events[-1] == ProviderClosed(code, "")


@pytest.mark.parametrize(
    "message",
    [
        dumps({"type": "SpeechStarted", "timestamp": 1216}),
        dumps({"type": "Warning", "warning_code": 1, "warning": "w"}),
        dumps({"type": "Heartbeat", "total_audio_received_ms": 100}),
        dumps({"type": "Silence", "start_ms": 0, "end_ms": 100}),
        dumps({"type": "SomethingNew"}),
        TERMINATION,  # unasked: the close that follows says why
    ],
)
def test_other_messages_are_ignored(message):
    assert AssemblyAICodec().receive(message) == []


@pytest.mark.parametrize(
    "message",
    [
        "nope",
        "[]",
        b'{"type": "Turn"}',
        dumps({"type": None}),
        dumps({"type": "Begin"}),
        dumps({"type": "Begin", "id": 5}),
        dumps({"type": "Turn", "end_of_turn": False, "transcript": "x"}),
        dumps({"type": "Turn", "turn_order": "0", "end_of_turn": False, "transcript": "x"}),
        dumps({"type": "Turn", "turn_order": 0, "end_of_turn": "no", "transcript": "x"}),
        dumps({"type": "Turn", "turn_order": 0, "end_of_turn": False}),
        dumps({"type": "Turn", "turn_order": 0, "end_of_turn": False, "transcript": "x", "words": {}}),
        dumps({"type": "Turn", "turn_order": 0, "end_of_turn": False, "transcript": "x", "words": ["x"]}),
        dumps({"type": "Turn", "turn_order": 0, "end_of_turn": False, "transcript": "x",
               "words": [{"text": "x", "start": "1", "end": 2}]}),
        dumps({"type": "Turn", "turn_order": 0, "end_of_turn": False, "transcript": "x",
               "words": [{"text": "x", "start": -1, "end": 2}]}),
        dumps({"type": "Turn", "turn_order": 0, "end_of_turn": False, "transcript": "x",
               "words": [{"text": "x", "start": 1}]}),
        dumps({"type": "Turn", "turn_order": -1, "end_of_turn": False, "transcript": "x"}),
        dumps({"type": "Turn", "turn_order": 0, "end_of_turn": False, "transcript": "x", "turn_is_formatted": 1}),
        dumps({"type": "Error", "error_code": "3005", "error": "x"}),
        dumps({"type": "Error", "error_code": 3005, "error": ["x"]}),
    ],
)
def test_malformed_message_is_a_protocol_error(message):
    with pytest.raises(ProviderProtocolError):
        AssemblyAICodec().receive(message)


# --------------------------------------------------------------------- errors and closes


@pytest.mark.parametrize(
    ("code", "text", "error_type", "fatal"),
    [
        (1008, "Unauthorized connection: Invalid API key", ProviderAuthError, True),
        (1008, "Too many concurrent sessions", ProviderOverloadedError, False),
        (3005, "Session Cancelled", ProviderConnectionError, False),
        (3006, "Invalid Message Type: Foo", ProviderConfigError, True),
        (3007, "Input duration violation: 20 ms", ProviderConfigError, True),
        (3007, "Audio Transmission Rate Exceeded", ProviderConfigError, True),
        (3008, "Session Expired: Maximum session duration exceeded", ProviderConnectionError, False),
        (3009, "Too many concurrent sessions", ProviderOverloadedError, False),
        (None, "something broke", ProviderConnectionError, False),
        (4999, "", ProviderConnectionError, False),
    ],
)
def test_error_message_is_typed(code, text, error_type, fatal):
    [failed] = AssemblyAICodec().receive(dumps({"type": "Error", "error_code": code, "error": text}))
    assert isinstance(failed, ProviderFailed)
    assert type(failed.error) is error_type and failed.error.fatal is fatal
    assert failed.error.code == code


@pytest.mark.parametrize(
    ("code", "reason", "error_type"),
    [
        (1008, "Unauthorized connection", ProviderAuthError),
        (3005, "", ProviderConnectionError),
        (3007, "Audio Transmission Rate Exceeded", ProviderConfigError),
        (3009, "", ProviderOverloadedError),
        (1011, "internal", ProviderConnectionError),
    ],
)
def test_close_mid_stream_is_a_typed_failure(code, reason, error_type):
    events = AssemblyAICodec().connection_closed(code, reason)
    assert events[-1] == ProviderClosed(code, reason)
    [failed] = events[:-1]
    assert isinstance(failed, ProviderFailed) and type(failed.error) is error_type
    assert "connection closed with code" in str(failed.error)


def test_error_detail_names_the_variable_never_a_key():
    error = error_for_code(1008, "")
    assert "ASSEMBLYAI_API_KEY" in str(error) and KEY not in str(error)


def test_terminate_then_termination_then_close_1000():
    codec = AssemblyAICodec()
    codec.send_audio(tone(100))
    codec.finalize()
    codec.finalize()
    assert codec.data_to_send() == [tone(100), TERMINATE]
    with pytest.raises(RuntimeError):
        codec.send_audio(tone(100))
    assert codec.receive(turn(0, "bye", eot=True)) == [FinalTranscript("bye", 1000, 1080)]
    assert codec.receive(TERMINATION) == [Finalized()]
    assert codec.connection_closed(1000, "") == [Finalized(), ProviderClosed(1000, "")]


def test_close_1000_after_terminate_without_termination_is_finalized():
    codec = AssemblyAICodec()
    codec.finalize()
    assert codec.connection_closed(1000, "") == [Finalized(), ProviderClosed(1000, "")]


def test_keepalive_and_force_endpoint():
    codec = AssemblyAICodec()
    codec.keepalive()
    codec.force_endpoint()
    codec.finalize()
    codec.keepalive()
    codec.force_endpoint()
    assert codec.data_to_send() == [KEEPALIVE, FORCE_ENDPOINT, TERMINATE]


# --------------------------------------------------------------------- frames of 50-1000 ms


def test_a_100_ms_batch_goes_out_as_is():
    codec = AssemblyAICodec()
    batch = tone(100)
    codec.send_audio(batch)
    [frame] = codec.data_to_send()
    assert frame is batch  # no copy


def test_a_short_piece_waits_for_the_next_and_the_last_is_padded_with_silence():
    codec = AssemblyAICodec()
    codec.send_audio(tone(20, seed=1))
    assert codec.data_to_send() == []
    codec.send_audio(tone(100, seed=2))
    assert codec.data_to_send() == [tone(20, seed=1) + tone(100, seed=2)]
    codec.send_audio(tone(20, seed=3))
    codec.finalize()
    assert codec.data_to_send() == [tone(20, seed=3) + b"\xff" * 240, TERMINATE]
    assert codec.padded_bytes == 240


@pytest.mark.parametrize(
    ("ms", "frames_ms"),
    [(1000, [1000]), (2500, [1000, 1000, 500]), (1020, [970, 50]), (2040, [1000, 990, 50]), (50, [50])],
)
def test_long_pieces_are_split_without_a_short_tail(ms, frames_ms):
    codec = AssemblyAICodec()
    audio = tone(ms)
    codec.send_audio(audio)
    frames = codec.data_to_send()
    assert [len(f) // 8 for f in frames] == frames_ms
    assert b"".join(frames) == audio


def test_pcm16_frames_are_whole_samples_of_50_to_1000_ms():
    codec = AssemblyAICodec(AudioFormat("pcm16", 16000))
    assert (codec.min_frame, codec.max_frame) == (1600, 32000)
    codec.send_audio(b"\x01\x02" * 40)  # 5 ms
    codec.finalize()
    [frame, _] = codec.data_to_send()
    assert frame == b"\x01\x02" * 40 + b"\x00" * 1520


@given(st.lists(st.integers(1, 20_000), min_size=1, max_size=12))
def test_any_sequence_of_pieces_becomes_frames_of_50_to_1000_ms(sizes):
    codec = AssemblyAICodec()
    audio = b"".join(bytes([i % 200]) * n for i, n in enumerate(sizes))
    position = 0
    for n in sizes:
        codec.send_audio(audio[position:position + n])
        position += n
    codec.finalize()
    frames = [m for m in codec.data_to_send() if isinstance(m, bytes)]
    assert all(400 <= len(f) <= 8000 for f in frames)
    wire = b"".join(frames)
    assert wire[:len(audio)] == audio and wire[len(audio):] == b"\xff" * codec.padded_bytes
    assert codec.padded_bytes < 400


# --------------------------------------------------------------------- pacing (virtual time)


class _RecordingSession:
    def __init__(self) -> None:
        self.sent: list[tuple[float, int]] = []

    async def send_audio(self, audio: bytes) -> None:
        self.sent.append((trio.current_time(), len(audio)))

    async def finalize(self) -> None: ...
    async def keepalive(self) -> None: ...

    async def receive(self) -> ProviderEvent:
        return ProviderClosed(1000)


async def test_pacer_lets_a_backlog_out_no_faster_than_real_time(autojump_clock):
    inner = _RecordingSession()
    session = PacedSession(inner, RealTimePacer(MULAW_8K, max_lead_ms=500))
    start = trio.current_time()
    for _ in range(10):
        await session.send_audio(tone(100))
    times = [round(t - start, 6) for t, _ in inner.sent]
    assert times == [0, 0, 0, 0, 0, 0.1, 0.2, 0.3, 0.4, 0.5]


async def test_pacer_does_not_delay_real_time_audio(autojump_clock):
    inner = _RecordingSession()
    session = PacedSession(inner, RealTimePacer(MULAW_8K, max_lead_ms=500))
    start = trio.current_time()
    for i in range(5):
        await trio.sleep_until(start + i * 0.1)
        await session.send_audio(tone(100))
    assert [round(t - start, 6) for t, _ in inner.sent] == [0, 0.1, 0.2, 0.3, 0.4]


# --------------------------------------------------------------------- configuration


def test_defaults_are_english_streaming_mulaw_8k_with_the_raw_key():
    provider = create({"ASSEMBLYAI_API_KEY": KEY})
    parts = urlsplit(provider.url)
    assert (parts.scheme, parts.netloc, parts.path) == ("wss", "streaming.assemblyai.com", "/v3/ws")
    assert parse_qs(parts.query) == {"speech_model": ["universal-streaming-english"], "encoding": ["pcm_mulaw"],
                                     "sample_rate": ["8000"], "format_turns": ["true"]}
    assert ("Authorization", KEY) in provider.headers()
    assert (provider.audio_format, provider.chunk_ms, provider.keepalive_interval) == (MULAW_8K, 100, None)
    assert KEY not in repr(provider) and KEY not in provider.url
    assert SPEC.key_env == "ASSEMBLYAI_API_KEY" and SPEC.audio_format == MULAW_8K


def test_options_from_the_environment():
    provider = create({
        "ASSEMBLYAI_API_KEY": KEY, "ASSEMBLYAI_BASE_URL": "ws://127.0.0.1:9000",
        "ASSEMBLYAI_SPEECH_MODEL": "universal-streaming-multilingual", "ASSEMBLYAI_FORMAT_TURNS": "false",
        "ASSEMBLYAI_END_OF_TURN_CONFIDENCE_THRESHOLD": "0.7", "ASSEMBLYAI_MIN_TURN_SILENCE": "300",
        "ASSEMBLYAI_MAX_TURN_SILENCE": "1500", "ASSEMBLYAI_KEYTERMS": "Acme, refund policy",
        "ASSEMBLYAI_INACTIVITY_TIMEOUT": "30", "ASSEMBLYAI_ENCODING": "pcm_s16le",
        "ASSEMBLYAI_SAMPLE_RATE": "16000"})
    parts = urlsplit(provider.url)
    assert parts.netloc == "127.0.0.1:9000"
    assert parse_qs(parts.query) == {
        "speech_model": ["universal-streaming-multilingual"], "encoding": ["pcm_s16le"], "sample_rate": ["16000"],
        "format_turns": ["false"], "end_of_turn_confidence_threshold": ["0.7"], "min_turn_silence": ["300"],
        "max_turn_silence": ["1500"], "keyterms_prompt": ['["Acme","refund policy"]'],
        "inactivity_timeout": ["30"]}
    assert provider.audio_format == AudioFormat("pcm16", 16000)
    assert provider.make_codec().format_turns is False


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"ASSEMBLYAI_API_KEY": " "}, "ASSEMBLYAI_API_KEY"),
        ({"ASSEMBLYAI_API_KEY": "key\twith tab"}, "ASSEMBLYAI_API_KEY"),
        ({"ASSEMBLYAI_BASE_URL": "streaming.assemblyai.com"}, "ASSEMBLYAI_BASE_URL"),
        ({"ASSEMBLYAI_BASE_URL": "wss://host/v3/ws"}, "ASSEMBLYAI_BASE_URL"),
        ({"ASSEMBLYAI_SPEECH_MODEL": "Universal Streaming"}, "ASSEMBLYAI_SPEECH_MODEL"),
        ({"ASSEMBLYAI_ENCODING": "opus"}, "ASSEMBLYAI_ENCODING"),
        ({"ASSEMBLYAI_SAMPLE_RATE": "16000"}, "ASSEMBLYAI_SAMPLE_RATE"),  # pcm_mulaw is 8 kHz
        ({"ASSEMBLYAI_FORMAT_TURNS": "sometimes"}, "ASSEMBLYAI_FORMAT_TURNS"),
        ({"ASSEMBLYAI_END_OF_TURN_CONFIDENCE_THRESHOLD": "1.5"}, "ASSEMBLYAI_END_OF_TURN_CONFIDENCE_THRESHOLD"),
        ({"ASSEMBLYAI_MIN_TURN_SILENCE": "-1"}, "ASSEMBLYAI_MIN_TURN_SILENCE"),
        ({"ASSEMBLYAI_MIN_TURN_SILENCE": "900", "ASSEMBLYAI_MAX_TURN_SILENCE": "800"}, "ASSEMBLYAI_MAX_TURN_SILENCE"),
        ({"ASSEMBLYAI_INACTIVITY_TIMEOUT": "2"}, "ASSEMBLYAI_INACTIVITY_TIMEOUT"),
        ({"ASSEMBLYAI_KEYTERMS": "x" * 60}, "ASSEMBLYAI_KEYTERMS"),
    ],
)
def test_bad_configuration_is_one_line_that_names_the_variable(env, mentions):
    with pytest.raises(ProviderConfigError) as caught:
        create({"ASSEMBLYAI_API_KEY": KEY, **env})
    message = str(caught.value)
    assert mentions in message and "\n" not in message and KEY not in message


# --------------------------------------------------------------------- real sockets


async def _call(fake: AssemblyAIFake, audio: bytes, env: dict[str, str] | None = None, *,
                max_lead_ms: float | None = 500):
    sink = ListSink()
    async with serve_fake(fake.handler) as base:
        provider = create({"ASSEMBLYAI_API_KEY": KEY, "ASSEMBLYAI_BASE_URL": base, **(env or {})})
        provider.max_lead_ms = max_lead_ms
        with trio.fail_after(CALL_LIMIT):
            async with running_gateway(provider, [sink], drain_timeout=DRAIN) as gw:
                call = await simulate_call(gw.ws_url, audio, fast=True)
                await gw.idle()
    return call, sink


@pytest.mark.parametrize("format_pair", [True, False], ids=["unformatted+formatted", "formatted-only"])
async def test_call_delivers_each_turn_once_formatted_and_every_byte(format_pair):
    fake = AssemblyAIFake(api_key=KEY, format_pair=format_pair)
    audio = tone(2020, seed=5)  # the last batch is 20 ms: padded to 50 ms at the end
    call, sink = await _call(fake, audio)
    [session] = fake.sessions
    assert session.headers["authorization"] == KEY
    assert bytes(session.audio[:len(audio)]) == audio
    assert bytes(session.audio[len(audio):]) == b"\xff" * 240
    assert all(400 <= size <= 8000 for size in session.frames)
    assert session.controls == ["Terminate"] and session.close_code == 1000
    events = sink.of_call(call.call_sid)
    assert sink.committed(call.call_sid) == [formatted_text(0, 1000), formatted_text(1000, 2000),
                                             formatted_text(2000, 2050)]
    committed = [e for e in events if e.get("kind") == "committed"]
    assert [(e["audio_start_ms"], e["audio_end_ms"]) for e in committed] == [(0, 1000), (1000, 2000), (2000, 2050)]
    assert events[-1]["type"] == "call_ended" and events[-1]["reason"] == "stop"
    assert (events[-1]["forwarded_ms"], events[-1]["dropped_ms"]) == (2020, 0)
    assert "provider_error" not in sink.types()


async def test_unpaced_backlog_is_refused_by_assemblyai_with_3007():
    """Why the session paces: the same call sent as fast as the gateway gets it."""
    fake = AssemblyAIFake(api_key=KEY)
    call, sink = await _call(fake, tone(3000), max_lead_ms=None)
    assert fake.sessions[0].close_code == 3007
    assert fake.sessions[0].close_reason == "Audio Transmission Rate Exceeded"
    [error] = [e for e in sink.of_call(call.call_sid) if e["type"] == "provider_error"]
    assert error["fatal"] is True and "3007" in error["detail"]
    assert sink.of_call(call.call_sid)[-1]["type"] == "call_ended"


@pytest.mark.parametrize("auth_failure", ["http", "close"])
async def test_wrong_key_is_a_fatal_provider_error_and_the_call_still_ends(auth_failure):
    fake = AssemblyAIFake(api_key="the-right-key", auth_failure=auth_failure)
    call, sink = await _call(fake, tone(600))
    events = sink.of_call(call.call_sid)
    assert [e["type"] for e in events] == ["call_started", "provider_error", "call_ended"]
    error = events[1]
    assert error["fatal"] is True and KEY not in error["detail"]
    assert ("401" if auth_failure == "http" else "1008") in error["detail"]
    assert events[-1]["reason"] == "stop"


def committed_spans(sink: ListSink, call_sid: str) -> list[tuple[int, int]]:
    return [(e["audio_start_ms"], e["audio_end_ms"]) for e in sink.of_call(call_sid) if e.get("kind") == "committed"]


@pytest.mark.parametrize(
    "fault",
    [{"close_at_ms": (1300, 3005, "Session Cancelled")}, {"error_at_ms": (1300, 3009, "Too many concurrent sessions")}],
    ids=["close-3005", "error-3009"],
)
async def test_retryable_fault_is_one_provider_error_then_a_new_session_finishes_the_call(fault):
    fake = AssemblyAIFake(api_key=KEY, **fault)
    call, sink = await _call(fake, tone(3000))
    events = sink.of_call(call.call_sid)
    [error] = [e for e in events if e["type"] == "provider_error"]
    assert error["fatal"] is False
    assert "provider_reconnected" in sink.types(call.call_sid)
    spans = committed_spans(sink, call.call_sid)
    assert spans[0] == (0, 1000) and spans[-1][1] == 3000
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous: nothing lost, nothing twice
    assert fake.sessions[-1].controls == ["Terminate"] and fake.sessions[-1].close_code == 1000
    assert events[-1]["type"] == "call_ended" and events[-1]["reason"] == "stop"


async def test_fatal_fault_keeps_the_turns_before_it_and_the_call_still_ends():
    fake = AssemblyAIFake(api_key=KEY, error_at_ms=(1300, 3006, "Invalid Message"))
    call, sink = await _call(fake, tone(3000))
    events = sink.of_call(call.call_sid)
    assert sink.committed(call.call_sid) == [formatted_text(0, 1000)]
    [error] = [e for e in events if e["type"] == "provider_error"]
    assert error["fatal"] is True and "3006" in error["detail"]
    assert len(fake.sessions) == 1
    assert events[-1]["type"] == "call_ended" and events[-1]["reason"] == "stop"


async def test_fake_refuses_frames_outside_50_to_1000_ms():
    """The vendor rule the codec exists for: a 20 ms frame is closed with 3007."""
    fake = AssemblyAIFake(api_key=KEY)
    async with serve_fake(fake.handler) as base:
        provider = create({"ASSEMBLYAI_API_KEY": KEY, "ASSEMBLYAI_BASE_URL": base})
        with trio.fail_after(CALL_LIMIT):
            async with provider.open_session() as session:
                assert await session.receive() == SessionStarted("de5d9927-fake")
                ws = session.inner._ws  # around the codec, on purpose
                async with ws.send_lock:
                    await ws.write(ws.frame(tone(20)), None)
                while not isinstance(event := await session.receive(), ProviderClosed):
                    failure = event
    assert event.code == 3007
    assert isinstance(failure, ProviderFailed) and isinstance(failure.error, ProviderConfigError)
    assert fake.sessions[0].close_reason.startswith("Input duration violation: 20 ms")


@pytest.mark.parametrize(
    ("code", "reason", "error_type", "fatal"),
    [
        (3007, "Audio Transmission Rate Exceeded", ProviderConfigError, True),
        (3006, "Invalid Message Type: Foo", ProviderConfigError, True),
        (1008, "Too many concurrent sessions", ProviderOverloadedError, False),
        (3009, "Too many concurrent sessions", ProviderOverloadedError, False),
        (3005, "Session Cancelled", ProviderConnectionError, False),
    ],
    ids=["3007", "3006", "1008-rate-limit", "3009", "3005"],
)
async def test_a_close_seen_by_a_send_is_typed_by_the_codec(autojump_clock, code, reason, error_type, fatal):
    """AssemblyAI closes while audio is being sent: the send that finds the socket closed
    raises the codec's error for that close (3007 is fatal, a rate limit is not), the
    same one the receive side then reports, and the codec hears of the close once."""
    fake = AssemblyAIFake(api_key=KEY, close_at_ms=(300, code, reason))
    async with serve_fake(fake.handler) as base:
        provider = create({"ASSEMBLYAI_API_KEY": KEY, "ASSEMBLYAI_BASE_URL": base})
        provider.max_lead_ms = None
        with trio.fail_after(CALL_LIMIT):
            async with provider.open_session() as session:
                with pytest.raises(error_type) as sent:
                    for _ in range(100):  # 100 ms at a time, in real time: the fake closes at 300 ms
                        await session.send_audio(tone(100))
                        await trio.sleep(0.1)
                events = []
                while not isinstance(event := await session.receive(), ProviderClosed):
                    events.append(event)
    assert sent.value.fatal is fatal and sent.value.code == code and reason in str(sent.value)
    assert fake.sessions[0].close_code == code
    failures = [e for e in events if isinstance(e, ProviderFailed)]
    assert len(failures) == 1 and failures[0].error is sent.value
    assert event == ProviderClosed(code, reason)
