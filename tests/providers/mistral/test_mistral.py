"""Mistral Voxtral realtime: the codec's tables, the client's URL and options, and whole
calls through a real gateway into the loopback fake (tests/fakes/mistral_server.py)."""

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
from providers.mistral import SPEC, MistralCodec, create
from providers.mistral.protocol import MAX_APPEND_BYTES
from tests.fakes.mistral_server import PATH, TEST_KEY, FakeMistral
from tests.fakes.script import Fault, Send, Stall
from tests.helpers import tone
from tests.vendor_calls import assert_one_line_fix, j, provider_errors, transcripts, vendor_call

CREATED = j({"type": "session.created", "session": {"request_id": "ws-1", "audio_format": None}})
UPDATED = j({"type": "session.updated", "session": {"audio_format": {"encoding": "pcm_mulaw", "sample_rate": 8000}}})


def delta(text: str) -> str:
    return j({"type": "transcription.text.delta", "text": text})


def done(text: str, *segments: tuple[float, float]) -> str:
    return j({"type": "transcription.done", "text": text,
              "segments": [{"text": "s", "start": s, "end": e} for s, e in segments]})


def wire(codec: MistralCodec) -> list[dict]:
    return [orjson.loads(m) for m in codec.data_to_send()]


def audio_of(messages: list[dict]) -> bytes:
    return b"".join(base64.b64decode(m["audio"]) for m in messages if m["type"] == "input_audio.append")


def ready(**kwargs) -> MistralCodec:
    codec = MistralCodec(**kwargs)
    codec.receive(CREATED)
    codec.receive(UPDATED)
    codec.data_to_send()
    return codec


# --- codec: configuring, then audio ---------------------------------------------------


def test_session_update_answers_session_created_and_audio_waits_for_session_updated():
    codec = MistralCodec(session={"target_streaming_delay_ms": 240})
    codec.send_audio(b"\x01" * 800)
    assert codec.data_to_send() == []
    assert codec.receive(CREATED) == [SessionStarted("ws-1")]
    assert wire(codec) == [{"type": "session.update", "session": {
        "audio_format": {"encoding": "pcm_mulaw", "sample_rate": 8000}, "target_streaming_delay_ms": 240}}]
    codec.send_audio(b"\x02" * 800)
    assert codec.data_to_send() == []
    assert codec.receive(UPDATED) == []
    assert audio_of(wire(codec)) == b"\x01" * 800 + b"\x02" * 800
    codec.send_audio(b"\x03" * 160)
    assert wire(codec) == [{"type": "input_audio.append", "audio": base64.b64encode(b"\x03" * 160).decode()}]


def test_a_session_that_is_never_configured_stalls_the_audio_after_five_seconds():
    codec = MistralCodec()
    codec.send_audio(b"\xff" * 40_000)  # 5 s of mu-law
    with pytest.raises(ProviderStalledError):
        codec.send_audio(b"\xff")


def test_finalize_before_configuration_ends_after_the_held_audio():
    codec = MistralCodec()
    codec.send_audio(b"\x01" * 800)
    assert codec.finalize() is None
    codec.receive(CREATED)
    codec.receive(UPDATED)
    assert [m["type"] for m in wire(codec)] == ["session.update", "input_audio.append", "input_audio.flush",
                                                "input_audio.end"]


def test_finalize_without_audio_is_finalized_at_once_and_sends_nothing():
    codec = MistralCodec()
    assert codec.finalize() == [Finalized()]
    assert codec.data_to_send() == []


