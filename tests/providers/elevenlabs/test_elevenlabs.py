"""ElevenLabs Scribe v2 Realtime: the codec's tables, the client's URL and options, and
whole calls through a real gateway into the loopback fake (tests/fakes/elevenlabs_server.py)."""

from __future__ import annotations

import base64

import orjson
import pytest

from providers.base import MULAW_8K, AudioFormat
from providers.elevenlabs import ERROR_TYPES, SPEC, ElevenLabsCodec, create
from providers.errors import (
    ProviderAuthError,
    ProviderConfigError,
    ProviderConnectionError,
    ProviderOverloadedError,
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
from tests.fakes.elevenlabs_server import PATH, TEST_KEY, FakeElevenLabs
from tests.fakes.script import Close, Drop, Fault, Send, Stall
from tests.helpers import tone
from tests.vendor_calls import assert_one_line_fix, j, provider_errors, transcripts, vendor_call

def committed(text: str) -> str:
    return j({"message_type": "committed_transcript", "text": text})


def twin(text: str, *words: tuple[str, float, float]) -> str:
    return j({"message_type": "committed_transcript_with_timestamps", "text": text, "language_code": "en",
              "words": [{"text": w, "start": s, "end": e, "type": "word"} for w, s, e in words]})


def ready(**kwargs) -> ElevenLabsCodec:
    codec = ElevenLabsCodec(**kwargs)
    assert codec.receive(j({"message_type": "session_started", "session_id": "abc"})) == [SessionStarted("abc")]
    return codec


# --- codec: audio out ------------------------------------------------------------------


def test_audio_is_one_input_audio_chunk_per_batch_with_the_bytes_as_is():
    codec = ready()
    codec.send_audio(b"\x00\xff\x7f" * 100)
    (message,) = codec.data_to_send()
    assert orjson.loads(message) == {"message_type": "input_audio_chunk",
                                     "audio_base_64": base64.b64encode(b"\x00\xff\x7f" * 100).decode(),
                                     "commit": False, "sample_rate": 8000}


def test_pcm16_format_sends_its_sample_rate():
    codec = ready(audio_format=AudioFormat("pcm16", 16000))
    codec.send_audio(b"\x01\x00" * 160)
    codec.finalize()
    chunk, commit = [orjson.loads(m) for m in codec.data_to_send()]
    assert chunk["sample_rate"] == commit["sample_rate"] == 16000
    assert commit == {"message_type": "input_audio_chunk", "audio_base_64": "", "commit": True, "sample_rate": 16000}


def test_a_format_elevenlabs_cannot_take_is_refused():
    with pytest.raises(ValueError):
        ElevenLabsCodec(AudioFormat("pcm16", 11025))


def test_empty_audio_sends_nothing_and_keepalive_is_an_empty_uncommitted_chunk():
    codec = ready()
    codec.send_audio(b"")
    assert codec.data_to_send() == []
    codec.keepalive()
    assert [orjson.loads(m) for m in codec.data_to_send()] == [
        {"message_type": "input_audio_chunk", "audio_base_64": "", "commit": False, "sample_rate": 8000}]


# --- codec: the committed pair -----------------------------------------------------------

PAIR_TABLE = [
    pytest.param(True, [committed("Hello there."), twin("Hello there.", ("Hello", 0.5, 0.8), ("there.", 0.9, 1.25))],
                 [[], [FinalTranscript("Hello there.", 500, 1250)]], id="timestamps: the twin is the final"),
    pytest.param(False, [committed("Hello there."), twin("Hello there.", ("Hello", 0.5, 0.8))],
                 [[FinalTranscript("Hello there.", 0, 2000)], []], id="no timestamps: committed is the final"),
    pytest.param(True, [committed("One."), committed("Two."), twin("Two.", ("Two.", 1.5, 1.9))],
                 [[], [FinalTranscript("One.", 0, 2000)], [FinalTranscript("Two.", 1500, 1900)]],
                 id="a committed without its twin is delivered when the next arrives"),
    pytest.param(True, [committed(""), twin("")], [[], []], id="a commit over silence gives nothing"),
    pytest.param(True, [twin("Only twin.", ("Only", 0.1, 0.3), ("twin.", 0.3, 0.6))],
                 [[FinalTranscript("Only twin.", 100, 600)]], id="a twin alone is still one final"),
]


@pytest.mark.parametrize(("timestamps", "messages", "expected"), PAIR_TABLE)
def test_committed_pair_is_delivered_once(timestamps, messages, expected):
    codec = ready(include_timestamps=timestamps)
    codec.send_audio(b"\xff" * 16000)  # 2000 ms
    assert [codec.receive(m) for m in messages] == expected


def test_partial_spans_from_the_last_committed_end_to_the_audio_sent():
    codec = ready()
    codec.send_audio(b"\xff" * 8000)
    assert codec.receive(committed("a")) == []
    assert codec.receive(twin("a", ("a", 0.1, 0.6))) == [FinalTranscript("a", 100, 600)]
    codec.send_audio(b"\xff" * 4000)
    assert codec.receive(j({"message_type": "partial_transcript", "text": "b"})) == [
        PartialTranscript("b", 600, 1500)]


def test_close_after_committed_without_twin_still_delivers_the_text():
    codec = ready()
    codec.send_audio(b"\xff" * 800)
    codec.finalize()
    assert codec.receive(committed("Bye.")) == []
    assert codec.connection_closed(1000, "") == [FinalTranscript("Bye.", 0, 100), Finalized(),
                                                  ProviderClosed(1000, "")]


# --- codec: the end sequence ---------------------------------------------------------------


def test_finalize_with_no_audio_is_finalized_at_once_and_sends_nothing():
    codec = ready()
    assert codec.finalize() == [Finalized()]
    assert codec.data_to_send() == []
    assert codec.finalize() is None  # once


def test_finalize_commits_and_an_empty_commit_reply_finalizes():
    codec = ready()
    codec.send_audio(b"\xff" * 800)
    codec.data_to_send()
    assert codec.finalize() is None
    assert [orjson.loads(m) for m in codec.data_to_send()] == [
        {"message_type": "input_audio_chunk", "audio_base_64": "", "commit": True, "sample_rate": 8000}]
    assert codec.receive(committed("")) == [Finalized()]


def test_a_server_commit_does_not_excuse_the_final_commit():
    """The VAD's committed message can arrive after later audio went out."""
    codec = ready()
    codec.send_audio(b"\xff" * 8000)
    codec.data_to_send()
    codec.receive(committed("a"))
    codec.receive(twin("a", ("a", 0.0, 1.0)))
    assert codec.finalize() is None
    assert [orjson.loads(m)["commit"] for m in codec.data_to_send()] == [True]


def test_audio_after_finalize_is_a_bug():
    codec = ready()
    codec.finalize()
    with pytest.raises(RuntimeError):
        codec.send_audio(b"\xff")


# --- codec: errors -----------------------------------------------------------------------

ERROR_TABLE = [
    ("auth_error", ProviderAuthError), ("unaccepted_terms", ProviderAuthError),
    ("unaccepted_terms_error", ProviderAuthError), ("quota_exceeded", ProviderQuotaError),
    ("quota_exceeded_error", ProviderQuotaError), ("rate_limited", ProviderOverloadedError),
    ("queue_overflow", ProviderOverloadedError), ("resource_exhausted", ProviderOverloadedError),
    ("commit_throttled", ProviderOverloadedError), ("input_error", ProviderConfigError),
    ("invalid_request", ProviderConfigError), ("chunk_size_exceeded", ProviderConfigError),
    ("transcriber_error", ProviderConnectionError), ("session_time_limit_exceeded", ProviderConnectionError),
    ("insufficient_audio_activity", ProviderConnectionError), ("error", ProviderConnectionError),
    ("some_future_error", ProviderConnectionError),
]


@pytest.mark.parametrize(("message_type", "error_type"), ERROR_TABLE)
def test_error_message_types_map_to_typed_errors(message_type, error_type):
    (event,) = ready().receive(j({"message_type": message_type, "error": "what happened"}))
    assert isinstance(event, ProviderFailed)
    assert type(event.error) is error_type
    assert event.error.vendor_type == message_type
    assert event.error.detail == f"{message_type}: what happened"


def test_every_sdk_error_type_is_mapped():
    assert {t for t, _ in ERROR_TABLE} - {"some_future_error"} == set(ERROR_TYPES)


@pytest.mark.parametrize("body", [
    {"message_type": "error", "error": "auth_error", "message": "Invalid API key"},
    {"message_type": "auth_error", "message": "Invalid API key"},
    {"message_type": "auth_error", "details": "Invalid API key"},
])
def test_error_text_and_type_are_read_from_every_documented_shape(body):
    (event,) = ready().receive(j(body))
    assert isinstance(event.error, ProviderAuthError)
    assert event.error.detail == "auth_error: Invalid API key"


def test_warnings_and_feature_events_are_ignored():
    codec = ready()
    for body in ({"message_type": "warning", "warning": "slow down"},
                 {"message_type": "committed_transcript_entities", "text": "x", "entities": []},
                 {"message_type": "speakers_merged", "from_speaker_id": "a", "to_speaker_id": "b"}):
        assert codec.receive(j(body)) == []


# --- client: URL, headers, options ---------------------------------------------------------


def test_default_url_headers_and_spec():
    provider = create({"ELEVENLABS_API_KEY": "k-123"})
    assert provider.url == ("wss://api.elevenlabs.io/v1/speech-to-text/realtime?model_id=scribe_v2_realtime"
                            "&audio_format=ulaw_8000&commit_strategy=vad&include_timestamps=true")
    assert provider.headers() == [("xi-api-key", "k-123")]
    assert (provider.name, provider.audio_format, provider.chunk_ms, provider.keepalive_interval) == (
        "elevenlabs", MULAW_8K, None, None)
    assert SPEC.key_env == "ELEVENLABS_API_KEY" and SPEC.audio_format == MULAW_8K and SPEC.factory is create
    assert "k-123" not in repr(provider) and "k-123" not in provider.url


def test_options_reach_the_query_string():
    provider = create({
        "ELEVENLABS_API_KEY": "k", "ELEVENLABS_BASE_URL": "ws://127.0.0.1:9/", "ELEVENLABS_LANGUAGE": "FR",
        "ELEVENLABS_VAD_SILENCE_THRESHOLD_SECS": "0.8", "ELEVENLABS_VAD_THRESHOLD": "0.5",
        "ELEVENLABS_MIN_SPEECH_DURATION_MS": "200", "ELEVENLABS_MIN_SILENCE_DURATION_MS": "150",
        "ELEVENLABS_INCLUDE_TIMESTAMPS": "false", "ELEVENLABS_KEYTERMS": "Acme, Twilio ,",
        "ELEVENLABS_FORMAT": "pcm16:16000", "ELEVENLABS_MODEL": "scribe_v3_live",
    })
    assert provider.url == (
        "ws://127.0.0.1:9/v1/speech-to-text/realtime?model_id=scribe_v3_live&audio_format=pcm_16000"
        "&commit_strategy=vad&include_timestamps=false&language_code=fr&vad_silence_threshold_secs=0.8"
        "&vad_threshold=0.5&min_speech_duration_ms=200&min_silence_duration_ms=150&keyterms=Acme&keyterms=Twilio")
    assert provider.audio_format == AudioFormat("pcm16", 16000)
    assert provider.codec().include_timestamps is False


@pytest.mark.parametrize(("env", "fix"), [
    ({"ELEVENLABS_API_KEY": ""}, "ELEVENLABS_API_KEY is not set"),
    ({"ELEVENLABS_API_KEY": "a b"}, "ELEVENLABS_API_KEY contains spaces"),
    ({"ELEVENLABS_BASE_URL": "ftp://x"}, "ELEVENLABS_BASE_URL must look like wss://host"),
    ({"ELEVENLABS_BASE_URL": "wss://host?x=1"}, "ELEVENLABS_BASE_URL must look like"),
    ({"ELEVENLABS_COMMIT_STRATEGY": "turn"}, "ELEVENLABS_COMMIT_STRATEGY must be one of vad, manual"),
    ({"ELEVENLABS_VAD_SILENCE_THRESHOLD_SECS": "5"}, "from 0.3 to 3"),
    ({"ELEVENLABS_VAD_THRESHOLD": "nan"}, "ELEVENLABS_VAD_THRESHOLD must be a number from 0.1 to 0.9"),
    ({"ELEVENLABS_MIN_SPEECH_DURATION_MS": "20"}, "from 50 to 2000"),
    ({"ELEVENLABS_COMMIT_STRATEGY": "manual", "ELEVENLABS_VAD_THRESHOLD": "0.5"}, "only with"),
    ({"ELEVENLABS_INCLUDE_TIMESTAMPS": "maybe"}, "true or false"),
    ({"ELEVENLABS_KEYTERMS": ",".join(["t"] * 51)}, "at most 50"),
    ({"ELEVENLABS_KEYTERMS": "a-very-long-keyterm-indeed"}, "at most 20 characters"),
    ({"ELEVENLABS_LANGUAGE": "english"}, "ISO 639"),
    ({"ELEVENLABS_MODEL": "bad model"}, "ELEVENLABS_MODEL must be a model name"),
    ({"ELEVENLABS_FORMAT": "pcm16:11025"}, "ELEVENLABS_FORMAT must be 'mulaw' or 'pcm16:{8000|16000"),
])
def test_bad_settings_are_one_line_fixes_without_the_key(env, fix):
    secret = "sk_secret_value_42"
    full = {"ELEVENLABS_API_KEY": secret, **env}
    assert_one_line_fix(create, full, secret, fix)


# --- whole calls through the gateway into the fake ----------------------------------------


run_call = vendor_call(create, key_variable="ELEVENLABS_API_KEY", base_url_variable="ELEVENLABS_BASE_URL", default_key=TEST_KEY)


async def test_call_delivers_every_transcript_once_in_order_and_every_byte():
    fake = FakeElevenLabs()
    audio = tone(3500)
    sink = await run_call(fake, audio)
    (conn,) = fake.connections
    assert conn.path == PATH and conn.headers["xi-api-key"] == TEST_KEY
    assert conn.query["audio_format"] == ["ulaw_8000"] and conn.query["commit_strategy"] == ["vad"]
    assert bytes(conn.audio) == audio
    # three VAD commits, then the one answering the commit chunk sent after Twilio's stop
    assert fake.finals == ["words 0 to 1000", "words 1000 to 2000", "words 2000 to 3000", "words 3000 to 3500"]
    assert transcripts(sink, "committed") == [("words 0 to 1000", 0, 1000), ("words 1000 to 2000", 1000, 2000),
                                              ("words 2000 to 3000", 2000, 3000), ("words 3000 to 3500", 3000, 3500)]
    assert [t for t, _, _ in transcripts(sink, "partial")] == conn.partials
    assert orjson.loads(conn.received[-1])["commit"] is True
    ended = sink.events[-1]
    assert (ended["type"], ended["reason"], ended["forwarded_ms"], ended["dropped_ms"]) == ("call_ended", "stop",
                                                                                            3500, 0)
    assert "final transcript" not in ended.get("detail", "")
    assert not [e for e in sink.events if e["type"] == "provider_error"]
    assert all(TEST_KEY not in m for m in conn.received if isinstance(m, str))


async def test_call_ending_on_a_commit_boundary_gets_an_empty_commit_and_ends_cleanly():
    fake = FakeElevenLabs(vad_commit_every_ms=1000)
    sink = await run_call(fake, tone(2000))
    assert [t for t, _, _ in transcripts(sink, "committed")] == ["words 0 to 1000", "words 1000 to 2000"]
    assert fake.connections[0].sent[-2:] == [
        {"message_type": "committed_transcript", "text": ""},
        {"message_type": "committed_transcript_with_timestamps", "text": "", "language_code": "en", "words": []}]
    assert "final transcript" not in sink.events[-1].get("detail", "")


async def test_manual_commit_strategy_commits_once_at_the_end():
    fake = FakeElevenLabs()
    sink = await run_call(fake, tone(1500), env={"ELEVENLABS_COMMIT_STRATEGY": "manual",
                                                  "ELEVENLABS_INCLUDE_TIMESTAMPS": "false"})
    assert transcripts(sink, "committed") == [("words 0 to 1500", 0, 1500)]


@pytest.mark.parametrize("auth_failure", ["message", "http"])
async def test_wrong_key_is_a_fatal_provider_error_and_the_call_still_ends(auth_failure):
    fake = FakeElevenLabs(auth_failure=auth_failure)
    wrong = "sk_wrong_key_that_must_not_leak"
    sink = await run_call(fake, tone(1000), key=wrong)
    errors = provider_errors(sink)
    assert len(errors) == 1 and errors[0]["fatal"] is True
    assert ("auth_error" if auth_failure == "message" else "401") in errors[0]["detail"]
    assert sink.events[-1]["type"] == "call_ended" and sink.events[-1]["reason"] == "stop"
    assert wrong not in orjson.dumps(sink.events).decode()


FAULTS = [
    pytest.param(Fault(Close(1011, "internal"), after_ms=1200, connection=0), False, "1011", id="close 1011"),
    pytest.param(Fault(Drop(), after_ms=1200, connection=0), False, "1006", id="TCP drop"),
    pytest.param(Fault(Send(j({"message_type": "rate_limited", "error": "slow down"})), after_ms=1200,
                       connection=0), False, "rate_limited", id="rate_limited message"),
    pytest.param(Fault(Send(j({"message_type": "quota_exceeded", "error": "no credits"})), after_ms=1200,
                       connection=0), True, "quota_exceeded", id="quota_exceeded message"),
]


@pytest.mark.parametrize(("fault", "fatal", "detail"), FAULTS)
async def test_a_provider_fault_is_one_typed_provider_error_and_the_call_ends_cleanly(fault, fatal, detail):
    fake = FakeElevenLabs(faults=[fault])
    sink = await run_call(fake, tone(3000))
    errors = provider_errors(sink)
    assert errors and errors[0]["fatal"] is fatal and detail in errors[0]["detail"]
    ended = sink.events[-1]
    assert ended["type"] == "call_ended" and ended["reason"] == "stop"
    spans = [(start, end) for _, start, end in transcripts(sink, "committed")]
    assert spans[0] == (0, 1000)
    if fatal or not any(e["type"] == "provider_reconnected" for e in sink.events):
        # nothing more from this provider; the rest of the audio is counted as lost
        assert len(fake.connections) == 1 and ended["dropped_ms"] > 0
    else:  # a new session took the audio since the last committed transcript: nothing lost
        assert len(errors) == 1 and len(fake.connections) == 2
        assert spans[-1][1] == 3000 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


async def test_no_answer_to_the_final_commit_is_bounded_by_the_drain_timeout():
    fake = FakeElevenLabs(faults=[Fault(Stall(), at_end=True)])
    sink = await run_call(fake, tone(1500), drain_timeout=0.5)
    assert [t for t, _, _ in transcripts(sink, "committed")] == ["words 0 to 1000"]
    assert "final transcript not received within 0.5 s" in sink.events[-1]["detail"]


async def test_fake_rejects_a_bad_query_with_the_vendors_error():
    fake = FakeElevenLabs()
    sink = await run_call(fake, tone(500), env={"ELEVENLABS_MODEL": "scribe_v9"})
    errors = provider_errors(sink)
    assert len(errors) == 1 and errors[0]["fatal"] is True and "invalid_request" in errors[0]["detail"]
