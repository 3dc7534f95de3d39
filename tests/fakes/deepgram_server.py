"""A protocol-faithful fake of Deepgram live streaming, v1 (``/v1/listen``) and Flux
(``/v2/listen``), for ``serve_fake``.

What it checks, as Deepgram does: the path, ``Authorization: Token <key>`` (missing or
wrong → HTTP 401 with a ``dg-error`` header), the query (``model``; ``encoding`` and
``sample_rate`` together; booleans; ``utterance_end_ms`` needs ``interim_results=true``;
``keyterm`` only on nova-3/flux → HTTP 400), text frames are JSON control messages
(otherwise an ``Error`` ``SchemaError``), no zero-length binary frame (close 1002), and
the idle rule: ``idle_timeout`` seconds without audio or ``KeepAlive`` → close 1011
``NET-0001``.

What it says, on a script over the audio it received (times are session ms):
v1: an interim ``Results`` (``is_final: false``) every ``partial_every_ms`` covering
the uncommitted audio, a final ``Results`` every ``final_every_ms`` (``speech_final``
on every other one, then ``UtteranceEnd``), a ``SpeechStarted`` at the first audio;
``Finalize`` → a final ``Results`` (``from_finalize``) for the rest; ``CloseStream`` →
the rest, ``Metadata``, close 1000.  Flux: ``Connected``, ``TurnInfo`` ``StartOfTurn``
/ ``Update`` / ``EndOfTurn`` on the same script; ``ForceEndTurn`` → ``EndOfTurn``
(``trigger: manual``); ``CloseStream`` → close without a status code (1005).

Transcript text names the span: ``"deepgram 0 to 1000"``.  Faults, on the sessions
listed in ``fault_sessions`` (by default only the first, so a reconnect succeeds):
``close_at_ms`` (close with a code and reason once that much audio arrived),
``error_at_ms`` (send an ``Error`` message then close 1011); ``answer_end=False`` (the
end sequence is recorded, never answered: the client's close code lands in ``close_code``).  Every session's audio bytes, frame sizes and
control messages are recorded.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import attrs
import orjson
import trio
import trio_websocket
from wsproto.frame_protocol import CloseReason

__all__ = ["DeepgramFake", "FakeSession", "span_text"]

V1_ENCODINGS = {"linear16", "linear32", "flac", "alaw", "mulaw", "amr-nb", "amr-wb", "opus", "ogg-opus",
                "speex", "g729"}
V2_ENCODINGS = {"linear16", "linear32", "mulaw", "alaw", "opus", "ogg-opus"}
BOOL_PARAMS = ("interim_results", "smart_format", "punctuate", "vad_events", "numerals", "diarize",
               "multichannel", "profanity_filter", "dictation")


def span_text(start_ms: int, end_ms: int) -> str:
    return f"deepgram {start_ms} to {end_ms}"


@attrs.define
class FakeSession:
    """What one accepted connection did."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    bytes_per_ms: float
    audio: bytearray = attrs.Factory(bytearray)
    frames: list[int] = attrs.Factory(list)  # binary frame sizes, in order
    controls: list[str] = attrs.Factory(list)  # "type" of each text message, in order
    sent: list[dict] = attrs.Factory(list)  # every message the fake sent
    index: int = 0  # 0 for the first connection, then 1, 2 ...
    close_code: int | None = None
    close_reason: str = ""
    committed_ms: int = 0
    turn_index: int = 0
    turn_open: bool = False

    @property
    def received_ms(self) -> int:
        return int(len(self.audio) / self.bytes_per_ms)


