"""Mistral Voxtral realtime transcription, sans I/O.

```
open ─▶ session.created ─▶ [we send session.update] ─▶ session.updated ─▶ streaming:
        input_audio.append* ─▶ transcription.text.delta* (+ language, segment, turn.*)
finalize: input_audio.flush + input_audio.end ─▶ … transcription.done ─▶ Finalized ─▶ close
```

Configuration (``providers.session_update``): every session field must be set before
the first audio, so audio is held in the codec (in order, at most ``MAX_HELD_MS``) until
``session.updated`` confirms ours; ``data_to_send`` then releases it.  The session update carries the audio format
(``pcm_mulaw``/8000 for Twilio's audio as is, or ``pcm_s16le``/RATE) plus the options
the client chose.  Appends are split at ``MAX_APPEND_BYTES`` decoded bytes.

Transcripts: deltas are append-only; each becomes a ``PartialTranscript`` of all the
text since the last final.  ``transcription.done`` is the ``FinalTranscript``: the
first one of a session carries the whole transcript (its ``text``, timed by its
``segments``); should the server ever send more than one, later ones are taken as the
deltas since the previous (whatever their ``text`` says, so nothing is repeated).
Without vendor times, spans come from ``AudioSpanTracker``.

End: ``finalize`` sends ``input_audio.flush`` and ``input_audio.end`` (after any held
audio) and the next ``transcription.done`` yields ``Finalized`` (as the SDK's
``transcribe_stream`` does).  A normal close (1000) after ``end`` with no ``done``
delivers the deltas received as the final.  No audio at all: ``[Finalized()]`` at once.

Errors: ``{"type": "error", "error": {"message": …, "code": int}}`` → ``ProviderFailed``;
the type comes from the code (``ERROR_CODES``; 3804 is the server's 30 s
no-progress timeout), and an error answering our ``session.update`` is a
``ProviderConfigError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..base import MULAW_8K, AudioFormat
from ..errors import (
    ProviderAuthError,
    ProviderConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloadedError,
    ProviderQuotaError,
    ProviderStalledError,
)
from ..events import Finalized, ProviderClosed, ProviderEvent, ProviderFailed
from ..jsonwire import WireObject, dumps, parse_object
from ..session_update import SessionUpdateCodec

__all__ = ["MistralCodec", "ERROR_CODES", "MAX_APPEND_BYTES", "MAX_HELD_MS", "vendor_audio_format"]

PROVIDER = "mistral"
#: Largest decoded audio one ``input_audio.append`` may carry.
MAX_APPEND_BYTES = 262_144
#: Audio held while the session is being configured; beyond it the vendor is stalled.
MAX_HELD_MS = 5_000

ERROR_CODES: dict[int, type[ProviderError]] = {
    400: ProviderConfigError,
    401: ProviderAuthError,
    402: ProviderQuotaError,
    403: ProviderAuthError,
    404: ProviderConfigError,
    422: ProviderConfigError,
    429: ProviderOverloadedError,
    3804: ProviderStalledError,
}


def vendor_audio_format(fmt: AudioFormat) -> dict[str, Any]:
    """The session's ``audio_format`` object for ``fmt``."""
    if fmt == MULAW_8K:
        return {"encoding": "pcm_mulaw", "sample_rate": 8000}
    if fmt.encoding == "pcm16" and 8000 <= fmt.sample_rate <= 96000:
        return {"encoding": "pcm_s16le", "sample_rate": fmt.sample_rate}
    raise ValueError(f"Mistral takes mulaw/8000 or pcm16 at 8000-96000 Hz, not {fmt}")


class MistralCodec(SessionUpdateCodec):
    """``SttCodec`` for ``/v1/audio/transcriptions/realtime``.  ``session``: extra
    ``session.update`` fields (``target_streaming_delay_ms``, ``language``, ``context_bias``).
    ``send_audio`` raises ``ProviderStalledError`` when more than ``MAX_HELD_MS`` of audio
    waits for a session that is not configured yet."""

    def __init__(self, audio_format: AudioFormat = MULAW_8K, *, session: Mapping[str, Any] | None = None) -> None:
        update = dumps({"type": "session.update",
                        "session": {"audio_format": vendor_audio_format(audio_format), **(session or {})}})
        super().__init__(PROVIDER, audio_format, update, append_type="input_audio.append",
                         max_append_bytes=MAX_APPEND_BYTES, max_held_ms=MAX_HELD_MS)
        self._text = ""  # deltas since the last final
        self._dones = 0
        self._end_sent = False

    # --- server messages ------------------------------------------------------------

    def receive(self, message: str | bytes) -> list[ProviderEvent]:
        obj = parse_object(PROVIDER, message)
        kind = obj.string("type")
        if kind == "transcription.text.delta":
            return self._delta(obj.string("text"))
        if kind == "transcription.done":
            return self._done(obj)
        if kind == "session.created":
            return self._created(obj.object("session").optional_string("request_id") or "")
        if kind == "session.updated":
            obj.object("session")
            return self._updated()
        if kind == "error":
            return [ProviderFailed(self._error(obj.object("error")))]
        return []  # transcription.language / .segment, turn.*, and whatever comes next

    def connection_closed(self, code: int, reason: str) -> list[ProviderEvent]:
        events: list[ProviderEvent] = []
        if self._finalized:
            events.append(Finalized())
        elif self._end_sent and code == 1000:  # closed after end without a done: keep the deltas
            events += self._final(self._text.strip())
            self._finalized = True
            events.append(Finalized())
        events.append(ProviderClosed(code, reason))
        return events

    # --- internals ------------------------------------------------------------------

    def _end(self) -> list[ProviderEvent]:
        self._outbox.append('{"type":"input_audio.flush"}')
        self._outbox.append('{"type":"input_audio.end"}')
        self._end_sent = True
        return []

    def _delta(self, text: str) -> list[ProviderEvent]:
        self._text += text
        current = self._text.strip()
        return [self.tracker.partial(current)] if current else []

    def _done(self, obj: WireObject) -> list[ProviderEvent]:
        text = obj.string("text")
        starts: list[int] = []
        ends: list[int] = []
        for segment in obj.objects("segments"):
            segment.optional_string("text")
            start, end = segment.optional_seconds_ms("start"), segment.optional_seconds_ms("end")
            if start is not None:
                starts.append(start)
            if end is not None:
                ends.append(end)
        deltas = self._text.strip()
        first = self._dones == 0
        self._dones += 1
        self._text = ""
        if first or not deltas:
            events = self._final(text.strip(), min(starts) if first and starts else None,
                                 max(ends) if first and ends else None)
        else:
            events = self._final(deltas)
        if self._end_sent and not self._finalized:
            self._finalized = True
            events.append(Finalized())
        return events

    def _final(self, text: str, start_ms: int | None = None, end_ms: int | None = None) -> list[ProviderEvent]:
        final = self.tracker.final(text, start_ms, end_ms)
        return [final] if text else []

    def _error(self, error: WireObject) -> ProviderError:
        code = error.data.get("code")
        code = code if type(code) is int else None
        text = error.text("message", "detail") or "no message"
        cls = ERROR_CODES.get(code) if code is not None else None
        if cls is None:
            cls = ProviderConfigError if self._phase == "configuring" else ProviderConnectionError
        detail = f"error {code}: {text}" if code is not None else f"error: {text}"
        return cls(PROVIDER, detail, vendor_type=str(code) if code is not None else "error")
