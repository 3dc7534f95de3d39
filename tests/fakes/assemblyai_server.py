"""A protocol-faithful fake of AssemblyAI Universal Streaming v3 (``/v3/ws``) for
``serve_fake``.

What it checks, as AssemblyAI does: the path; ``Authorization: <key>`` (the raw key;
missing or wrong → HTTP 401, or with ``auth_failure="close"`` accept then close 1008);
the query (``speech_model`` required, ``encoding`` pcm_s16le|pcm_mulaw, integer
``sample_rate``, boolean ``format_turns``, numeric thresholds, ``keyterms_prompt`` a
JSON list of strings → otherwise HTTP 400); every binary frame 50-1000 ms long and the
audio no faster than real time (``received ms <= ms since the first frame +
rate_tolerance_ms``) → otherwise close 3007; text frames are JSON with a known
``type`` (``Terminate``, ``KeepAlive``, ``ForceEndpoint``, ``UpdateConfiguration``) →
otherwise close 3006.

What it says: ``Begin`` on accept; ``SpeechStarted`` at the first frame; a partial
``Turn`` every ``partial_every_ms`` of audio; an end of turn every ``turn_every_ms``
(with ``format_turns=true``: an unformatted end-of-turn ``Turn`` followed by a
formatted one with the same ``turn_order`` if ``format_pair``, else only the formatted
one); ``ForceEndpoint`` ends the current turn; ``Terminate`` → the last turn,
``Termination``, close 1000.  Unformatted text names the span (``"assemblyai 0 to
1000"``); formatted text is ``"Assemblyai 0 to 1000."``.  Word times are ms.

Faults, on the sessions listed in ``fault_sessions`` (by default only the first, so a
reconnect succeeds): ``close_at_ms`` (close with a code and reason once that much audio
arrived); ``error_at_ms`` (an ``Error`` message with that code, then close with it).
``answer_end=False``: ``Terminate`` is recorded and never answered, so the session ends
by the client's close (its code lands in ``close_code``: 1006 if the TCP connection
ended without a close frame).
"""

from __future__ import annotations

import math
from urllib.parse import parse_qs, urlsplit

import attrs
import orjson
import trio
import trio_websocket

__all__ = ["AssemblyAIFake", "FakeSession", "span_text", "formatted_text"]

MODELS = {"universal-streaming-english", "universal-streaming-multilingual", "whisper-rt", "u3-rt-pro",
          "u3-rt-pro-beta-1", "universal-3-5-pro", "universal-3-6", "universal-3-6-pro"}
CONTROL_TYPES = {"Terminate", "KeepAlive", "ForceEndpoint", "UpdateConfiguration"}


def span_text(start_ms: int, end_ms: int) -> str:
    return f"assemblyai {start_ms} to {end_ms}"


def formatted_text(start_ms: int, end_ms: int) -> str:
    return f"Assemblyai {start_ms} to {end_ms}."


@attrs.define
class FakeSession:
    """What one accepted connection did."""

    query: dict[str, str]
    headers: dict[str, str]
    bytes_per_ms: float
    format_turns: bool
    audio: bytearray = attrs.Factory(bytearray)
    frames: list[int] = attrs.Factory(list)  # binary frame sizes, in order
    controls: list[str] = attrs.Factory(list)
    sent: list[dict] = attrs.Factory(list)
    sent_before_terminate: int | None = None  # len(sent) when Terminate came
    index: int = 0  # 0 for the first connection, then 1, 2 ...
    close_code: int | None = None
    close_reason: str = ""
    first_frame_at: float | None = None
    turn_order: int = 0
    turn_start_ms: int = 0

    @property
    def received_ms(self) -> int:
        return int(len(self.audio) / self.bytes_per_ms)


