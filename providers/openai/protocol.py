"""OpenAI Realtime API, transcription sessions (GA), sans I/O.

```
open ─▶ session.created ─▶ [we send session.update] ─▶ session.updated ─▶ streaming:
        input_audio_buffer.append*
        (server VAD) speech_started ─▶ speech_stopped ─▶ committed(item) ─▶ …delta* ─▶ …completed
finalize: input_audio_buffer.commit (≥ 100 ms uncommitted) ─▶ committed ─▶ … every committed
          item completed (or failed) ─▶ Finalized ─▶ close
```

Configuration (``providers.session_update``): audio is held in the codec (in order, at most ``MAX_HELD_MS``) until
``session.updated`` confirms our ``session.update`` (``type: transcription``, format
``audio/pcmu`` for Twilio's audio as is, or ``audio/pcm`` at 24 kHz).

Transcripts: ``conversation.item.input_audio_transcription.delta``s accumulate per
``item_id`` into ``PartialTranscript``s of that item's text so far;
``...completed`` is its ``FinalTranscript``.  Finals are released in commit order
(``input_audio_buffer.committed``), since items are transcribed concurrently and may
complete out of order; ``...failed`` releases its item with no text.  Spans are the
server VAD's ``audio_start_ms``/``audio_end_ms`` when it gave them, else
``AudioSpanTracker``'s.

End: ``finalize`` commits when at least ``MIN_COMMIT_MS`` of audio is past the last
commit (the server refuses less with ``input_audio_buffer_commit_empty``, which is
also what a commit racing the VAD's own gets: both are tolerated), then ``Finalized``
follows once every committed item has completed; with nothing pending it is returned
at once.

Errors: most ``error`` events leave the session usable and are ignored.  Those that do
not become ``ProviderFailed``: bad key, quota, rate limit, expired session, and any
error answering our ``session.update``.  A close with code 3000 (OpenAI's, reason
``<type>.<code>``) is mapped the same way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import attrs

from ..base import MULAW_8K, AudioFormat
from ..errors import (
    ProviderAuthError,
    ProviderConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloadedError,
    ProviderQuotaError,
)
from ..events import Finalized, ProviderClosed, ProviderEvent, ProviderFailed
from ..jsonwire import WireObject, dumps, parse_object
from ..session_update import SessionUpdateCodec

__all__ = ["OpenAICodec", "ERROR_CODES", "MIN_COMMIT_MS", "MAX_HELD_MS", "vendor_audio_format"]

PROVIDER = "openai"
MIN_COMMIT_MS = 100
MAX_HELD_MS = 5_000
#: Decoded audio per append (the server takes up to 15 MiB of JSON per event).
MAX_APPEND_BYTES = 8 * 1024 * 1024
UPDATE_EVENT_ID = "earpiece_session_update"
COMMIT_EVENT_ID = "earpiece_final_commit"
CLOSE_CODE_ERROR = 3000
COMMIT_EMPTY = "input_audio_buffer_commit_empty"

#: ``error.code`` (or ``error.type``) values that end the session's usefulness.
ERROR_CODES: dict[str, type[ProviderError]] = {
    "invalid_api_key": ProviderAuthError,
    "authentication_error": ProviderAuthError,
    "insufficient_quota": ProviderQuotaError,
    "rate_limit_exceeded": ProviderOverloadedError,
    "rate_limit_error": ProviderOverloadedError,
    "session_expired": ProviderConnectionError,
}
ITEM = "conversation.item.input_audio_transcription."


def vendor_audio_format(fmt: AudioFormat) -> dict[str, Any]:
    """The session's ``audio.input.format`` for ``fmt``."""
    if fmt == MULAW_8K:
        return {"type": "audio/pcmu"}
    if fmt == AudioFormat("pcm16", 24000):
        return {"type": "audio/pcm", "rate": 24000}
    raise ValueError(f"OpenAI takes mulaw/8000 or pcm16/24000, not {fmt}")


@attrs.define
class _Item:
    text: str = ""
    start_ms: int | None = None
    end_ms: int | None = None
    committed: bool = False
    done: bool = False
    final: str | None = None


