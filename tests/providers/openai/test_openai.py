"""OpenAI Realtime transcription: the codec's tables, the client's URL and options, and
whole calls through a real gateway into the loopback fake (tests/fakes/openai_server.py)."""

from __future__ import annotations

import base64

import orjson
import pytest

from providers.base import MULAW_8K, AudioFormat
from providers.errors import (
    ProviderAuthError,
    ProviderConfigError,
    ProviderConnectionError,
    ProviderOverloadedError,
    ProviderQuotaError,
    ProviderStalledError,
)
from providers.events import (
    Finalized,
    FinalTranscript,
    PartialTranscript,
    ProviderClosed,
    ProviderFailed,
    SessionStarted,
)
from providers.openai import SPEC, OpenAICodec, create
from tests.fakes.openai_server import PATH, TEST_KEY, FakeOpenAI
from tests.fakes.script import Fault, Send, Stall
from tests.helpers import tone
from tests.vendor_calls import assert_one_line_fix, j, provider_errors, transcripts, vendor_call

CALL_LIMIT = 30  # seconds: a bound on each test, never an assertion on speed
ITEM = "conversation.item.input_audio_transcription."


CREATED = j({"type": "session.created", "event_id": "e1", "session": {"type": "transcription", "id": "sess_1"}})
UPDATED = j({"type": "session.updated", "event_id": "e2", "session": {"type": "transcription"}})


def committed(item: str) -> str:
    return j({"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": None})


def started(item: str, ms: int) -> str:
    return j({"type": "input_audio_buffer.speech_started", "item_id": item, "audio_start_ms": ms})


def stopped(item: str, ms: int) -> str:
    return j({"type": "input_audio_buffer.speech_stopped", "item_id": item, "audio_end_ms": ms})


def delta(item: str, text: str) -> str:
    return j({"type": ITEM + "delta", "item_id": item, "content_index": 0, "delta": text})


def completed(item: str, text: str) -> str:
    return j({"type": ITEM + "completed", "item_id": item, "content_index": 0, "transcript": text})


def error(code: str | None, kind: str = "invalid_request_error", event_id: str | None = None) -> str:
    return j({"type": "error", "error": {"type": kind, "code": code, "message": "what happened", "param": None,
                                         "event_id": event_id}})


def wire(codec: OpenAICodec) -> list[dict]:
    return [orjson.loads(m) for m in codec.data_to_send()]


def ready(**kwargs) -> OpenAICodec:
    codec = OpenAICodec(**kwargs)
    codec.receive(CREATED)
    codec.receive(UPDATED)
    codec.data_to_send()
    return codec


def feed(codec: OpenAICodec, *messages: str) -> list:
    return [event for message in messages for event in codec.receive(message)]


# --- codec: configuring, then audio ---------------------------------------------------