@attrs.define
class AssemblyAIFake:
    api_key: str = "test-key"
    auth_failure: str = "http"  # "http": 401 at the handshake; "close": accept, then close 1008
    partial_every_ms: int = 500
    turn_every_ms: int = 1000
    format_pair: bool = True
    rate_tolerance_ms: float = 1000.0
    close_at_ms: tuple[int, int, str] | None = None
    error_at_ms: tuple[int, int, str] | None = None  # (audio ms, error_code, error text)
    fault_sessions: tuple[int, ...] = (0,)  # which sessions (by index) the faults hit
    answer_end: bool = True  # False: record Terminate, never answer it (a vendor whose final is late)
    sessions: list[FakeSession] = attrs.Factory(list)
    rejected: list[tuple[int, str]] = attrs.Factory(list)

    # --- handshake ----------------------------------------------------------------

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        target = urlsplit(request.path)
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        if target.path != "/v3/ws":
            await self._reject(request, 404, "Not Found")
            return
        authorized = headers.get("authorization") == self.api_key
        if not authorized and self.auth_failure == "http":
            await self._reject(request, 401, "Unauthorized")
            return
        query = {k: v[-1] for k, v in parse_qs(target.query, keep_blank_values=True).items()}
        problem, bytes_per_ms = _check_query(query)
        if problem:
            await self._reject(request, 400, problem)
            return
        ws = await request.accept()
        session = FakeSession(query, headers, bytes_per_ms, query.get("format_turns") == "true",
                              index=len(self.sessions))
        self.sessions.append(session)
        try:
            if not authorized:
                await self._close(ws, session, 1008, "Unauthorized connection: Invalid API key")
                return
            await self._send(ws, session, {"type": "Begin", "id": "de5d9927-fake", "expires_at": 1759796682})
            await self._serve(ws, session)
        except trio_websocket.ConnectionClosed as exc:
            session.close_code = exc.reason.code if exc.reason else 1006
            session.close_reason = (exc.reason.reason if exc.reason else "") or ""

    async def _reject(self, request: trio_websocket.WebSocketRequest, status: int, error: str) -> None:
        self.rejected.append((status, error))
        await request.reject(status, body=orjson.dumps({"error": error}))

    # --- the session --------------------------------------------------------------

    async def _serve(self, ws: trio_websocket.WebSocketConnection, session: FakeSession) -> None:
        next_partial = self.partial_every_ms
        next_turn = self.turn_every_ms
        while True:
            message = await ws.get_message()
            if isinstance(message, bytes):
                now = trio.current_time()
                duration = len(message) / session.bytes_per_ms
                if not 50 <= duration <= 1000:
                    await self._close(ws, session, 3007, f"Input duration violation: {duration:g} ms. "
                                                         "Expected between 50 and 1000 ms")
                    return
                if session.first_frame_at is None:
                    session.first_frame_at = now
                    await self._send(ws, session, {"type": "SpeechStarted", "timestamp": 0})
                session.audio += message
                session.frames.append(len(message))
                received = len(session.audio) / session.bytes_per_ms
                if received > (now - session.first_frame_at) * 1000 + self.rate_tolerance_ms:
                    await self._close(ws, session, 3007, "Audio Transmission Rate Exceeded")
                    return
                ms = session.received_ms
                faulty = session.index in self.fault_sessions
                if self.close_at_ms and faulty and ms >= self.close_at_ms[0]:
                    await self._close(ws, session, self.close_at_ms[1], self.close_at_ms[2])
                    return
                if self.error_at_ms and faulty and ms >= self.error_at_ms[0]:
                    _, code, text = self.error_at_ms
                    await self._send(ws, session, {"type": "Error", "error_code": code, "error": text})
                    await self._close(ws, session, code, text)
                    return
                while ms >= next_turn:
                    await self._end_turn(ws, session, next_turn)
                    next_turn += self.turn_every_ms
                if ms >= next_partial:
                    while next_partial <= ms:
                        next_partial += self.partial_every_ms
                    if ms > session.turn_start_ms:
                        await self._send(ws, session, _turn(session.turn_order, session.turn_start_ms, ms,
                                                            end_of_turn=False, formatted=False))
                continue
            try:
                control = orjson.loads(message)
            except orjson.JSONDecodeError:
                control = None
            kind = control.get("type") if isinstance(control, dict) else None
            if kind not in CONTROL_TYPES:
                await self._close(ws, session, 3006, f"Invalid Message Type: {str(kind)[:40]}")
                return
            session.controls.append(kind)
            if kind == "Terminate":
                session.sent_before_terminate = len(session.sent)
            if kind == "ForceEndpoint" and session.received_ms > session.turn_start_ms:
                await self._end_turn(ws, session, session.received_ms)
            elif kind == "Terminate" and self.answer_end:
                if session.received_ms > session.turn_start_ms:
                    await self._end_turn(ws, session, session.received_ms)
                seconds = session.received_ms / 1000
                await self._send(ws, session, {"type": "Termination", "audio_duration_seconds": math.ceil(seconds),
                                               "session_duration_seconds": math.ceil(seconds)})
                await self._close(ws, session, 1000, "")
                return

    # --- server messages ------------------------------------------------------------

    async def _send(self, ws: trio_websocket.WebSocketConnection, session: FakeSession, body: dict) -> None:
        session.sent.append(body)
        await ws.send_message(orjson.dumps(body).decode())

    async def _close(self, ws: trio_websocket.WebSocketConnection, session: FakeSession, code: int,
                     reason: str) -> None:
        session.close_code, session.close_reason = code, reason
        await ws.aclose(code, reason)

    async def _end_turn(self, ws: trio_websocket.WebSocketConnection, session: FakeSession, end_ms: int) -> None:
        start_ms, order = session.turn_start_ms, session.turn_order
        if not session.format_turns or self.format_pair:
            await self._send(ws, session, _turn(order, start_ms, end_ms, end_of_turn=True, formatted=False))
        if session.format_turns:
            await self._send(ws, session, _turn(order, start_ms, end_ms, end_of_turn=True, formatted=True))
        session.turn_order += 1
        session.turn_start_ms = end_ms


