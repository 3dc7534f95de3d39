"""Conformance cases for the binary-audio vendors: Deepgram (v1 and Flux) and AssemblyAI.

Every message below is shaped exactly as the vendor sends it (reference:
stt-protocols.md sections 3 and 4)."""

from __future__ import annotations

import orjson

from providers.assemblyai import AssemblyAICodec
from providers.base import MULAW_8K
from providers.deepgram import DeepgramCodec, FluxCodec
from tests.conformance import CodecCase


def j(value: object) -> str:
    return orjson.dumps(value).decode()


# --- Deepgram v1 -----------------------------------------------------------------------


def _dg_results(text: str, start: float, duration: float, *, is_final: bool, speech_final: bool = False,
                from_finalize: bool = False) -> str:
    return j({
        "type": "Results", "channel_index": [0, 1], "duration": duration, "start": start,
        "is_final": is_final, "speech_final": speech_final, "from_finalize": from_finalize,
        "channel": {"alternatives": [{
            "transcript": text, "confidence": 0.98,
            "words": [{"word": w.lower(), "start": start, "end": start + duration, "confidence": 0.99,
                       "punctuated_word": w} for w in text.split()],
        }]},
        "metadata": {"request_id": "5d7c", "model_uuid": "1e2f",
                     "model_info": {"name": "general-nova-3", "version": "2025", "arch": "nova-3"}},
    })


DEEPGRAM = CodecCase(
    name="deepgram",
    make_codec=DeepgramCodec,
    handshake=[],  # v1 has no ready message: the session is live when the socket opens
    partial_message=_dg_results("hello how are", 0.0, 1.04, is_final=False),
    final_message=_dg_results("Hello, how are you?", 0.0, 1.6, is_final=True, speech_final=True),
    finalize_reply=[
        _dg_results("Goodbye.", 1.6, 0.9, is_final=True, from_finalize=True),
        j({"type": "Metadata", "transaction_key": "deprecated", "request_id": "5d7c", "sha256": "ab" * 32,
           "created": "2026-08-29T22:37:55.202Z", "duration": 2.5, "channels": 1}),
    ],
    fatal_error_message=j({"type": "Error", "variant": "SchemaError",
                           "description": "Could not parse the client message", "message": '{"type": "Nope"}'}),
    retryable_error_message=j({"type": "Error", "variant": "INTERNAL_SERVER_ERROR",
                               "description": "Internal error, try again"}),
    malformed=[
        j({"type": "Results"}),
        j({"type": "Results", "start": 0, "duration": 1, "is_final": "yes",
           "channel": {"alternatives": [{"transcript": "x"}]}}),
        j({"type": "Results", "start": "0.5", "duration": 1, "is_final": True,
           "channel": {"alternatives": [{"transcript": "x"}]}}),
        j({"type": "Results", "start": 0, "duration": 1, "is_final": True, "channel": []}),
        j({"type": "Results", "start": 0, "duration": 1, "is_final": True,
           "channel": {"alternatives": [{"transcript": None}]}}),
        j({"type": "Results", "start": 1e300, "duration": 1, "is_final": True,
           "channel": {"alternatives": [{"transcript": "x"}]}}),
        j({"type": "Error", "description": 5}),
    ],
)


# --- Deepgram Flux (v2) ------------------------------------------------------------------


def _turn(event: str, text: str, start: float, end: float, sequence_id: int, **extra: object) -> str:
    return j({"type": "TurnInfo", "request_id": "7a1b", "sequence_id": sequence_id, "event": event,
              "turn_index": 0, "audio_window_start": start, "audio_window_end": end, "transcript": text,
              "words": [{"word": w, "confidence": 0.97, "start": start, "end": end} for w in text.split()],
              "end_of_turn_confidence": 0.8 if event == "EndOfTurn" else 0.1, **extra})


