"""AssemblyAI Universal Streaming v3 (``/v3/ws``) as a sans-I/O codec.

```
open ─▶ Begin ─▶ (audio ─▶ Turn*)* ─▶ Terminate ─▶ Turn* ─▶ Termination ─▶ close 1000
```

Audio: raw bytes in binary frames, each 50-1000 ms long (AssemblyAI closes with 3007
otherwise).  The runtime sends 100 ms batches; the codec only has to fix the edges:
a piece shorter than 50 ms is held and sent in front of the next one (merging it into
the *previous* frame would mean holding every frame back, i.e. 100 ms more latency),
and one still held at ``finalize`` (the call's short last batch) is padded with
silence (mu-law 0xFF, PCM zeros) up to 50 ms.  Longer pieces are split, never
leaving a tail under 50 ms.  Pacing to real time is the session's job (client.py).

Mapping: ``Begin`` → ``SessionStarted``; ``Turn`` with ``end_of_turn: false`` →
``PartialTranscript``; with ``end_of_turn: true`` → ``FinalTranscript`` once per
``turn_order``.  Spans are the words' ``start``/``end`` (ms); without words, the audio
sent so far.  ``format_turns``: AssemblyAI may send an unformatted end-of-turn and
then a formatted one for the same ``turn_order``, or only a formatted one.  Rule: the
turn is delivered once, formatted if possible — an unformatted end of turn is shown as
a partial and held; the formatted one replaces it; if a later turn, ``Termination`` or
the close comes first, the held text is delivered as the final.
``Termination`` after ``Terminate`` → ``Finalized``.  ``Error`` and close codes are
typed by ``error_for_code``.  Other types (``SpeechStarted``, ``Warning``,
``Heartbeat`` ...) are ignored; malformed messages raise ``ProviderProtocolError``.
"""

from __future__ import annotations

import math

from ..base import MULAW_8K, AudioFormat, AudioSpanTracker
from ..codec import Outbox, close_events
from ..errors import (
    ProviderAuthError,
    ProviderConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloadedError,
    ProviderProtocolError,
    error_for_close_code,
)
from ..events import Finalized, FinalTranscript, PartialTranscript, ProviderEvent, ProviderFailed, SessionStarted
from ..jsonwire import WireObject, parse_object, short

__all__ = [
    "PROVIDER",
    "TERMINATE",
    "KEEPALIVE",
    "FORCE_ENDPOINT",
    "MIN_FRAME_MS",
    "MAX_FRAME_MS",
    "AssemblyAICodec",
    "error_for_code",
]

PROVIDER = "assemblyai"
TERMINATE = '{"type":"Terminate"}'
KEEPALIVE = '{"type":"KeepAlive"}'
FORCE_ENDPOINT = '{"type":"ForceEndpoint"}'
MIN_FRAME_MS = 50
MAX_FRAME_MS = 1000


# ----------------------------------------------------------------------- errors

_CODES: dict[int, tuple[type[ProviderError], str]] = {
    1008: (ProviderAuthError, "not authorized (check ASSEMBLYAI_API_KEY and the account)"),
    3005: (ProviderConnectionError, "session cancelled by a server error"),
    3006: (ProviderConfigError, "invalid message (a client bug or an unsupported parameter)"),
    3007: (ProviderConfigError, "audio frame outside 50-1000 ms, or sent faster than real time"),
    3008: (ProviderConnectionError, "session expired (maximum duration reached)"),
    3009: (ProviderOverloadedError, "too many concurrent sessions"),
}


def error_for_code(code: int | None, text: str = "", *, closed: bool = False) -> ProviderError:
    """Type an AssemblyAI close code or ``Error.error_code``.  1008 is also used for the
    new-session rate limit ("Too many concurrent sessions"): that one is retryable."""
    text = short(text)
    lowered = text.lower()
    if code == 1008 and ("concurren" in lowered or "too many" in lowered or "rate" in lowered):
        return ProviderOverloadedError(PROVIDER, _detail(code, text, "rate limited", closed), code=code,
                                       vendor_type=str(code))
    known = _CODES.get(code) if code is not None else None
    if known is None:
        if closed and code is not None:
            return error_for_close_code(PROVIDER, code, text)
        return ProviderConnectionError(PROVIDER, _detail(code, text, "server error", closed), code=code,
                                       vendor_type=None if code is None else str(code))
    error_type, meaning = known
    return error_type(PROVIDER, _detail(code, text, meaning, closed), code=code, vendor_type=str(code))


def _error_for_close(code: int, reason: str) -> ProviderError:
    return error_for_code(code, reason, closed=True)


def _detail(code: int | None, text: str, meaning: str, closed: bool) -> str:
    head = f"connection closed with code {code}" if closed else f"error {code}" if code is not None else "error"
    return f"{head}: {text or meaning}" + (f" ({meaning})" if text and meaning not in text else "")


# ----------------------------------------------------------------------- codec