def _turn(order: int, start_ms: int, end_ms: int, *, end_of_turn: bool, formatted: bool) -> dict:
    text = formatted_text(start_ms, end_ms) if formatted else span_text(start_ms, end_ms)
    words = text.split()
    step = (end_ms - start_ms) // len(words)
    return {
        "type": "Turn", "turn_order": order, "turn_is_formatted": formatted, "end_of_turn": end_of_turn,
        "transcript": text, "utterance": text if end_of_turn else "",
        "end_of_turn_confidence": 0.9 if end_of_turn else 0.05,
        "words": [{"text": w, "start": start_ms + i * step,
                   "end": end_ms if i == len(words) - 1 else start_ms + (i + 1) * step,
                   "confidence": 0.9, "word_is_final": end_of_turn or i < len(words) - 1}
                  for i, w in enumerate(words)],
    }


def _check_query(query: dict[str, str]) -> tuple[str, float]:
    model = query.get("speech_model")
    if not model:
        return "speech_model is required", 0
    if model not in MODELS:
        return f"unknown speech_model {model}", 0
    encoding = query.get("encoding", "pcm_s16le")
    if encoding not in ("pcm_s16le", "pcm_mulaw"):
        return f"unsupported encoding {encoding}", 0
    rate = query.get("sample_rate", "16000")
    if not rate.isdigit() or not 8000 <= int(rate) <= 48000:
        return f"bad sample_rate {rate}", 0
    if query.get("format_turns", "false") not in ("true", "false"):
        return "format_turns must be true or false", 0
    for name in ("end_of_turn_confidence_threshold", "vad_threshold"):
        if name in query:
            try:
                if not 0 <= float(query[name]) <= 1:
                    return f"{name} must be between 0 and 1", 0
            except ValueError:
                return f"{name} must be a number", 0
    for name in ("min_turn_silence", "max_turn_silence", "inactivity_timeout"):
        if name in query and not query[name].isdigit():
            return f"{name} must be an integer", 0
    if "keyterms_prompt" in query:
        try:
            terms = orjson.loads(query["keyterms_prompt"])
        except orjson.JSONDecodeError:
            terms = None
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            return "keyterms_prompt must be a JSON list of strings", 0
    width = 1 if encoding == "pcm_mulaw" else 2
    return "", int(rate) * width / 1000