class OpenAICodec(SessionUpdateCodec):
    """``SttCodec`` for ``/v1/realtime?intent=transcription``.  ``audio_input``: the
    ``session.audio.input`` fields besides ``format`` (``transcription``,
    ``turn_detection``, ``noise_reduction``).  ``send_audio`` raises
    ``ProviderStalledError`` when more than ``MAX_HELD_MS`` of audio waits for a session
    that is not configured yet."""

    def __init__(self, audio_format: AudioFormat = MULAW_8K, *,
                 audio_input: Mapping[str, Any] | None = None) -> None:
        update = dumps({"type": "session.update", "event_id": UPDATE_EVENT_ID, "session": {
            "type": "transcription",
            "audio": {"input": {"format": vendor_audio_format(audio_format), **(audio_input or {})}}}})
        super().__init__(PROVIDER, audio_format, update, append_type="input_audio_buffer.append",
                         max_append_bytes=MAX_APPEND_BYTES, max_held_ms=MAX_HELD_MS)
        self._items: dict[str, _Item] = {}
        self._order: deque[str] = deque()  # committed items, oldest first, until released
        self._released: set[str] = set()  # items whose final went out: late events are ignored
        self._committed_until_ms = 0  # session audio the server has committed
        self._end_decided = False
        self._awaiting_commit = False
        self._failed = False

    # --- server messages ------------------------------------------------------------

    def receive(self, message: str | bytes) -> list[ProviderEvent]:
        obj = parse_object(PROVIDER, message)
        kind = obj.string("type")
        if kind.startswith(ITEM):
            return self._item_event(kind.removeprefix(ITEM), obj)
        if kind == "input_audio_buffer.committed":
            return self._committed(obj.string("item_id"))
        if kind == "input_audio_buffer.speech_started":
            self._item(obj.string("item_id")).start_ms = obj.optional_ms("audio_start_ms")
            return []
        if kind == "input_audio_buffer.speech_stopped":
            self._item(obj.string("item_id")).end_ms = obj.optional_ms("audio_end_ms")
            return []
        if kind == "error":
            return self._error(obj.object("error"))
        if kind == "session.created":
            return self._created(obj.object("session").optional_string("id") or "")
        if kind == "session.updated":
            obj.object("session")
            return self._updated()
        return []  # cleared, conversation.item.*, rate limits, and whatever comes next

    def connection_closed(self, code: int, reason: str) -> list[ProviderEvent]:
        events: list[ProviderEvent] = []
        if self._finalized:
            events.append(Finalized())
        elif code == CLOSE_CODE_ERROR and not self._failed:
            vendor_type, _, vendor_code = reason.partition(".")
            cls = ERROR_CODES.get(vendor_code) or ERROR_CODES.get(vendor_type) or ProviderConnectionError
            events.append(ProviderFailed(cls(PROVIDER, f"closed with {code}: {reason}", code=code,
                                             vendor_type=vendor_code or vendor_type or None)))
        events.append(ProviderClosed(code, reason))
        return events

    # --- internals: the end of the audio ------------------------------------------------

    def _end(self) -> list[ProviderEvent]:
        self._end_decided = True
        if self.tracker.sent_ms - self._committed_until_ms >= MIN_COMMIT_MS:
            self._outbox.append(dumps({"type": "input_audio_buffer.commit", "event_id": COMMIT_EVENT_ID}))
            self._awaiting_commit = True
        return self._maybe_finalized()

    def _maybe_finalized(self) -> list[ProviderEvent]:
        if (self._finalizing and self._end_decided and not self._awaiting_commit and not self._order
                and not self._finalized):
            self._finalized = True
            return [Finalized()]
        return []

    # --- internals: items ---------------------------------------------------------------

    def _item(self, item_id: str) -> _Item:
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = _Item()
        return item

    def _committed(self, item_id: str) -> list[ProviderEvent]:
        if item_id in self._released:
            return []
        item = self._item(item_id)
        if item.committed:
            return []
        item.committed = True
        if item.start_ms is None:
            item.start_ms = self.tracker.committed_ms
        if item.end_ms is None:
            item.end_ms = self.tracker.sent_ms
        self._committed_until_ms = max(self._committed_until_ms, item.end_ms)
        self._awaiting_commit = False
        self._order.append(item_id)
        return self._release()

    def _item_event(self, kind: str, obj: WireObject) -> list[ProviderEvent]:
        if kind not in ("delta", "completed", "failed"):
            return []  # .segment (diarization) and whatever comes next
        item_id = obj.string("item_id")
        if item_id in self._released:
            return []
        if kind == "delta":
            piece = obj.string("delta")
            item = self._item(item_id)
            item.text += piece
            text = item.text.strip()
            if not text or item.done:
                return []
            return [self.tracker.partial(text, item.start_ms, item.end_ms)]
        if kind == "completed":
            final: str | None = obj.string("transcript")
        else:
            obj.optional_object("error")
            final = None
        item = self._item(item_id)
        item.done, item.final = True, final
        return self._release(item_id)

    def _release(self, item_id: str | None = None) -> list[ProviderEvent]:
        """Finals of completed items in commit order; an item never seen committed goes at once."""
        events: list[ProviderEvent] = []
        if item_id is not None and not self._items[item_id].committed:
            self._released.add(item_id)
            events += self._final(self._items.pop(item_id))
        while self._order and self._items[self._order[0]].done:
            released = self._order.popleft()
            self._released.add(released)
            events += self._final(self._items.pop(released))
        return events + self._maybe_finalized()

    def _final(self, item: _Item) -> list[ProviderEvent]:
        if not item.final or not item.final.strip():
            return []
        return [self.tracker.final(item.final.strip(), item.start_ms, item.end_ms)]

    # --- internals: errors --------------------------------------------------------------

    def _error(self, error: WireObject) -> list[ProviderEvent]:
        code = error.optional_string("code") or ""
        kind = error.optional_string("type") or ""
        event_id = error.optional_string("event_id")
        text = error.text("message") or "no message"
        if code == COMMIT_EMPTY:  # nothing (left) to commit: the VAD took it, or it was short
            self._awaiting_commit = False
            return self._maybe_finalized()
        cls = ERROR_CODES.get(code) or ERROR_CODES.get(kind)
        if cls is None and (event_id == UPDATE_EVENT_ID or self._phase == "configuring"):
            cls = ProviderConfigError
        if cls is None:
            return []  # the session goes on (e.g. a bad client event we did not send)
        self._failed = True
        detail = f"{kind or 'error'}.{code}: {text}" if code else f"{kind or 'error'}: {text}"
        return [ProviderFailed(cls(PROVIDER, detail, vendor_type=code or kind or None))]