class AssemblyAICodec(Outbox):
    """``SttCodec`` for ``/v3/ws``.  ``format_turns`` must match the URL's."""

    def __init__(self, audio_format: AudioFormat = MULAW_8K, *, format_turns: bool = False) -> None:
        self.format_turns = format_turns
        sample = 1 if audio_format.encoding == "mulaw" else 2
        per_ms = audio_format.bytes_per_ms
        low = math.ceil(MIN_FRAME_MS * per_ms)
        self.min_frame = low + (-low) % sample  # bytes, whole samples
        high = int(MAX_FRAME_MS * per_ms)
        self.max_frame = high - high % sample
        self._silence = b"\xff" if audio_format.encoding == "mulaw" else b"\x00"
        self._tracker = AudioSpanTracker(audio_format)
        super().__init__()
        self._pending = b""  # audio under MIN_FRAME_MS, waiting for more
        self.padded_bytes = 0  # silence added to the last frame
        self.terminating = False
        self.finalized = False
        self._last_final_turn = -1
        self._held: tuple[int, FinalTranscript] | None = None  # unformatted end of turn

    # --- commands ---------------------------------------------------------------

    def send_audio(self, audio: bytes) -> None:
        if self.terminating:
            raise RuntimeError("assemblyai: audio after finalize")
        if self._pending:
            audio = self._pending + audio
            self._pending = b""
        size = len(audio)
        if size < self.min_frame:
            self._pending = audio
            return
        if size <= self.max_frame:
            self._emit(audio)
            return
        view = memoryview(audio)
        start = 0
        while size - start > self.max_frame:
            rest = size - start
            take = self.max_frame if rest - self.max_frame >= self.min_frame else rest - self.min_frame
            self._emit(bytes(view[start:start + take]))
            start += take
        self._emit(bytes(view[start:]))

    def _emit(self, frame: bytes) -> None:
        self._tracker.add(len(frame))
        self._outbox.append(frame)

    def finalize(self) -> None:
        if self.terminating:
            return
        if self._pending:
            pad = self.min_frame - len(self._pending)
            self.padded_bytes += pad
            self._tracker.add(len(self._pending))  # spans count call audio, not the padding
            self._outbox.append(self._pending + self._silence * pad)
            self._pending = b""
        self.terminating = True
        self._outbox.append(TERMINATE)

    def keepalive(self) -> None:
        if not self.terminating:
            self._outbox.append(KEEPALIVE)

    def force_endpoint(self) -> None:
        """End the current turn now (the vendor answers with its final ``Turn``)."""
        if not self.terminating:
            self._outbox.append(FORCE_ENDPOINT)

    # --- server messages --------------------------------------------------------

    def receive(self, message: str | bytes) -> list[ProviderEvent]:
        obj = parse_object(PROVIDER, message)
        kind = obj.string("type")
        if kind == "Turn":
            return self._turn(obj)
        if kind == "Begin":
            return [SessionStarted(obj.string("id"))]
        if kind == "Termination":
            events = self._release_held()
            if self.terminating and not self.finalized:
                self.finalized = True
                events.append(Finalized())
            return events
        if kind == "Error":
            code = obj.optional_integer("error_code")
            text = obj.optional_string("error", "") or ""
            return [ProviderFailed(error_for_code(code, text))]
        return []  # SpeechStarted, Warning, Heartbeat, Silence, and types added later

    def connection_closed(self, code: int, reason: str) -> list[ProviderEvent]:
        events = self._release_held()  # a vendor-ended turn is committed whatever follows
        events += close_events(code, reason, ending=self.terminating, finalized=self.finalized,
                               normal=(1000,), error=_error_for_close)
        self.finalized = self.finalized or self.terminating and code == 1000  # the end of Terminate
        return events

    def _release_held(self) -> list[ProviderEvent]:
        if self._held is None:
            return []
        turn_order, final = self._held
        self._held = None
        self._last_final_turn = max(self._last_final_turn, turn_order)
        return [final]

    def _turn(self, obj: WireObject) -> list[ProviderEvent]:
        turn_order = obj.integer("turn_order")
        end_of_turn = obj.boolean("end_of_turn")
        text = obj.string("transcript")
        formatted = obj.optional_boolean("turn_is_formatted")
        start_ms = end_ms = None
        for word in obj.objects("words"):
            word.optional_string("text")
            word_start = word.number_ms("start")
            word_end = word.number_ms("end")
            start_ms = word_start if start_ms is None else min(start_ms, word_start)
            end_ms = word_end if end_ms is None else max(end_ms, word_end)
        if turn_order < 0:
            raise ProviderProtocolError(PROVIDER, "Turn.turn_order: negative")

        events: list[ProviderEvent] = []
        if self._held is not None and self._held[0] != turn_order:
            events += self._release_held()  # the formatted version never came
        if turn_order <= self._last_final_turn or not text.strip():
            return events  # a turn already delivered, or nothing said yet
        if not end_of_turn:
            events.append(self._tracker.partial(text, start_ms, end_ms))
            return events
        final = self._tracker.final(text, start_ms, end_ms)
        if self.format_turns and not formatted:
            self._held = (turn_order, final)  # wait for the formatted text of this turn
            events.append(PartialTranscript(final.text, final.start_ms, final.end_ms))
            return events
        self._held = None
        self._last_final_turn = turn_order
        events.append(final)
        return events