DEEPGRAM_FLUX = CodecCase(
    name="deepgram-flux",
    make_codec=FluxCodec,
    handshake=[j({"type": "Connected", "request_id": "7a1b", "sequence_id": 0})],
    partial_message=_turn("Update", "hello there", 0.0, 1.2, 1),
    final_message=_turn("EndOfTurn", "Hello there.", 0.0, 1.4, 2, trigger="model"),
    # finalize with the turn open: ForceEndTurn → EndOfTurn (manual) → CloseStream → close
    finalize_reply=[_turn("EndOfTurn", "Hello there, bye.", 0.0, 2.0, 2, trigger="manual")],
    fatal_error_message=j({"type": "Error", "sequence_id": 3, "code": "INVALID_AUTH",
                           "description": "Invalid credentials"}),
    retryable_error_message=j({"type": "Error", "sequence_id": 3, "code": "INTERNAL_SERVER_ERROR",
                               "description": "Internal error"}),
    malformed=[
        j({"type": "TurnInfo", "event": "Update", "turn_index": "0", "transcript": "x"}),
        j({"type": "TurnInfo", "event": 3, "turn_index": 0}),
        j({"type": "TurnInfo", "event": "Update", "turn_index": 0, "audio_window_start": -2}),
        j({"type": "Connected", "request_id": 9}),
    ],
)



# --- AssemblyAI v3 ---------------------------------------------------------------------


def _aai_turn(order: int, text: str, start: int, *, end_of_turn: bool, formatted: bool) -> str:
    words = [{"text": w, "start": start + 300 * i, "end": start + 300 * i + 250, "confidence": 0.87,
              "word_is_final": end_of_turn or i < len(text.split()) - 1} for i, w in enumerate(text.split())]
    return j({"type": "Turn", "turn_order": order, "turn_is_formatted": formatted, "end_of_turn": end_of_turn,
              "transcript": text, "utterance": text if end_of_turn else "",
              "end_of_turn_confidence": 0.43 if end_of_turn else 0.01, "words": words})


ASSEMBLYAI = CodecCase(
    name="assemblyai",
    # format_turns=true, the client's default: finals are the formatted end-of-turn messages
    make_codec=lambda: AssemblyAICodec(MULAW_8K, format_turns=True),
    handshake=[j({"type": "Begin", "id": "de5d9927-73a6-4be8-b52d-b4c07be37e6b", "expires_at": 1759796682})],
    partial_message=_aai_turn(0, "Hi my name", 2160, end_of_turn=False, formatted=False),
    final_message=_aai_turn(0, "Hi, my name is Sonny.", 2160, end_of_turn=True, formatted=True),
    finalize_reply=[
        _aai_turn(1, "goodbye", 4000, end_of_turn=True, formatted=False),
        _aai_turn(1, "Goodbye.", 4000, end_of_turn=True, formatted=True),
        j({"type": "Termination", "audio_duration_seconds": 5, "session_duration_seconds": 6}),
    ],
    fatal_error_message=j({"type": "Error", "error_code": 1008, "error": "Unauthorized connection: Invalid API key"}),
    retryable_error_message=j({"type": "Error", "error_code": 3005, "error": "Session Cancelled: server error"}),
    malformed=[
        j({"type": "Begin", "expires_at": 1759796682}),
        j({"type": "Turn", "turn_order": "0", "end_of_turn": False, "transcript": "x"}),
        j({"type": "Turn", "turn_order": 0, "end_of_turn": None, "transcript": "x"}),
        j({"type": "Turn", "turn_order": 0, "end_of_turn": False, "transcript": "x",
           "words": [{"text": "x", "start": "2160", "end": 2560}]}),
        j({"type": "Turn", "turn_order": 0, "end_of_turn": False, "transcript": "x",
           "words": [{"text": "x", "start": 1e300, "end": 2560}]}),
        j({"type": "Error", "error_code": "3005", "error": "x"}),
    ],
)

CASES = [DEEPGRAM, DEEPGRAM_FLUX, ASSEMBLYAI]
