"""A protocol-faithful fake of ElevenLabs Scribe v2 Realtime, for loopback tests.

Checks what the vendor checks: the path; the ``xi-api-key`` header (wrong or missing:
``auth_error`` message then close 1008, or HTTP 401 with ``auth_failure="http"``); the
query (``model_id``, ``audio_format``, ``commit_strategy``, VAD ranges, ``keyterms``:
bad → ``invalid_request`` + close); every client message (an ``input_audio_chunk`` JSON
object, strict base64, ``commit`` bool, ``sample_rate`` matching ``audio_format``,
``previous_text`` on the first chunk only: bad → ``input_error`` + close).

Script: ``session_started``; then every ``partial_every_ms`` of uncommitted audio a
``partial_transcript`` of the segment; with ``commit_strategy=vad`` a commit every
``vad_commit_every_ms`` of segment audio; a ``commit: true`` chunk commits what is
left (an empty ``committed_transcript`` when nothing is).  Each commit sends
``committed_transcript`` then, with ``include_timestamps=true``,
``committed_transcript_with_timestamps`` with word times in seconds on the session
clock.  Texts name their span: ``words 1000 to 2000``.  Faults: ``tests.fakes.script``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson
import trio_websocket

from .script import Close, ConnectionLog, Fault, FakeSocket, b64decode, span_text, span_words

__all__ = ["FakeElevenLabs", "PATH", "TEST_KEY"]

PATH = "/v1/speech-to-text/realtime"
TEST_KEY = "sk_test_elevenlabs_0123456789abcdef"
MODELS = {"scribe_v2_realtime"}
AUDIO_FORMATS = {"ulaw_8000": (8000, 1), "pcm_8000": (8000, 2), "pcm_16000": (16000, 2), "pcm_22050": (22050, 2),
                 "pcm_24000": (24000, 2), "pcm_44100": (44100, 2), "pcm_48000": (48000, 2)}
RANGES = {"vad_silence_threshold_secs": (0.3, 3.0), "vad_threshold": (0.1, 0.9),
          "min_speech_duration_ms": (50, 2000), "min_silence_duration_ms": (50, 2000)}


class _Rejected(Exception):
    def __init__(self, message_type: str, text: str) -> None:
        super().__init__(text)
        self.message_type = message_type
        self.text = text


class FakeElevenLabs:
    def __init__(self, *, api_key: str = TEST_KEY, partial_every_ms: int = 300, vad_commit_every_ms: int = 1000,
                 auth_failure: str = "message", faults: Sequence[Fault] = ()) -> None:
        self.api_key = api_key
        self.partial_every_ms = partial_every_ms
        self.vad_commit_every_ms = vad_commit_every_ms
        self.auth_failure = auth_failure
        self.faults = list(faults)
        self.connections: list[ConnectionLog] = []

    @property
    def audio(self) -> bytes:
        return b"".join(bytes(c.audio) for c in self.connections)

    @property
    def finals(self) -> list[str]:
        return [text for c in self.connections for text in c.finals]

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        log = ConnectionLog.from_request(len(self.connections), request)
        self.connections.append(log)
        if log.path != PATH:
            await request.reject(404, body=b'{"detail":"Not Found"}')
            return
        authorized = log.headers.get("xi-api-key") == self.api_key
        if not authorized and self.auth_failure == "http":
            await request.reject(401, body=b'{"detail":{"status":"invalid_api_key","message":"Invalid API key"}}')
            return
        ws = await request.accept()
        log.accepted = True
        sock = FakeSocket(ws, log, self.faults)
        try:
            if not authorized:
                await sock.send({"message_type": "auth_error", "error": "Invalid API key"})
                await sock.perform(Close(1008, "auth_error"))
                return
            await self._serve(sock)
        except _Rejected as exc:
            await sock.send({"message_type": exc.message_type, "error": exc.text})
            await sock.perform(Close(1008, exc.message_type))
        except trio_websocket.ConnectionClosed as exc:
            log.ended_by = log.ended_by or "client"
            log.close_code = exc.reason.code if exc.reason else 1006

    async def _serve(self, sock: FakeSocket) -> None:
        log = sock.log
        config = _session_config(log.query)
        rate, width = AUDIO_FORMATS[config["audio_format"]]
        vad = config["commit_strategy"] == "vad"
        timestamps = config["include_timestamps"]
        await sock.send({"message_type": "session_started", "session_id": f"fake-{log.index}", "config": config})
        if await sock.fire(at_open=True):
            return
        segment_start = last_partial = 0
        chunks = 0
        while True:
            message = await sock.ws.get_message()
            log.received.append(message)
            audio, commit = _audio_chunk(message, rate, first=chunks == 0)
            chunks += 1
            log.audio += audio
            now = len(log.audio) * 1000 // (rate * width)
            if await sock.fire(audio_ms=now):
                return
            if sock.stalled:
                continue
            if vad and now - segment_start >= self.vad_commit_every_ms:
                await self._commit(sock, segment_start, now, timestamps)
                segment_start = last_partial = now
            if now - max(last_partial, segment_start) >= self.partial_every_ms:
                text = span_text(segment_start, now)
                log.partials.append(text)
                await sock.send({"message_type": "partial_transcript", "text": text})
                last_partial = now
            if commit:
                if sock.has_end_fault():
                    if await sock.fire(at_end=True):
                        return
                    continue
                await self._commit(sock, segment_start, now, timestamps)
                segment_start = last_partial = now

    async def _commit(self, sock: FakeSocket, start_ms: int, end_ms: int, timestamps: bool) -> None:
        if end_ms <= start_ms:
            text, words = "", []
        else:
            text = span_text(start_ms, end_ms)
            sock.log.finals.append(text)
            words = []
            for i, (token, t0, t1) in enumerate(span_words(start_ms, end_ms)):
                if i:
                    words.append({"text": " ", "start": t0 / 1000, "end": t0 / 1000, "type": "spacing"})
                words.append({"text": token, "start": t0 / 1000, "end": t1 / 1000, "type": "word",
                              "speaker_id": None, "logprob": -0.01, "characters": list(token)})
        await sock.send({"message_type": "committed_transcript", "text": text})
        if timestamps:
            await sock.send({"message_type": "committed_transcript_with_timestamps", "text": text,
                             "language_code": "en", "words": words})


def _one(query: dict[str, list[str]], key: str, default: str | None = None) -> str | None:
    values = query.get(key)
    if not values:
        return default
    if len(values) > 1:
        raise _Rejected("invalid_request", f"{key} given {len(values)} times")
    return values[0]


def _session_config(query: dict[str, list[str]]) -> dict:
    model = _one(query, "model_id")
    if model is None:
        raise _Rejected("invalid_request", "model_id is required")
    if model not in MODELS:
        raise _Rejected("invalid_request", f"model_id {model!r} does not exist")
    audio_format = _one(query, "audio_format", "pcm_16000")
    if audio_format not in AUDIO_FORMATS:
        raise _Rejected("invalid_request", f"audio_format {audio_format!r} is not supported")
    strategy = _one(query, "commit_strategy", "manual")
    if strategy not in ("manual", "vad"):
        raise _Rejected("invalid_request", f"commit_strategy {strategy!r} is not supported")
    flags = {}
    for key in ("include_timestamps", "include_language_detection", "no_verbatim"):
        raw = _one(query, key, "false")
        if raw not in ("true", "false"):
            raise _Rejected("invalid_request", f"{key} must be true or false")
        flags[key] = raw == "true"
    numbers = {}
    for key, (low, high) in RANGES.items():
        raw = _one(query, key)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            raise _Rejected("invalid_request", f"{key} must be a number") from None
        if not low <= value <= high:
            raise _Rejected("invalid_request", f"{key} must be between {low} and {high}")
        numbers[key] = value
    language = _one(query, "language_code")
    if language is not None and not re.fullmatch(r"[a-z]{2,3}", language):
        raise _Rejected("invalid_request", f"language_code {language!r} is not a language")
    keyterms = query.get("keyterms", [])
    if len(keyterms) > 50 or any(not 0 < len(term) <= 20 for term in keyterms):
        raise _Rejected("invalid_request", "keyterms: at most 50 terms of at most 20 characters")
    return {"sample_rate": AUDIO_FORMATS[audio_format][0], "audio_format": audio_format, "language_code": language,
            "commit_strategy": strategy, "vad_silence_threshold_secs": numbers.get("vad_silence_threshold_secs", 1.5),
            "vad_threshold": numbers.get("vad_threshold", 0.4), "model_id": model, "keyterms": keyterms,
            **flags}


def _audio_chunk(message: str | bytes, rate: int, *, first: bool) -> tuple[bytes, bool]:
    if not isinstance(message, str):
        raise _Rejected("input_error", "binary frames are not accepted; send input_audio_chunk JSON")
    try:
        obj = orjson.loads(message)
    except orjson.JSONDecodeError:
        raise _Rejected("input_error", "message is not valid JSON") from None
    if type(obj) is not dict:
        raise _Rejected("input_error", "message must be a JSON object")
    if obj.get("message_type") != "input_audio_chunk":
        raise _Rejected("invalid_request", f"unknown message_type {obj.get('message_type')!r}")
    audio = b64decode(obj.get("audio_base_64"))
    if audio is None:
        raise _Rejected("input_error", "audio_base_64 must be a base64 string")
    commit = obj.get("commit", False)
    if type(commit) is not bool:
        raise _Rejected("input_error", "commit must be a boolean")
    sample_rate = obj.get("sample_rate")
    if type(sample_rate) is not int or sample_rate != rate:
        raise _Rejected("input_error", f"sample_rate must be {rate} for this audio_format, got {sample_rate!r}")
    if obj.get("previous_text") is not None and not first:
        raise _Rejected("input_error", "previous_text is only allowed on the first chunk")
    return audio, commit
