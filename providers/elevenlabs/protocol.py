"""ElevenLabs Scribe v2 Realtime, sans I/O.

```
open ─▶ session_started ─▶ (partial_transcript
                            | committed_transcript [─▶ committed_transcript_with_timestamps])*
    finalize: commit chunk ─▶ committed … ─▶ Finalized ─▶ close 1000
```

Audio goes out as it comes: one ``input_audio_chunk`` per batch, the batch's bytes
base64'd as they are (``ulaw_8000`` by default; the configuration lives in the URL, so
there is nothing to wait for).

Transcripts: ``partial_transcript.text`` is the whole uncommitted segment →
``PartialTranscript``.  A commit (the server's VAD, or ours) yields
``committed_transcript`` and, with ``include_timestamps``, then
``committed_transcript_with_timestamps`` with the same text: the pair becomes ONE
``FinalTranscript`` — from the timestamps message, spanning its words' times, when
timestamps are on; from ``committed_transcript`` otherwise.  (If a second
``committed_transcript`` or the close arrives before the pair is complete, the first
is delivered on its own, so text is never lost.)  Without vendor times, spans come
from ``AudioSpanTracker``.

End: ``finalize`` sends the commit chunk ``{"message_type": "input_audio_chunk",
"audio_base_64": "", "commit": true, "sample_rate": …}`` and the next completed commit
(an empty ``committed_transcript`` included) yields ``Finalized``.  With no audio sent
since our last commit (in practice: none this session) it returns ``[Finalized()]`` at
once and sends nothing.

Errors: ``{"message_type": "<error type>", "error": "<text>"}`` (also ``message`` /
``details``; and ``message_type: "error"`` with the type in ``error``) become
``ProviderFailed`` with the type from ``ERROR_TYPES``; the server then closes.
"""

from __future__ import annotations

from ..base import MULAW_8K, AudioFormat, AudioSpanTracker
from ..codec import Outbox
from ..errors import (
    ProviderAuthError,
    ProviderConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloadedError,
    ProviderQuotaError,
)
from ..events import Finalized, ProviderClosed, ProviderEvent, ProviderFailed, SessionStarted
from ..jsonwire import WireObject, b64, dumps, parse_object

__all__ = ["ElevenLabsCodec", "ERROR_TYPES", "vendor_audio_format"]

PROVIDER = "elevenlabs"

#: Every error ``message_type`` of SDK 2.78.0 (and the legacy names) → our error type.
ERROR_TYPES: dict[str, type[ProviderError]] = {
    "auth_error": ProviderAuthError,
    "unaccepted_terms": ProviderAuthError,
    "unaccepted_terms_error": ProviderAuthError,
    "quota_exceeded": ProviderQuotaError,
    "quota_exceeded_error": ProviderQuotaError,
    "rate_limited": ProviderOverloadedError,
    "queue_overflow": ProviderOverloadedError,
    "resource_exhausted": ProviderOverloadedError,
    "commit_throttled": ProviderOverloadedError,
    "input_error": ProviderConfigError,
    "invalid_request": ProviderConfigError,
    "chunk_size_exceeded": ProviderConfigError,
    "transcriber_error": ProviderConnectionError,
    "session_time_limit_exceeded": ProviderConnectionError,
    "insufficient_audio_activity": ProviderConnectionError,
    "error": ProviderConnectionError,
}


def vendor_audio_format(fmt: AudioFormat) -> str:
    """The ``audio_format`` query value for ``fmt`` (``ulaw_8000``, ``pcm_16000`` ...)."""
    if fmt == MULAW_8K:
        return "ulaw_8000"
    if fmt.encoding == "pcm16" and fmt.sample_rate in (8000, 16000, 22050, 24000, 44100, 48000):
        return f"pcm_{fmt.sample_rate}"
    raise ValueError(f"ElevenLabs takes mulaw/8000 or pcm16 at 8000-48000 Hz, not {fmt}")


