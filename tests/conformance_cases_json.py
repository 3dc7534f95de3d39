"""Conformance cases for the JSON-framed vendors: ElevenLabs, Mistral, OpenAI.

Every message below is shaped exactly as the vendor sends it (reference:
stt-protocols.md sections 1, 2 and 5)."""

from __future__ import annotations

import orjson

from providers.base import MULAW_8K
from providers.elevenlabs import ElevenLabsCodec
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

CASES = [ELEVENLABS, ELEVENLABS_NO_TIMESTAMPS]
