"""A protocol-faithful fake of OpenAI's Realtime API in a transcription session.

Checks what the vendor checks: the path ``/v1/realtime``; ``Authorization: Bearer <key>``
(wrong or missing: an ``invalid_api_key`` error event then close 3000
``invalid_request_error.invalid_api_key``, as the real server does; or HTTP 401 with
``auth_failure="http"``); the query (``intent=transcription`` and no ``model``, else the
session is a conversation one and a transcription update is refused); the
``session.update`` (``type: transcription``, ``audio.input.format`` one of
``audio/pcm``@24000 / ``audio/pcmu`` / ``audio/pcma``, a known ``transcription.model``,
``turn_detection`` shape; VAD refused for the streaming models); every client event (a
JSON object with a known ``type``; ``append`` strict base64).  Errors are ``error``
events naming the client ``event_id``; like the real server, the session stays open.

Script: ``session.created``; ``session.updated``; with server VAD,
``speech_started`` when a new buffer starts, then every ``vad_every_ms`` of buffered
audio ``speech_stopped`` + ``committed`` + transcription; ``input_audio_buffer.commit``
commits the buffer (``input_audio_buffer_commit_empty`` under 100 ms).  A transcription
is two ``delta``s then ``completed``, texts naming the span (``words 0 to 1000``), times
in ms of session audio.  Faults: ``tests.fakes.script``.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import trio_websocket

from .script import Close, ConnectionLog, FakeSocket, Fault, b64decode, span_text

__all__ = ["FakeOpenAI", "PATH", "TEST_KEY", "MODELS"]

PATH = "/v1/realtime"
TEST_KEY = "sk-proj-test-openai-0123456789abcdef"
MODELS = {"gpt-live-transcribe", "gpt-transcribe", "gpt-realtime-whisper", "gpt-4o-transcribe",
          "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15", "gpt-4o-transcribe-diarize", "whisper-1"}
NO_VAD_MODELS = {"gpt-live-transcribe", "gpt-realtime-whisper"}
FORMATS = {"audio/pcmu": 8, "audio/pcma": 8, "audio/pcm": 48}  # bytes per ms
CLIENT_EVENTS = {"session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
                 "input_audio_buffer.clear"}


class _Invalid(Exception):
    def __init__(self, message: str, code: str = "invalid_value", param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.param = message, code, param


class FakeOpenAI:
    def __init__(self, *, api_key: str = TEST_KEY, vad_every_ms: int = 1000, auth_failure: str = "message",
                 faults: Sequence[Fault] = ()) -> None:
        self.api_key = api_key
        self.vad_every_ms = vad_every_ms
        self.auth_failure = auth_failure
        self.faults = list(faults)
        self.connections: list[ConnectionLog] = []
        self._events = 0

    @property
    def audio(self) -> bytes:
        return b"".join(bytes(c.audio) for c in self.connections)

    def _event_id(self) -> str:
        self._events += 1
        return f"event_{self._events}"

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        log = ConnectionLog.from_request(len(self.connections), request)
        self.connections.append(log)
        if log.path != PATH:
            await request.reject(404, body=b'{"error":{"message":"Not found","type":"invalid_request_error"}}')
            return
        authorized = log.headers.get("authorization") == f"Bearer {self.api_key}"
        if not authorized and self.auth_failure == "http":
            await request.reject(401, body=b'{"error":{"message":"Incorrect API key provided.",'
                                           b'"type":"invalid_request_error","code":"invalid_api_key"}}')
            return
        ws = await request.accept()
        log.accepted = True
        sock = FakeSocket(ws, log, self.faults)
        try:
            if not authorized:
                await self._send_error(sock, "Incorrect API key provided.", "invalid_api_key", None, None)
                await sock.perform(Close(3000, "invalid_request_error.invalid_api_key"))
                return
            await self._serve(sock)
        except trio_websocket.ConnectionClosed as exc:
            log.ended_by = log.ended_by or "client"
            log.close_code = exc.reason.code if exc.reason else 1006

    async def _send_error(self, sock: FakeSocket, message: str, code: str, param: str | None,
                          event_id: str | None) -> None:
        await sock.send({"type": "error", "event_id": self._event_id(), "error": {
            "type": "invalid_request_error", "code": code, "message": message, "param": param,
            "event_id": event_id}})

    async def _serve(self, sock: FakeSocket) -> None:
        log = sock.log
        transcription = log.query.get("intent") == ["transcription"] and "model" not in log.query
        session: dict = {"type": "transcription" if transcription else "realtime", "id": f"sess_fake{log.index}",
                         "object": "realtime.transcription_session",
                         "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                             "transcription": None, "noise_reduction": None,
                                             "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                                                "prefix_padding_ms": 300, "silence_duration_ms": 500}}},
                         "include": None}
        await sock.send({"type": "session.created", "event_id": self._event_id(), "session": session})
        if await sock.fire(at_open=True):
            return
        buffer_start = 0  # session ms where the uncommitted buffer starts
        speaking: str | None = None  # item announced by speech_started for the current buffer
        previous: str | None = None
        items = 0
        while True:
            message = await sock.ws.get_message()
            log.received.append(message)
            event_id = None
            try:
                obj = _object(message)
                event_id = obj.get("event_id") if isinstance(obj.get("event_id"), str) else None
                kind = obj["type"]
                audio_input = session["audio"]["input"]
                per_ms = FORMATS[audio_input["format"]["type"]]
                vad = audio_input["turn_detection"] is not None
                if kind == "session.update":
                    if log.audio:  # the format cannot change under buffered audio
                        raise _Invalid("Cannot update the audio format after audio was appended", param="session")
                    _update_session(session, obj.get("session"), transcription)
                    await sock.send({"type": "session.updated", "event_id": self._event_id(), "session": session})
                    continue
                if kind == "input_audio_buffer.append":
                    audio = b64decode(obj.get("audio"))
                    if audio is None:
                        raise _Invalid("Invalid 'audio': expected a base64 string", param="audio")
                    log.audio += audio
                    now = len(log.audio) // per_ms
                    if await sock.fire(audio_ms=now):
                        return
                    if sock.stalled or not vad:
                        continue
                    if speaking is None and now > buffer_start:
                        items += 1
                        speaking = f"item_{log.index}_{items}"
                        await sock.send({"type": "input_audio_buffer.speech_started", "event_id": self._event_id(),
                                         "audio_start_ms": buffer_start, "item_id": speaking})
                    if now - buffer_start >= self.vad_every_ms:
                        await sock.send({"type": "input_audio_buffer.speech_stopped", "event_id": self._event_id(),
                                         "audio_end_ms": now, "item_id": speaking})
                        await self._commit(sock, speaking, previous, buffer_start, now)
                        previous, speaking, buffer_start = speaking, None, now
                    continue
                if kind == "input_audio_buffer.clear":
                    buffer_start, speaking = len(log.audio) // per_ms, None
                    await sock.send({"type": "input_audio_buffer.cleared", "event_id": self._event_id()})
                    continue
                # input_audio_buffer.commit: the end sequence of a transcription session
                if sock.has_end_fault():
                    if await sock.fire(at_end=True):
                        return
                    continue
                now = len(log.audio) // per_ms
                if now - buffer_start < 100:
                    raise _Invalid(f"Error committing input audio buffer: buffer too small. Expected at least 100ms "
                                   f"of audio, but buffer only has {now - buffer_start:.2f}ms of audio.",
                                   code="input_audio_buffer_commit_empty")
                if speaking is None:
                    items += 1
                    speaking = f"item_{log.index}_{items}"
                await self._commit(sock, speaking, previous, buffer_start, now)
                previous, speaking, buffer_start = speaking, None, now
            except _Invalid as exc:
                if not sock.stalled:
                    await self._send_error(sock, exc.message, exc.code, exc.param, event_id)

    async def _commit(self, sock: FakeSocket, item_id: str, previous: str | None, start_ms: int, end_ms: int) -> None:
        await sock.send({"type": "input_audio_buffer.committed", "event_id": self._event_id(),
                         "previous_item_id": previous, "item_id": item_id})
        text = span_text(start_ms, end_ms)
        head, tail = text[:len(text) // 2], text[len(text) // 2:]
        for delta in (head, tail):
            await sock.send({"type": "conversation.item.input_audio_transcription.delta", "event_id": self._event_id(),
                             "item_id": item_id, "content_index": 0, "delta": delta})
        sock.log.partials += [head.strip(), text]
        sock.log.finals.append(text)
        await sock.send({"type": "conversation.item.input_audio_transcription.completed",
                         "event_id": self._event_id(), "item_id": item_id, "content_index": 0, "transcript": text,
                         "usage": {"type": "duration", "seconds": (end_ms - start_ms) / 1000}})


def _object(message: str | bytes) -> dict:
    if not isinstance(message, str):
        raise _Invalid("Binary frames are not supported; send JSON events", code="invalid_json")
    try:
        obj = orjson.loads(message)
    except orjson.JSONDecodeError:
        raise _Invalid("The server could not parse the JSON in the event", code="invalid_json") from None
    if type(obj) is not dict or type(obj.get("type")) is not str:
        raise _Invalid("Invalid event: expected an object with a 'type'", param="type")
    if obj["type"] not in CLIENT_EVENTS:
        raise _Invalid(f"Invalid value: '{obj['type']}'. Supported values are: {sorted(CLIENT_EVENTS)}",
                       param="type")
    return obj


def _update_session(session: dict, update: object, transcription_intent: bool) -> None:
    if type(update) is not dict:
        raise _Invalid("Invalid 'session': expected an object", param="session")
    if update.get("type") != "transcription" or not transcription_intent:
        raise _Invalid("Only transcription sessions can be updated to type 'transcription'; connect with "
                       "?intent=transcription and no model", param="session.type")
    audio_input = ((update.get("audio") or {}).get("input")) if type(update.get("audio")) is dict else None
    if type(audio_input) is not dict:
        raise _Invalid("Invalid 'session.audio.input': expected an object", param="session.audio.input")
    current = session["audio"]["input"]
    fmt = audio_input.get("format", current["format"])
    if type(fmt) is not dict or fmt.get("type") not in FORMATS:
        raise _Invalid(f"Invalid 'session.audio.input.format': {fmt!r}", param="session.audio.input.format")
    if fmt["type"] == "audio/pcm" and fmt.get("rate", 24000) != 24000:
        raise _Invalid("audio/pcm supports only rate 24000", param="session.audio.input.format.rate")
    if fmt["type"] != "audio/pcm" and "rate" in fmt:
        raise _Invalid(f"{fmt['type']} takes no rate", param="session.audio.input.format.rate")
    trans = audio_input.get("transcription", current["transcription"])
    if type(trans) is not dict or trans.get("model") not in MODELS:
        raise _Invalid(f"Invalid 'session.audio.input.transcription.model': {trans!r}",
                       param="session.audio.input.transcription.model")
    turn = audio_input.get("turn_detection", current["turn_detection"])
    if turn is not None and (type(turn) is not dict or turn.get("type") not in ("server_vad", "semantic_vad")):
        raise _Invalid(f"Invalid 'session.audio.input.turn_detection': {turn!r}",
                       param="session.audio.input.turn_detection")
    if turn is not None and trans["model"] in NO_VAD_MODELS:
        raise _Invalid(f"{trans['model']} does not support turn detection", param="session.audio.input.turn_detection")
    current.update(format=fmt, transcription=trans, turn_detection=turn,
                   noise_reduction=audio_input.get("noise_reduction", current["noise_reduction"]))