class ElevenLabsCodec(Outbox):
    """``SttCodec`` for ``/v1/speech-to-text/realtime``.  ``include_timestamps`` must
    match the URL's ``include_timestamps`` (it decides which commit message counts)."""

    def __init__(self, audio_format: AudioFormat = MULAW_8K, *, include_timestamps: bool = True) -> None:
        vendor_audio_format(audio_format)  # refuse what the vendor cannot take
        self.audio_format = audio_format
        self.include_timestamps = include_timestamps
        self.tracker = AudioSpanTracker(audio_format)
        rate = audio_format.sample_rate
        self._audio_head = '{"message_type":"input_audio_chunk","audio_base_64":"'
        self._audio_tail = f'","commit":false,"sample_rate":{rate}}}'
        self._commit = dumps({"message_type": "input_audio_chunk", "audio_base_64": "", "commit": True,
                              "sample_rate": rate})
        super().__init__()
        # Bytes sent since OUR last commit.  A server (VAD) commit does not reset it: its
        # message may arrive after later audio went out, and then skipping the final
        # commit would lose that audio's text.
        self._uncommitted = 0
        self._pending: str | None = None  # committed_transcript awaiting its timestamps twin
        self._finalizing = False
        self._awaiting_commit = False
        self._finalized = False

    # --- commands -------------------------------------------------------------------

    def send_audio(self, audio: bytes) -> None:
        if self._finalizing:
            raise RuntimeError("audio after finalize")
        if not audio:
            return
        self._outbox.append(self._audio_head + b64(audio) + self._audio_tail)
        self.tracker.add(len(audio))
        self._uncommitted += len(audio)

    def finalize(self) -> list[ProviderEvent] | None:
        if self._finalizing:
            return None
        self._finalizing = True
        if self._uncommitted:
            self._outbox.append(self._commit)
            self._uncommitted = 0
            self._awaiting_commit = True
            return None
        if self._pending is not None:  # its twin is on the way
            self._awaiting_commit = True
            return None
        self._finalized = True
        return [Finalized()]

    def keepalive(self) -> None:
        """An empty, uncommitted chunk (what livekit sends when idle)."""
        self._outbox.append(self._audio_head + self._audio_tail)

    # --- server messages ------------------------------------------------------------

    def receive(self, message: str | bytes) -> list[ProviderEvent]:
        obj = parse_object(PROVIDER, message)
        kind = obj.string("message_type")
        if kind == "partial_transcript":
            return [self.tracker.partial(obj.string("text"))]
        if kind == "committed_transcript":
            return self._committed(obj.string("text"))
        if kind == "committed_transcript_with_timestamps":
            if not self.include_timestamps:  # its twin was the final already
                return []
            return self._committed_with_timestamps(obj)
        if kind == "session_started":
            return [SessionStarted(obj.optional_string("session_id") or "")]
        if kind in ERROR_TYPES or kind.endswith("_error"):
            return [ProviderFailed(self._error(kind, obj))]
        return []  # warning, entities, diarization ... and whatever comes next

    def connection_closed(self, code: int, reason: str) -> list[ProviderEvent]:
        events: list[ProviderEvent] = []
        if self._pending is not None:  # the twin never came: the text did
            events += self._final(self._pending)
            self._pending = None
            events += self._commit_done()
        elif self._finalized:
            events.append(Finalized())
        events.append(ProviderClosed(code, reason))
        return events

    # --- internals ------------------------------------------------------------------

    def _committed(self, text: str) -> list[ProviderEvent]:
        if not self.include_timestamps:
            return self._final(text) + self._commit_done()
        events: list[ProviderEvent] = []
        if self._pending is not None:  # two commits in a row: deliver the first as is
            events += self._final(self._pending)
        if not text.strip():  # nothing to time; a commit over silence
            self._pending = None
            return events + self._commit_done()
        self._pending = text
        return events

    def _committed_with_timestamps(self, obj: WireObject) -> list[ProviderEvent]:
        text = obj.string("text")
        starts: list[int] = []
        ends: list[int] = []
        for word in obj.objects("words"):
            kind = word.optional_string("type", "word")
            start, end = word.optional_seconds_ms("start"), word.optional_seconds_ms("end")
            if kind == "spacing":
                continue
            if start is not None:
                starts.append(start)
            if end is not None:
                ends.append(end)
        self._pending = None
        start_ms = min(starts) if starts else None
        end_ms = max(ends) if ends else None
        return self._final(text, start_ms, end_ms) + self._commit_done()

    def _final(self, text: str, start_ms: int | None = None, end_ms: int | None = None) -> list[ProviderEvent]:
        final = self.tracker.final(text, start_ms, end_ms)  # moves the committed mark
        return [final] if text.strip() else []

    def _commit_done(self) -> list[ProviderEvent]:
        if self._awaiting_commit and not self._finalized:
            self._awaiting_commit = False
            self._finalized = True
            return [Finalized()]
        return []

    @staticmethod
    def _error(kind: str, obj: WireObject) -> ProviderError:
        text = obj.text("error", "message", "details")
        if kind == "error" and text in ERROR_TYPES:  # the skills doc's form: the type in "error"
            kind, text = text, obj.text("message", "details")
        cls = ERROR_TYPES.get(kind, ProviderConnectionError)
        return cls(PROVIDER, f"{kind}: {text}" if text else kind, vendor_type=kind)

