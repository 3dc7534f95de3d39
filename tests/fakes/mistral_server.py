"""A protocol-faithful fake of Mistral's Voxtral realtime transcription, for loopback tests.

Checks what the vendor checks: the path; ``model`` in the query (missing or unknown:
HTTP 400); ``Authorization: Bearer <key>`` (wrong or missing: HTTP 401); every client
message (a JSON object with a known ``type``; ``session.update`` fields and ranges,
and only before the first audio; ``language``/``context_bias`` only on Voxtral 3;
``input_audio.append`` strict base64 of at most 262144 bytes, whole samples; nothing
after ``input_audio.end``): bad → ``{"type": "error", "error": {"message", "code"}}``
then close 1008.

Script: ``session.created`` (server defaults: pcm_s16le 16 kHz); ``session.updated``
echoing the effective session; every ``delta_every_ms`` of audio an append-only
``transcription.text.delta`` naming the span (`` words 0 to 400``); ``input_audio.flush``
sends a delta for audio not yet covered (and, with ``flush_done=True``, a per-segment
``transcription.done``); ``input_audio.end`` flushes, then sends ``transcription.done``
with the full text and one segment per delta (seconds), and closes 1000 when
``close_after_done``.  Faults: ``tests.fakes.script``.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import trio_websocket

from .script import Close, ConnectionLog, FakeSocket, Fault, b64decode, span_text

__all__ = ["FakeMistral", "PATH", "TEST_KEY", "MODELS"]

PATH = "/v1/audio/transcriptions/realtime"
TEST_KEY = "mistral-test-key-0123456789abcdef"
V3_MODELS = {"voxtral-mini-transcribe-realtime-3", "voxtral-mini-transcribe-realtime-3-0"}
MODELS = {"voxtral-mini-transcribe-realtime-2602", "voxtral-mini-transcribe-realtime-latest", *V3_MODELS}
ENCODINGS = {"pcm_s16le": 2, "pcm_s32le": 4, "pcm_f16le": 2, "pcm_f32le": 4, "pcm_mulaw": 1, "pcm_alaw": 1}
SESSION_FIELDS = {"audio_format", "target_streaming_delay_ms", "language", "context_bias", "diarize",
                  "speaker_references", "turn_detection"}
MAX_APPEND = 262_144


class _Rejected(Exception):
    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class FakeMistral:
    def __init__(self, *, api_key: str = TEST_KEY, delta_every_ms: int = 400, flush_done: bool = False,
                 close_after_done: bool = False, faults: Sequence[Fault] = ()) -> None:
        self.api_key = api_key
        self.delta_every_ms = delta_every_ms
        self.flush_done = flush_done
        self.close_after_done = close_after_done
        self.faults = list(faults)
        self.connections: list[ConnectionLog] = []

    @property
    def audio(self) -> bytes:
        return b"".join(bytes(c.audio) for c in self.connections)

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        log = ConnectionLog.from_request(len(self.connections), request)
        self.connections.append(log)
        if log.path != PATH:
            await request.reject(404, body=b'{"detail":"Not Found"}')
            return
        if log.headers.get("authorization") != f"Bearer {self.api_key}":
            await request.reject(401, body=b'{"message":"Unauthorized","request_id":"fake"}')
            return
        model = (log.query.get("model") or [None])[0]
        if model not in MODELS:
            await request.reject(400, body=orjson.dumps({"message": f"Invalid model: {model}", "code": 1500}))
            return
        ws = await request.accept()
        log.accepted = True
        sock = FakeSocket(ws, log, self.faults)
        try:
            await self._serve(sock, model)
        except _Rejected as exc:
            await sock.send({"type": "error", "error": {"message": exc.message, "code": exc.code}})
            await sock.perform(Close(1008, "invalid request"))
        except trio_websocket.ConnectionClosed as exc:
            log.ended_by = log.ended_by or "client"
            log.close_code = exc.reason.code if exc.reason else 1006

    async def _serve(self, sock: FakeSocket, model: str) -> None:
        log = sock.log
        session = {"request_id": f"ws-fake-{log.index}", "model": model,
                   "audio_format": {"encoding": "pcm_s16le", "sample_rate": 16000},
                   "target_streaming_delay_ms": None, "diarize": None, "context_bias": None, "language": None,
                   "speaker_references": None, "turn_detection": None}
        await sock.send({"type": "session.created", "session": session})
        if await sock.fire(at_open=True):
            return
        covered_ms = 0  # audio covered by deltas so far
        segments: list[tuple[str, int, int]] = []
        segment_mark = 0  # deltas before this index were already in a per-segment done
        ended = False
        while True:
            message = await sock.ws.get_message()
            log.received.append(message)
            obj = _object(message)
            kind = obj["type"]
            if ended:
                raise _Rejected("the session accepts no more messages after input_audio.end")
            if kind == "session.update":
                if log.audio:
                    raise _Rejected("Session fields cannot be changed after audio has started")
                session.update(_session_fields(obj.get("session"), model))
                await sock.send({"type": "session.updated", "session": session})
                continue
            fmt = session["audio_format"]
            bytes_per_ms = fmt["sample_rate"] * ENCODINGS[fmt["encoding"]] // 1000
            if kind == "input_audio.append":
                audio = b64decode(obj.get("audio"))
                if audio is None:
                    raise _Rejected("audio must be a base64 string")
                if len(audio) > MAX_APPEND:
                    raise _Rejected(f"audio chunk of {len(audio)} bytes exceeds {MAX_APPEND}")
                if len(audio) % ENCODINGS[fmt["encoding"]]:
                    raise _Rejected("audio must hold whole samples")
                log.audio += audio
                now = len(log.audio) // bytes_per_ms
                if await sock.fire(audio_ms=now):
                    return
                if not sock.stalled and now - covered_ms >= self.delta_every_ms:
                    await self._delta(sock, segments, covered_ms, now)
                    covered_ms = now
                continue
            if kind not in ("input_audio.flush", "input_audio.end"):
                raise _Rejected(f"unknown message type {kind!r}")
            now = len(log.audio) // bytes_per_ms
            if sock.has_end_fault() and kind == "input_audio.end":
                if await sock.fire(at_end=True):
                    return
                continue
            if now > covered_ms:
                await self._delta(sock, segments, covered_ms, now)
                covered_ms = now
            if kind == "input_audio.flush":
                if self.flush_done and len(segments) > segment_mark:
                    await self._done(sock, segments[segment_mark:], model)
                    segment_mark = len(segments)
                continue
            ended = True
            await self._done(sock, segments, model)
            if self.close_after_done:
                await sock.perform(Close(1000, ""))
                return

    @staticmethod
    async def _delta(sock: FakeSocket, segments: list[tuple[str, int, int]], start_ms: int, end_ms: int) -> None:
        text = span_text(start_ms, end_ms)
        segments.append((text, start_ms, end_ms))
        sock.log.partials.append(" ".join(t for t, _, _ in segments))
        await sock.send({"type": "transcription.text.delta", "text": " " + text})

    @staticmethod
    async def _done(sock: FakeSocket, segments: list[tuple[str, int, int]], model: str) -> None:
        text = " ".join(t for t, _, _ in segments)
        if text:
            sock.log.finals.append(text)
        seconds = segments[-1][2] / 1000 if segments else 0
        await sock.send({
            "type": "transcription.done", "model": model, "text": text, "language": "en",
            "segments": [{"type": "transcription_segment", "text": t, "start": s / 1000, "end": e / 1000,
                          "score": None, "speaker_id": None} for t, s, e in segments],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                      "prompt_audio_seconds": round(seconds)}})


def _object(message: str | bytes) -> dict:
    if not isinstance(message, str):
        raise _Rejected("binary frames are not accepted; send JSON text")
    try:
        obj = orjson.loads(message)
    except orjson.JSONDecodeError:
        raise _Rejected("invalid JSON") from None
    if type(obj) is not dict or type(obj.get("type")) is not str:
        raise _Rejected("a message is a JSON object with a string 'type'")
    return obj


def _session_fields(session: object, model: str) -> dict:
    if type(session) is not dict:
        raise _Rejected("session must be an object")
    unknown = set(session) - SESSION_FIELDS
    if unknown:
        raise _Rejected(f"extra fields not permitted: {sorted(unknown)}")
    fmt = session.get("audio_format")
    if fmt is not None:
        if (type(fmt) is not dict or fmt.get("encoding") not in ENCODINGS or type(fmt.get("sample_rate")) is not int
                or not 8000 <= fmt["sample_rate"] <= 96000):
            raise _Rejected(f"invalid audio_format {fmt!r}")
    delay = session.get("target_streaming_delay_ms")
    if delay is not None and (type(delay) is not int or not 80 <= delay <= 2400):
        raise _Rejected("target_streaming_delay_ms must be an integer from 80 to 2400")
    for field in ("language", "context_bias", "turn_detection", "diarize"):
        if session.get(field) is not None and model not in V3_MODELS:
            raise _Rejected(f"{field} is not supported by {model}")
    bias = session.get("context_bias")
    if bias is not None and (type(bias) is not list or not all(type(t) is str for t in bias)):
        raise _Rejected("context_bias must be a list of strings")
    return {k: v for k, v in session.items() if v is not None}