def test_large_batches_are_split_at_the_append_limit():
    codec = ready()
    audio = bytes(range(256)) * (MAX_APPEND_BYTES // 256 + 10)
    codec.send_audio(audio)
    messages = wire(codec)
    assert [len(base64.b64decode(m["audio"])) for m in messages] == [MAX_APPEND_BYTES, 2560]
    assert audio_of(messages) == audio


def test_pcm16_sessions_ask_for_pcm_s16le_at_their_rate():
    codec = MistralCodec(AudioFormat("pcm16", 16000))
    codec.receive(CREATED)
    assert wire(codec)[0]["session"]["audio_format"] == {"encoding": "pcm_s16le", "sample_rate": 16000}
    with pytest.raises(ValueError):
        MistralCodec(AudioFormat("pcm16", 4000))


# --- codec: transcripts ------------------------------------------------------------------


def test_deltas_accumulate_into_the_full_partial_and_done_is_the_final():
    codec = ready()
    codec.send_audio(b"\xff" * 8000)  # 1000 ms
    assert codec.receive(delta(" Hello")) == [PartialTranscript("Hello", 0, 1000)]
    assert codec.receive(delta(" there")) == [PartialTranscript("Hello there", 0, 1000)]
    assert codec.receive(delta(" ")) == [PartialTranscript("Hello there", 0, 1000)]
    assert codec.receive(done("Hello there.", (0.3, 0.6), (0.6, 0.95))) == [FinalTranscript("Hello there.", 300, 950)]


def test_a_whitespace_only_first_delta_is_no_partial():
    codec = ready()
    assert codec.receive(delta(" ")) == []


def test_a_later_done_is_the_deltas_since_the_previous_one():
    codec = ready()
    codec.send_audio(b"\xff" * 8000)
    codec.receive(delta(" One."))
    assert codec.receive(done("One.", (0.0, 0.5))) == [FinalTranscript("One.", 0, 500)]
    codec.send_audio(b"\xff" * 8000)
    assert codec.receive(delta(" Two.")) == [PartialTranscript("Two.", 500, 2000)]
    assert codec.receive(done("One. Two.", (0.0, 0.5), (1.2, 1.6))) == [FinalTranscript("Two.", 500, 2000)]


def test_done_after_end_is_finalized_and_a_close_then_repeats_it():
    codec = ready()
    codec.send_audio(b"\xff" * 800)
    codec.data_to_send()
    assert codec.finalize() is None
    assert [m["type"] for m in wire(codec)] == ["input_audio.flush", "input_audio.end"]
    assert codec.receive(done("Bye.")) == [FinalTranscript("Bye.", 0, 100), Finalized()]
    assert codec.connection_closed(1000, "") == [Finalized(), ProviderClosed(1000, "")]


def test_a_normal_close_after_end_without_done_keeps_the_deltas():
    codec = ready()
    codec.send_audio(b"\xff" * 800)
    codec.finalize()
    codec.receive(delta(" Bye"))
    assert codec.connection_closed(1000, "") == [FinalTranscript("Bye", 0, 100), Finalized(),
                                                  ProviderClosed(1000, "")]


def test_other_events_are_ignored():
    codec = ready()
    for body in ({"type": "transcription.language", "audio_language": "en"},
                 {"type": "transcription.segment", "text": "x", "start": 0.1, "end": 0.2, "speaker_id": None},
                 {"type": "turn.start", "time_s": 1.84}, {"type": "turn.end", "time_s": 4.4, "end_reason": "timeout"}):
        assert codec.receive(j(body)) == []


# --- codec: errors ------------------------------------------------------------------------

ERROR_TABLE = [
    (401, ProviderAuthError), (403, ProviderAuthError), (402, ProviderQuotaError), (429, ProviderOverloadedError),
    (400, ProviderConfigError), (422, ProviderConfigError), (3804, ProviderStalledError),
    (3000, ProviderConnectionError), (None, ProviderConnectionError), ("3804", ProviderConnectionError),
]


@pytest.mark.parametrize(("code", "error_type"), ERROR_TABLE)
def test_error_codes_map_to_typed_errors(code, error_type):
    (event,) = ready().receive(j({"type": "error", "error": {"message": "what happened", "code": code}}))
    assert isinstance(event, ProviderFailed) and type(event.error) is error_type
    assert "what happened" in event.error.detail


def test_an_error_answering_our_session_update_is_a_config_error():
    codec = MistralCodec()
    codec.receive(CREATED)
    (event,) = codec.receive(j({"type": "error", "error": {"message": {"detail": "language not supported"},
                                                           "code": 1234}}))
    assert type(event.error) is ProviderConfigError
    assert event.error.detail == "error 1234: language not supported"


# --- client ------------------------------------------------------------------------------


def test_default_url_headers_and_spec():
    provider = create({"MISTRAL_API_KEY": "k-123"})
    assert provider.url == ("wss://api.mistral.ai/v1/audio/transcriptions/realtime"
                            "?model=voxtral-mini-transcribe-realtime-2602")
    assert provider.headers() == [("Authorization", "Bearer k-123")]
    assert (provider.name, provider.audio_format, provider.chunk_ms, provider.keepalive_interval) == (
        "mistral", MULAW_8K, None, None)
    assert SPEC.key_env == "MISTRAL_API_KEY" and SPEC.factory is create
    assert "k-123" not in repr(provider)


def test_options_reach_the_url_and_the_session_update():
    provider = create({"MISTRAL_API_KEY": "k", "MISTRAL_BASE_URL": "https://api.eu.mistral.ai",
                       "MISTRAL_MODEL": "voxtral-mini-transcribe-realtime-3", "MISTRAL_STREAMING_DELAY_MS": "480",
                       "MISTRAL_LANGUAGE": "fr", "MISTRAL_KEYTERMS": "Acme, Twilio", "MISTRAL_FORMAT": "pcm16:16000"})
    assert provider.url == ("wss://api.eu.mistral.ai/v1/audio/transcriptions/realtime"
                            "?model=voxtral-mini-transcribe-realtime-3")
    codec = provider.codec()
    codec.receive(CREATED)
    assert wire(codec)[0]["session"] == {"audio_format": {"encoding": "pcm_s16le", "sample_rate": 16000},
                                         "target_streaming_delay_ms": 480, "language": "fr",
                                         "context_bias": ["Acme", "Twilio"]}


@pytest.mark.parametrize(("env", "fix"), [
    ({"MISTRAL_API_KEY": ""}, "MISTRAL_API_KEY is not set"),
    ({"MISTRAL_BASE_URL": "api.mistral.ai"}, "MISTRAL_BASE_URL must look like wss://host"),
    ({"MISTRAL_STREAMING_DELAY_MS": "20"}, "from 80 to 2400"),
    ({"MISTRAL_LANGUAGE": "fr"}, "MISTRAL_LANGUAGE needs a Voxtral 3 model"),
    ({"MISTRAL_KEYTERMS": "Acme"}, "MISTRAL_KEYTERMS needs a Voxtral 3 model"),
    ({"MISTRAL_FORMAT": "alaw"}, "MISTRAL_FORMAT must be 'mulaw' or 'pcm16:"),
    ({"MISTRAL_MODEL": "voxtral mini"}, "MISTRAL_MODEL must be a model name"),
])
def test_bad_settings_are_one_line_fixes_without_the_key(env, fix):
    secret = "mistral_secret_value_42"
    assert_one_line_fix(create, {"MISTRAL_API_KEY": secret, **env}, secret, fix)


# --- whole calls through the gateway into the fake ----------------------------------------


run_call = vendor_call(create, key_variable="MISTRAL_API_KEY", base_url_variable="MISTRAL_BASE_URL", default_key=TEST_KEY)


@pytest.mark.parametrize("close_after_done", [False, True])
async def test_call_delivers_partials_and_the_final_once_and_every_byte(close_after_done):
    fake = FakeMistral(close_after_done=close_after_done)
    audio = tone(2100)
    sink = await run_call(fake, audio)
    (conn,) = fake.connections
    assert conn.path == PATH and conn.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert conn.query == {"model": ["voxtral-mini-transcribe-realtime-2602"]}
    kinds = [orjson.loads(m)["type"] for m in conn.received]
    assert kinds[0] == "session.update" and kinds[-2:] == ["input_audio.flush", "input_audio.end"]
    assert set(kinds[1:-2]) == {"input_audio.append"}
    assert bytes(conn.audio) == audio
    assert [t for t, _, _ in transcripts(sink, "partial")] == conn.partials
    # the last delta (2000-2100 ms) and the done answer the flush + end sent after Twilio's stop
    assert conn.finals == ["words 0 to 400 words 400 to 800 words 800 to 1200 words 1200 to 1600 "
                           "words 1600 to 2000 words 2000 to 2100"]
    assert transcripts(sink, "committed") == [(conn.finals[0], 0, 2100)]
    ended = sink.events[-1]
    assert (ended["type"], ended["reason"], ended["forwarded_ms"], ended["dropped_ms"]) == ("call_ended", "stop",
                                                                                            2100, 0)
    assert "final transcript" not in ended.get("detail", "") and not provider_errors(sink)
    assert all(TEST_KEY not in m for m in conn.received)


async def test_wrong_key_is_refused_at_the_handshake_as_a_fatal_provider_error():
    wrong = "mistral_wrong_key_must_not_leak"
    sink = await run_call(FakeMistral(), tone(600), key=wrong)
    (error,) = provider_errors(sink)
    assert error["fatal"] is True and "401" in error["detail"]
    assert sink.events[-1]["type"] == "call_ended" and sink.events[-1]["reason"] == "stop"
    assert wrong not in orjson.dumps(sink.events).decode()


@pytest.mark.parametrize(("env", "detail"), [
    ({"MISTRAL_MODEL": "voxtral-mini-transcribe-realtime-9"}, "400"),
    ({"MISTRAL_MODEL": "voxtral-mini-transcribe-realtime-latest", "MISTRAL_LANGUAGE": "fr"}, "language"),
])
async def test_configuration_the_server_refuses_is_a_fatal_provider_error(env, detail):
    fake = FakeMistral()
    sink = await run_call(fake, tone(600), env=env)
    (error,) = provider_errors(sink)
    assert error["fatal"] is True and detail in error["detail"]
    assert sink.events[-1]["reason"] == "stop"


async def test_the_servers_timeout_error_is_retryable():
    error = j({"type": "error", "error": {"message": "Timeout waiting for response from streaming transcription",
                                          "code": 3804}})
    fake = FakeMistral(faults=[Fault(Send(error), after_ms=800, connection=0)])
    sink = await run_call(fake, tone(2000))
    first = provider_errors(sink)[0]
    assert first["fatal"] is False and "3804" in first["detail"]
    assert sink.events[-1]["type"] == "call_ended" and sink.events[-1]["reason"] == "stop"


async def test_no_answer_to_the_end_is_bounded_by_the_drain_timeout():
    fake = FakeMistral(faults=[Fault(Stall(), at_end=True)])
    sink = await run_call(fake, tone(1000), drain_timeout=0.5)
    assert transcripts(sink, "committed") == []
    assert "final transcript not received within 0.5 s" in sink.events[-1]["detail"]
