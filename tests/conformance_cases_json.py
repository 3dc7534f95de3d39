"""Conformance cases for the JSON-framed vendors: ElevenLabs, Mistral, OpenAI.

Every message below is shaped exactly as the vendor sends it (reference:
stt-protocols.md sections 1, 2 and 5)."""

from __future__ import annotations

import orjson

from providers.base import MULAW_8K
from providers.elevenlabs import ElevenLabsCodec
from providers.mistral import MistralCodec
from providers.openai import OpenAICodec
from tests.conformance import CodecCase


def j(value: object) -> str:
    return orjson.dumps(value).decode()


def _words(*spec: tuple[str, float, float]) -> list[dict]:
    words: list[dict] = []
    for i, (text, start, end) in enumerate(spec):
        if i:
            words.append({"text": " ", "start": start, "end": start, "type": "spacing"})
        words.append({"text": text, "start": start, "end": end, "type": "word", "speaker_id": None,
                      "logprob": -0.02, "characters": list(text)})
    return words


# --- ElevenLabs ------------------------------------------------------------------------

_EL_STARTED = j({"message_type": "session_started", "session_id": "0b1e",
                 "config": {"sample_rate": 8000, "audio_format": "ulaw_8000", "language_code": "en",
                            "commit_strategy": "vad", "vad_silence_threshold_secs": 1.5, "vad_threshold": 0.4,
                            "min_speech_duration_ms": 100, "min_silence_duration_ms": 100,
                            "model_id": "scribe_v2_realtime", "enable_logging": True, "include_timestamps": True,
                            "include_language_detection": False, "keyterms": [], "no_verbatim": False}})
_EL_MALFORMED = [
    j({"message_type": 7}),
    j({"message_type": None}),
    j({"type": "partial_transcript", "text": "hello"}),
    j({"message_type": "partial_transcript"}),
    j({"message_type": "partial_transcript", "text": 5}),
    j({"message_type": "committed_transcript", "text": None}),
    j({"message_type": "committed_transcript_with_timestamps", "words": []}),
    j({"message_type": "committed_transcript_with_timestamps", "text": "x", "words": {"text": "x"}}),
    j({"message_type": "committed_transcript_with_timestamps", "text": "x", "words": [1]}),
    j({"message_type": "committed_transcript_with_timestamps", "text": "x", "words": [{"text": "x", "start": "0.1"}]}),
    j({"message_type": "committed_transcript_with_timestamps", "text": "x", "words": [{"text": "x", "start": -1}]}),
    j({"message_type": "committed_transcript_with_timestamps", "text": "x", "words": [{"start": 1e300}]}),
    j({"message_type": "committed_transcript_with_timestamps", "text": "x", "words": [{"type": 3}]}),
    j({"message_type": "session_started", "session_id": 3}),
]

ELEVENLABS = CodecCase(
    name="elevenlabs",
    make_codec=lambda: ElevenLabsCodec(MULAW_8K, include_timestamps=True),
    handshake=[_EL_STARTED],
    partial_message=j({"message_type": "partial_transcript", "text": "hello how are"}),
    final_message=j({"message_type": "committed_transcript_with_timestamps", "text": "Hello, how are you?",
                     "language_code": "en",
                     "words": _words(("Hello,", 0.0, 0.32), ("how", 0.35, 0.5), ("are", 0.52, 0.7),
                                     ("you?", 0.72, 0.98))}),
    finalize_reply=[
        j({"message_type": "committed_transcript", "text": "Goodbye."}),
        j({"message_type": "committed_transcript_with_timestamps", "text": "Goodbye.", "language_code": "en",
           "words": _words(("Goodbye.", 1.1, 1.6))}),
    ],
    fatal_error_message=j({"message_type": "auth_error", "error": "Invalid API key"}),
    retryable_error_message=j({"message_type": "rate_limited", "error": "Too many concurrent sessions"}),
    malformed=_EL_MALFORMED,
)

ELEVENLABS_NO_TIMESTAMPS = CodecCase(
    name="elevenlabs-no-timestamps",
    make_codec=lambda: ElevenLabsCodec(MULAW_8K, include_timestamps=False),
    handshake=[_EL_STARTED],
    partial_message=j({"message_type": "partial_transcript", "text": "hello how are"}),
    final_message=j({"message_type": "committed_transcript", "text": "Hello, how are you?"}),
    finalize_reply=[j({"message_type": "committed_transcript", "text": "Goodbye."})],
    fatal_error_message=j({"message_type": "quota_exceeded", "error": "Quota exceeded"}),
    retryable_error_message=j({"message_type": "transcriber_error", "error": "internal error"}),
    malformed=_EL_MALFORMED[:6],
)


# --- Mistral ---------------------------------------------------------------------------

_MI_SESSION = {"request_id": "ws-5f2c", "model": "voxtral-mini-transcribe-realtime-2602",
               "audio_format": {"encoding": "pcm_s16le", "sample_rate": 16000}, "target_streaming_delay_ms": None,
               "diarize": None, "context_bias": None, "language": None, "speaker_references": None,
               "turn_detection": None}