@attrs.define
class DeepgramFake:
    api_key: str = "test-key"
    partial_every_ms: int = 500
    final_every_ms: int = 1000
    idle_timeout: float = 10.0
    close_at_ms: tuple[int, int, str] | None = None  # (audio ms, close code, reason)
    error_at_ms: tuple[int, dict] | None = None  # (audio ms, Error message body)
    fault_sessions: tuple[int, ...] = (0,)  # which sessions (by index) the faults hit
    answer_end: bool = True  # False: record Finalize/ForceEndTurn/CloseStream, never answer them
    sessions: list[FakeSession] = attrs.Factory(list)
    rejected: list[tuple[int, str]] = attrs.Factory(list)  # (HTTP status, dg-error)

    # --- handshake ----------------------------------------------------------------

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        target = urlsplit(request.path)
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        if target.path not in ("/v1/listen", "/v2/listen"):
            await self._reject(request, 404, "unknown path")
            return
        if headers.get("authorization") != f"Token {self.api_key}":
            await self._reject(request, 401, "Invalid credentials.")
            return
        query = parse_qs(target.query, keep_blank_values=True)
        problem, bytes_per_ms = self._check_query(target.path, query)
        if problem:
            await self._reject(request, 400, problem)
            return
        ws = await request.accept()
        session = FakeSession(target.path, query, headers, bytes_per_ms, index=len(self.sessions))
        self.sessions.append(session)
        try:
            if target.path == "/v2/listen":
                await self._send(ws, session, {"type": "Connected", "request_id": "req-fake", "sequence_id": 0})
            await self._serve(ws, session)
        except trio_websocket.ConnectionClosed as exc:
            session.close_code = exc.reason.code if exc.reason else 1006
            session.close_reason = (exc.reason.reason if exc.reason else "") or ""

    async def _reject(self, request: trio_websocket.WebSocketRequest, status: int, error: str) -> None:
        self.rejected.append((status, error))
        await request.reject(status, extra_headers=[(b"dg-error", error.encode()), (b"dg-request-id", b"req-fake")],
                             body=orjson.dumps({"err_code": "REJECTED", "err_msg": error}))

    def _check_query(self, path: str, query: dict[str, list[str]]) -> tuple[str, float]:
        def one(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        model = one("model")
        flux = path == "/v2/listen"
        if not model:
            return "model is required", 0
        if flux != model.startswith("flux-"):
            return f"model {model} is not served on {path}", 0
        encoding, rate = one("encoding"), one("sample_rate")
        if encoding is None or rate is None:
            return "encoding and sample_rate are required for raw audio", 0
        if encoding not in (V2_ENCODINGS if flux else V1_ENCODINGS):
            return f"unknown encoding {encoding}", 0
        if not rate.isdigit() or not 8000 <= int(rate) <= 48000:
            return f"bad sample_rate {rate}", 0
        for name in BOOL_PARAMS:
            if one(name) not in (None, "true", "false"):
                return f"{name} must be true or false", 0
        endpointing = one("endpointing")
        if endpointing is not None and endpointing != "false" and not endpointing.isdigit():
            return "endpointing must be ms or false", 0
        if one("utterance_end_ms") is not None and one("interim_results") != "true":
            return "utterance_end_ms requires interim_results=true", 0
        if query.get("keyterm") and not (flux or model.startswith("nova-3")):
            return "keyterm is only available with nova-3 and flux", 0
        width = {"mulaw": 1, "alaw": 1, "linear16": 2, "linear32": 4}.get(encoding, 1)
        return "", int(rate) * width / 1000

    # --- the session --------------------------------------------------------------

    async def _serve(self, ws: trio_websocket.WebSocketConnection, session: FakeSession) -> None:
        flux = session.path == "/v2/listen"
        next_partial = self.partial_every_ms
        next_final = self.final_every_ms
        while True:
            message: str | bytes = b""
            with trio.move_on_after(self.idle_timeout) as idle:
                message = await ws.get_message()
            if idle.cancelled_caught:  # no audio and no KeepAlive for idle_timeout
                await self._close(ws, session, 1011, "NET-0001")
                return
            if isinstance(message, bytes):
                if not message:
                    await self._close(ws, session, 1002, "zero-length binary frame")
                    return
                if not session.audio:
                    await self._speech_started(ws, session, flux)
                session.audio += message
                session.frames.append(len(message))
                now = session.received_ms
                faulty = session.index in self.fault_sessions
                if self.close_at_ms and faulty and now >= self.close_at_ms[0]:
                    await self._close(ws, session, self.close_at_ms[1], self.close_at_ms[2])
                    return
                if self.error_at_ms and faulty and now >= self.error_at_ms[0]:
                    await self._send(ws, session, {"type": "Error", **self.error_at_ms[1]})
                    await self._close(ws, session, 1011, "error")
                    return
                while now >= next_final:
                    speech_final = (next_final // self.final_every_ms) % 2 == 0
                    await self._final(ws, session, next_final, flux, speech_final=speech_final)
                    next_final += self.final_every_ms
                if now >= next_partial:
                    while next_partial <= now:
                        next_partial += self.partial_every_ms
                    if now > session.committed_ms:
                        await self._partial(ws, session, now, flux)
                continue
            try:
                control = orjson.loads(message)
                kind = control["type"] if isinstance(control, dict) else None
            except (orjson.JSONDecodeError, KeyError):
                kind = None
            if not isinstance(kind, str):
                await self._send(ws, session, {"type": "Error", "variant": "SchemaError",
                                               "description": "could not parse the message", "message": message[:100]})
                continue
            session.controls.append(kind)
            if not self.answer_end and kind in ("Finalize", "ForceEndTurn", "CloseStream"):
                continue  # a vendor whose final is late: the session ends by the client's close
            if kind == "KeepAlive" and not flux:
                continue
            if kind == "Finalize" and not flux:
                if session.received_ms > session.committed_ms:
                    await self._final(ws, session, session.received_ms, flux, from_finalize=True)
                continue
            if kind == "ForceEndTurn" and flux:
                if session.turn_open or session.received_ms > session.committed_ms:
                    await self._final(ws, session, session.received_ms, flux, trigger="manual")
                continue
            if kind == "CloseStream":
                if flux:  # Flux does not finalize the open turn, and closes with no status code
                    await self._close_without_status(ws, session)
                    return
                if session.received_ms > session.committed_ms:
                    await self._final(ws, session, session.received_ms, flux, from_finalize=False)
                await self._send(ws, session, {
                    "type": "Metadata", "transaction_key": "deprecated", "request_id": "req-fake",
                    "sha256": "0" * 64, "created": "2026-01-01T00:00:00.000Z",
                    "duration": session.received_ms / 1000, "channels": 1})
                await self._close(ws, session, 1000, "")
                return
            if kind in ("Configure",):
                continue
            await self._send(ws, session, {"type": "Error", "variant": "SchemaError",
                                           "description": f"unknown message type {kind}", "message": message[:100]})

    # --- server messages ------------------------------------------------------------

    async def _send(self, ws: trio_websocket.WebSocketConnection, session: FakeSession, body: dict) -> None:
        if "sequence_id" in body:  # Flux numbers every server message from 0
            body["sequence_id"] = len(session.sent)
        session.sent.append(body)
        await ws.send_message(orjson.dumps(body).decode())

    async def _close(self, ws: trio_websocket.WebSocketConnection, session: FakeSession, code: int,
                     reason: str) -> None:
        session.close_code, session.close_reason = code, reason
        await ws.aclose(code, reason)

    async def _close_without_status(self, ws: trio_websocket.WebSocketConnection, session: FakeSession) -> None:
        # A close frame with no status code: the peer sees 1005.
        session.close_code, session.close_reason = 1005, ""
        await ws.aclose(CloseReason.NO_STATUS_RCVD)  # the enum member: wsproto then sends no status

    async def _speech_started(self, ws: trio_websocket.WebSocketConnection, session: FakeSession,
                              flux: bool) -> None:
        if not flux:
            await self._send(ws, session, {"type": "SpeechStarted", "channel": [0, 1], "timestamp": 0.0})

    async def _partial(self, ws: trio_websocket.WebSocketConnection, session: FakeSession, end_ms: int,
                       flux: bool) -> None:
        start_ms = session.committed_ms
        if flux:
            event = "Update" if session.turn_open else "StartOfTurn"
            session.turn_open = True
            await self._send(ws, session, _turn_info(event, session.turn_index, start_ms, end_ms))
            return
        await self._send(ws, session, _results(start_ms, end_ms, is_final=False))

    async def _final(self, ws: trio_websocket.WebSocketConnection, session: FakeSession, end_ms: int,
                     flux: bool, *, speech_final: bool = True, from_finalize: bool = False,
                     trigger: str = "model") -> None:
        start_ms = session.committed_ms
        session.committed_ms = end_ms
        if flux:
            body = _turn_info("EndOfTurn", session.turn_index, start_ms, end_ms)
            body["trigger"] = trigger
            session.turn_index += 1
            session.turn_open = False
            await self._send(ws, session, body)
            return
        await self._send(ws, session, _results(start_ms, end_ms, is_final=True, speech_final=speech_final,
                                               from_finalize=from_finalize))
        if speech_final and not from_finalize:
            await self._send(ws, session, {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": end_ms / 1000})


def _results(start_ms: int, end_ms: int, *, is_final: bool, speech_final: bool = False,
             from_finalize: bool = False) -> dict:
    text = span_text(start_ms, end_ms)
    return {
        "type": "Results", "channel_index": [0, 1], "start": start_ms / 1000,
        "duration": (end_ms - start_ms) / 1000, "is_final": is_final,
        "speech_final": is_final and speech_final, "from_finalize": from_finalize,
        "channel": {"alternatives": [{
            "transcript": text, "confidence": 0.98,
            "words": [{"word": w, "start": start_ms / 1000, "end": end_ms / 1000, "confidence": 0.98,
                       "punctuated_word": w} for w in text.split()],
        }]},
        "metadata": {"request_id": "req-fake", "model_uuid": "fake",
                     "model_info": {"name": "fake", "version": "0", "arch": "fake"}},
    }


def _turn_info(event: str, turn_index: int, start_ms: int, end_ms: int) -> dict:
    text = span_text(start_ms, end_ms)
    return {
        "type": "TurnInfo", "request_id": "req-fake", "sequence_id": 0, "event": event,
        "turn_index": turn_index, "audio_window_start": start_ms / 1000, "audio_window_end": end_ms / 1000,
        "transcript": text, "words": [{"word": w, "confidence": 0.97, "start": start_ms / 1000,
                                       "end": end_ms / 1000} for w in text.split()],
        "end_of_turn_confidence": 0.9 if event == "EndOfTurn" else 0.1,
    }