def test_session_update_answers_session_created_and_audio_waits_for_session_updated():
    codec = OpenAICodec(audio_input={"transcription": {"model": "gpt-4o-transcribe"}, "turn_detection": None})
    codec.send_audio(b"\x01" * 800)
    assert codec.data_to_send() == []
    assert codec.receive(CREATED) == [SessionStarted("sess_1")]
    assert wire(codec) == [{"type": "session.update", "event_id": "earpiece_session_update", "session": {
        "type": "transcription", "audio": {"input": {"format": {"type": "audio/pcmu"},
                                                     "transcription": {"model": "gpt-4o-transcribe"},
                                                     "turn_detection": None}}}}]
    assert codec.receive(UPDATED) == []
    codec.send_audio(b"\x02" * 160)
    assert wire(codec) == [
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x01" * 800).decode()},
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x02" * 160).decode()}]


def test_pcm16_at_24k_is_the_only_other_format():
    codec = OpenAICodec(AudioFormat("pcm16", 24000))
    codec.receive(CREATED)
    assert wire(codec)[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    with pytest.raises(ValueError):
        OpenAICodec(AudioFormat("pcm16", 16000))


def test_a_session_that_is_never_configured_stalls_the_audio_after_five_seconds():
    codec = OpenAICodec()
    codec.send_audio(b"\xff" * 40_000)
    with pytest.raises(ProviderStalledError):
        codec.send_audio(b"\xff")


# --- codec: items ------------------------------------------------------------------------


def test_vad_item_partials_accumulate_and_the_final_carries_the_vads_times():
    codec = ready()
    codec.send_audio(b"\xff" * 16000)  # 2000 ms
    assert feed(codec, started("i1", 200), stopped("i1", 1500), committed("i1")) == []
    assert codec.receive(delta("i1", "Hello")) == [PartialTranscript("Hello", 200, 1500)]
    assert codec.receive(delta("i1", " there.")) == [PartialTranscript("Hello there.", 200, 1500)]
    assert codec.receive(completed("i1", "Hello there.")) == [FinalTranscript("Hello there.", 200, 1500)]


def test_finals_are_released_in_commit_order():
    codec = ready()
    codec.send_audio(b"\xff" * 24000)
    feed(codec, started("a", 0), stopped("a", 1000), committed("a"), started("b", 1000), stopped("b", 2000),
         committed("b"))
    assert codec.receive(completed("b", "Second.")) == []
    assert codec.receive(completed("a", "First.")) == [FinalTranscript("First.", 0, 1000),
                                                       FinalTranscript("Second.", 1000, 2000)]
    assert codec.receive(delta("a", "late")) == [] and codec.receive(completed("b", "again")) == []


def test_a_failed_item_releases_the_ones_behind_it():
    codec = ready()
    codec.send_audio(b"\xff" * 16000)
    feed(codec, committed("a"), committed("b"), completed("b", "Kept."))
    assert codec.receive(j({"type": ITEM + "failed", "item_id": "a", "content_index": 0,
                            "error": {"type": "server_error", "code": None, "message": "x"}})) == [
        FinalTranscript("Kept.", 0, 2000)]


def test_streaming_deltas_before_the_commit_span_the_audio_sent():
    codec = ready()
    codec.send_audio(b"\xff" * 4000)
    assert codec.receive(delta("i1", "Hi")) == [PartialTranscript("Hi", 0, 500)]


# --- codec: the end sequence ---------------------------------------------------------------


def test_finalize_commits_uncommitted_audio_and_waits_for_its_item():
    codec = ready()
    codec.send_audio(b"\xff" * 8000)
    codec.data_to_send()
    assert codec.finalize() is None
    assert wire(codec) == [{"type": "input_audio_buffer.commit", "event_id": "earpiece_final_commit"}]
    assert codec.receive(committed("i9")) == []
    assert codec.receive(completed("i9", "Bye.")) == [FinalTranscript("Bye.", 0, 1000), Finalized()]


def test_finalize_with_less_than_100_ms_past_the_vads_commit_waits_only_for_pending_items():
    codec = ready()
    codec.send_audio(b"\xff" * 8400)  # 1050 ms
    feed(codec, started("a", 0), stopped("a", 1000), committed("a"))
    codec.data_to_send()
    assert codec.finalize() is None
    assert codec.data_to_send() == []
    assert codec.receive(completed("a", "Done.")) == [FinalTranscript("Done.", 0, 1000), Finalized()]


def test_finalize_with_everything_committed_and_transcribed_is_at_once():
    codec = ready()
    codec.send_audio(b"\xff" * 8000)
    feed(codec, started("a", 0), stopped("a", 1000), committed("a"), completed("a", "x"))
    codec.data_to_send()
    assert codec.finalize() == [Finalized()]
    assert codec.data_to_send() == []


def test_commit_empty_is_tolerated_and_ends_the_commit():
    codec = ready()
    codec.send_audio(b"\xff" * 8000)
    codec.finalize()
    assert codec.receive(error("input_audio_buffer_commit_empty", event_id="earpiece_final_commit")) == [Finalized()]


def test_finalize_before_configuration_decides_after_the_held_audio():
    codec = OpenAICodec()
    codec.send_audio(b"\xff" * 1600)
    assert codec.finalize() is None
    codec.receive(CREATED)
    codec.receive(UPDATED)
    assert [m["type"] for m in wire(codec)] == ["session.update", "input_audio_buffer.append",
                                                "input_audio_buffer.commit"]


def test_finalize_without_audio_is_at_once():
    codec = OpenAICodec()
    assert codec.finalize() == [Finalized()]
    assert codec.data_to_send() == []


# --- codec: errors -------------------------------------------------------------------------

ERROR_TABLE = [
    ("invalid_api_key", "invalid_request_error", ProviderAuthError),
    (None, "authentication_error", ProviderAuthError),
    ("insufficient_quota", "invalid_request_error", ProviderQuotaError),
    ("rate_limit_exceeded", "invalid_request_error", ProviderOverloadedError),
    ("session_expired", "invalid_request_error", ProviderConnectionError),
]


@pytest.mark.parametrize(("code", "kind", "error_type"), ERROR_TABLE)
def test_session_ending_errors_map_to_typed_errors(code, kind, error_type):
    (event,) = ready().receive(error(code, kind))
    assert isinstance(event, ProviderFailed) and type(event.error) is error_type
    assert "what happened" in event.error.detail


@pytest.mark.parametrize("code", ["invalid_value", "unknown_parameter", None, "input_audio_buffer_commit_empty"])
def test_other_errors_leave_the_session_going(code):
    assert ready().receive(error(code)) == []
    assert ready().receive(error(code, kind="server_error")) == []


def test_an_error_answering_our_session_update_is_a_config_error():
    codec = OpenAICodec()
    codec.receive(CREATED)
    (event,) = codec.receive(error("invalid_value", event_id="earpiece_session_update"))
    assert type(event.error) is ProviderConfigError


def test_close_3000_carries_the_error_type_in_its_reason():
    codec = ready()
    events = codec.connection_closed(3000, "invalid_request_error.invalid_api_key")
    assert type(events[0].error) is ProviderAuthError and events[1] == ProviderClosed(
        3000, "invalid_request_error.invalid_api_key")
    codec = ready()
    codec.receive(error("invalid_api_key"))
    assert codec.connection_closed(3000, "invalid_request_error.invalid_api_key") == [
        ProviderClosed(3000, "invalid_request_error.invalid_api_key")]


# --- client ------------------------------------------------------------------------------


def test_default_url_headers_session_and_spec():
    provider = create({"OPENAI_API_KEY": "k-123"})
    assert provider.url == "wss://api.openai.com/v1/realtime?intent=transcription"
    assert provider.headers() == [("Authorization", "Bearer k-123")]
    assert provider.options.audio_input() == {"transcription": {"model": "gpt-4o-transcribe"},
                                              "turn_detection": {"type": "server_vad"}}
    assert (provider.name, provider.audio_format, provider.chunk_ms, provider.keepalive_interval) == (
        "openai", MULAW_8K, None, None)
    assert SPEC.key_env == "OPENAI_API_KEY" and SPEC.factory is create
    assert "k-123" not in repr(provider)


def test_options_reach_the_session_update():
    provider = create({"OPENAI_API_KEY": "k", "OPENAI_MODEL": "gpt-4o-mini-transcribe", "OPENAI_LANGUAGE": "de",
                       "OPENAI_PROMPT": "Acme, Twilio", "OPENAI_VAD_THRESHOLD": "0.6",
                       "OPENAI_VAD_PREFIX_PADDING_MS": "200", "OPENAI_VAD_SILENCE_MS": "700",
                       "OPENAI_NOISE_REDUCTION": "far_field", "OPENAI_FORMAT": "pcm16:24000"})
    assert provider.options.audio_input() == {
        "transcription": {"model": "gpt-4o-mini-transcribe", "language": "de", "prompt": "Acme, Twilio"},
        "turn_detection": {"type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 200,
                           "silence_duration_ms": 700},
        "noise_reduction": {"type": "far_field"}}
    assert provider.audio_format == AudioFormat("pcm16", 24000)
    semantic = create({"OPENAI_API_KEY": "k", "OPENAI_TURN_DETECTION": "semantic_vad",
                       "OPENAI_VAD_EAGERNESS": "high"})
    assert semantic.options.audio_input()["turn_detection"] == {"type": "semantic_vad", "eagerness": "high"}
    live = create({"OPENAI_API_KEY": "k", "OPENAI_MODEL": "gpt-live-transcribe"})
    assert live.options.audio_input()["turn_detection"] is None


@pytest.mark.parametrize(("env", "fix"), [
    ({"OPENAI_API_KEY": ""}, "OPENAI_API_KEY is not set"),
    ({"OPENAI_TURN_DETECTION": "vad"}, "OPENAI_TURN_DETECTION must be one of server_vad, semantic_vad, none"),
    ({"OPENAI_MODEL": "gpt-live-transcribe", "OPENAI_TURN_DETECTION": "server_vad"}, "takes no server VAD"),
    ({"OPENAI_TURN_DETECTION": "none", "OPENAI_VAD_SILENCE_MS": "500"}, "only with OPENAI_TURN_DETECTION=server_vad"),
    ({"OPENAI_VAD_EAGERNESS": "high"}, "only with OPENAI_TURN_DETECTION=semantic_vad"),
    ({"OPENAI_VAD_THRESHOLD": "2"}, "from 0 to 1"),
    ({"OPENAI_MODEL": "gpt-realtime-whisper", "OPENAI_PROMPT": "x"}, "takes no prompt"),
    ({"OPENAI_PROMPT": "a\x00b"}, "OPENAI_PROMPT must be plain text"),
    ({"OPENAI_FORMAT": "pcm16:16000"}, "OPENAI_FORMAT must be 'mulaw' or 'pcm16:{24000}'"),
    ({"OPENAI_NOISE_REDUCTION": "phone"}, "OPENAI_NOISE_REDUCTION must be one of"),
])
def test_bad_settings_are_one_line_fixes_without_the_key(env, fix):
    secret = "sk-openai-secret-value-42"
    assert_one_line_fix(create, {"OPENAI_API_KEY": secret, **env}, secret, fix)


# --- whole calls through the gateway into the fake ----------------------------------------


run_call = vendor_call(create, key_variable="OPENAI_API_KEY", base_url_variable="OPENAI_BASE_URL", default_key=TEST_KEY)


async def test_call_delivers_every_transcript_once_in_order_and_every_byte():
    fake = FakeOpenAI(vad_every_ms=1000)
    audio = tone(2500)
    sink = await run_call(fake, audio)
    (conn,) = fake.connections
    assert conn.path == PATH and conn.query == {"intent": ["transcription"]}
    assert conn.headers["authorization"] == f"Bearer {TEST_KEY}"
    received = [orjson.loads(m) for m in conn.received]
    assert received[0]["type"] == "session.update"
    assert received[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert received[-1] == {"type": "input_audio_buffer.commit", "event_id": "earpiece_final_commit"}
    assert bytes(conn.audio) == audio
    # two server-VAD items, then the one our commit after Twilio's stop produced
    assert conn.finals == ["words 0 to 1000", "words 1000 to 2000", "words 2000 to 2500"]
    assert transcripts(sink, "committed") == [("words 0 to 1000", 0, 1000), ("words 1000 to 2000", 1000, 2000),
                                              ("words 2000 to 2500", 2000, 2500)]
    assert [t for t, _, _ in transcripts(sink, "partial")] == conn.partials
    ended = sink.events[-1]
    assert (ended["type"], ended["reason"], ended["forwarded_ms"], ended["dropped_ms"]) == ("call_ended", "stop",
                                                                                            2500, 0)
    assert "final transcript" not in ended.get("detail", "") and not provider_errors(sink)
    assert all(TEST_KEY not in m for m in conn.received)


async def test_call_ending_on_a_vad_commit_ends_cleanly_with_or_without_a_commit():
    fake = FakeOpenAI(vad_every_ms=1000)
    sink = await run_call(fake, tone(2000))
    assert [t for t, _, _ in transcripts(sink, "committed")] == ["words 0 to 1000", "words 1000 to 2000"]
    assert "final transcript" not in sink.events[-1].get("detail", "") and not provider_errors(sink)


async def test_without_turn_detection_the_commit_at_hang_up_is_the_only_final():
    fake = FakeOpenAI()
    sink = await run_call(fake, tone(1500), env={"OPENAI_TURN_DETECTION": "none"})
    assert transcripts(sink, "committed") == [("words 0 to 1500", 0, 1500)]


@pytest.mark.parametrize(("auth_failure", "detail"), [("message", "invalid_api_key"), ("http", "401")])
async def test_wrong_key_is_a_fatal_provider_error_and_the_call_still_ends(auth_failure, detail):
    wrong = "sk-wrong-openai-key-must-not-leak"
    sink = await run_call(FakeOpenAI(auth_failure=auth_failure), tone(600), key=wrong)
    (failure,) = provider_errors(sink)
    assert failure["fatal"] is True and detail in failure["detail"]
    assert sink.events[-1]["type"] == "call_ended" and sink.events[-1]["reason"] == "stop"
    assert wrong not in orjson.dumps(sink.events).decode()


async def test_a_model_the_server_refuses_is_a_fatal_config_error():
    sink = await run_call(FakeOpenAI(), tone(600), env={"OPENAI_MODEL": "gpt-9-transcribe"})
    (failure,) = provider_errors(sink)
    assert failure["fatal"] is True and "invalid_value" in failure["detail"]
    assert sink.events[-1]["reason"] == "stop"


async def test_an_expired_session_is_a_retryable_provider_error():
    expired = error("session_expired")
    fake = FakeOpenAI(faults=[Fault(Send(expired), after_ms=1200, connection=0)])
    sink = await run_call(fake, tone(2000))
    first = provider_errors(sink)[0]
    assert first["fatal"] is False and "session_expired" in first["detail"]
    assert transcripts(sink, "committed")[0] == ("words 0 to 1000", 0, 1000)
    assert sink.events[-1]["type"] == "call_ended" and sink.events[-1]["reason"] == "stop"


async def test_no_answer_to_the_commit_is_bounded_by_the_drain_timeout():
    fake = FakeOpenAI(faults=[Fault(Stall(), at_end=True)])
    sink = await run_call(fake, tone(1500), drain_timeout=0.5)
    assert [t for t, _, _ in transcripts(sink, "committed")] == ["words 0 to 1000"]
    assert "final transcript not received within 0.5 s" in sink.events[-1]["detail"]