def _mi_done(text: str, *segments: tuple[str, float, float]) -> str:
    return j({"type": "transcription.done", "model": "voxtral-mini-transcribe-realtime-2602", "text": text,
              "language": "en",
              "segments": [{"type": "transcription_segment", "text": t, "start": s, "end": e, "score": None,
                            "speaker_id": None} for t, s, e in segments],
              "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "prompt_audio_seconds": 2}})


MISTRAL = CodecCase(
    name="mistral",
    make_codec=lambda: MistralCodec(MULAW_8K),
    handshake=[
        j({"type": "session.created", "session": _MI_SESSION}),
        j({"type": "session.updated",
           "session": {**_MI_SESSION, "audio_format": {"encoding": "pcm_mulaw", "sample_rate": 8000}}}),
    ],
    partial_message=j({"type": "transcription.text.delta", "text": " Hello"}),
    final_message=_mi_done("Hello there.", ("Hello there.", 0.32, 1.1)),
    finalize_reply=[
        j({"type": "transcription.text.delta", "text": " there."}),
        _mi_done("Hello there.", ("Hello there.", 0.32, 1.1)),
    ],
    fatal_error_message=j({"type": "error", "error": {"message": "Unauthorized", "code": 401}}),
    retryable_error_message=j({"type": "error", "error": {
        "message": "Timeout waiting for response from streaming transcription", "code": 3804}}),
    malformed=[
        j({"type": 5}),
        j({"event": "transcription.text.delta", "text": "x"}),
        j({"type": "transcription.text.delta"}),
        j({"type": "transcription.text.delta", "text": 3}),
        j({"type": "transcription.done"}),
        j({"type": "transcription.done", "text": "x", "segments": "x"}),
        j({"type": "transcription.done", "text": "x", "segments": [{"start": "0.3", "end": 1}]}),
        j({"type": "transcription.done", "text": "x", "segments": [{"start": 0.3, "end": 1e308}]}),
        j({"type": "transcription.done", "text": "x", "segments": [7]}),
        j({"type": "session.created"}),
        j({"type": "session.created", "session": "x"}),
        j({"type": "session.created", "session": {"request_id": 4}}),
        j({"type": "session.updated", "session": []}),
        j({"type": "error"}),
        j({"type": "error", "error": "boom"}),
    ],
)


# --- OpenAI ----------------------------------------------------------------------------

_OA_SESSION = {"type": "transcription", "id": "sess_C9Gx", "object": "realtime.transcription_session",
               "audio": {"input": {"format": {"type": "audio/pcmu"},
                                   "transcription": {"model": "gpt-4o-transcribe", "language": None, "prompt": ""},
                                   "noise_reduction": None,
                                   "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                                      "prefix_padding_ms": 300, "silence_duration_ms": 500}}},
               "include": None}
_OA_ITEM = "conversation.item.input_audio_transcription."


def _oa_error(kind: str, code: str | None, message: str) -> str:
    return j({"type": "error", "event_id": "event_9", "error": {
        "type": kind, "code": code, "message": message, "param": None, "event_id": None}})


OPENAI = CodecCase(
    name="openai",
    make_codec=lambda: OpenAICodec(MULAW_8K, audio_input={"transcription": {"model": "gpt-4o-transcribe"},
                                                          "turn_detection": {"type": "server_vad"}}),
    handshake=[
        j({"type": "session.created", "event_id": "event_1", "session": _OA_SESSION}),
        j({"type": "session.updated", "event_id": "event_2", "session": _OA_SESSION}),
    ],
    partial_message=j({"type": _OA_ITEM + "delta", "event_id": "event_3", "item_id": "item_1",
                       "content_index": 0, "delta": "Hel"}),
    final_message=j({"type": _OA_ITEM + "completed", "event_id": "event_4", "item_id": "item_1",
                     "content_index": 0, "transcript": "Hello there.",
                     "usage": {"type": "duration", "seconds": 1.8}}),
    finalize_reply=[
        j({"type": "input_audio_buffer.committed", "event_id": "event_5", "item_id": "item_1",
           "previous_item_id": None}),
        j({"type": _OA_ITEM + "delta", "event_id": "event_6", "item_id": "item_1", "content_index": 0,
           "delta": "lo there."}),
        j({"type": _OA_ITEM + "completed", "event_id": "event_7", "item_id": "item_1", "content_index": 0,
           "transcript": "Hello there.", "usage": {"type": "duration", "seconds": 1.8}}),
    ],
    fatal_error_message=_oa_error("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    retryable_error_message=_oa_error("invalid_request_error", "session_expired",
                                      "Your session hit the maximum duration of 60 minutes."),
    malformed=[
        j({"type": None}),
        j({"event": "error"}),
        j({"type": _OA_ITEM + "delta", "delta": "x"}),
        j({"type": _OA_ITEM + "delta", "item_id": "item_1"}),
        j({"type": _OA_ITEM + "delta", "item_id": 1, "delta": "x"}),
        j({"type": _OA_ITEM + "completed", "item_id": "item_1"}),
        j({"type": _OA_ITEM + "completed", "item_id": "item_1", "transcript": ["x"]}),
        j({"type": _OA_ITEM + "failed", "item_id": "item_1", "error": "x"}),
        j({"type": "input_audio_buffer.committed"}),
        j({"type": "input_audio_buffer.speech_started", "item_id": "item_2", "audio_start_ms": "1000"}),
        j({"type": "input_audio_buffer.speech_started", "item_id": "item_2", "audio_start_ms": 1.5}),
        j({"type": "input_audio_buffer.speech_stopped", "item_id": "item_2", "audio_end_ms": -5}),
        j({"type": "session.created"}),
        j({"type": "session.created", "session": {"id": 7}}),
        j({"type": "session.updated", "session": None}),
        j({"type": "error", "error": None}),
        j({"type": "error", "error": {"code": 400}}),
    ],
)

CASES = [ELEVENLABS, ELEVENLABS_NO_TIMESTAMPS, MISTRAL, OPENAI]
