"""Deepgram Flux (``/v2/listen``, ``flux-*`` models) as a sans-I/O codec.

```
open ─▶ Connected ─▶ (audio ─▶ TurnInfo*)* ─▶ finalize:
  turn open: ForceEndTurn ─▶ EndOfTurn (trigger manual) ─▶ Finalized; CloseStream ─▶ close
  no turn:   ForceEndTurn + CloseStream ─────────────────────────────────────────▶ close ─▶ Finalized
```

Mapping: ``TurnInfo`` ``StartOfTurn``/``Update``/``EagerEndOfTurn``/``TurnResumed`` →
``PartialTranscript`` (the turn's full text so far); ``EndOfTurn`` →
``FinalTranscript``, once per ``turn_index``.  Times are ``audio_window_start`` /
``audio_window_end`` (seconds) in session ms.  While finalizing, any ``EndOfTurn``
sends ``CloseStream``; the one answering our ``ForceEndTurn`` (``trigger: manual``) is
``Finalized`` at once, otherwise the normal close (1000, or 1005: Flux closes without a
status) is.  ``CloseStream`` does not end an open turn, so a turn still open at that
close is delivered from its last text (its best transcript) before ``Finalized``.  ``Error`` is fatal to the
session → ``ProviderFailed``.  Flux documents no KeepAlive: ``keepalive`` sends nothing.
"""

from __future__ import annotations

from ..base import MULAW_8K, AudioFormat
from ..codec import Outbox, close_events
from ..events import Finalized, FinalTranscript, PartialTranscript, ProviderEvent, ProviderFailed, SessionStarted
from ..jsonwire import WireObject, parse_object, short
from .protocol import CLOSE_STREAM, NORMAL_CLOSES, PROVIDER, error_for_close, error_for_vendor_code

__all__ = ["FluxCodec", "FORCE_END_TURN"]

FORCE_END_TURN = '{"type":"ForceEndTurn"}'
_PARTIAL_EVENTS = ("StartOfTurn", "Update", "EagerEndOfTurn", "TurnResumed")


class FluxCodec(Outbox):
    """``SttCodec`` for ``/v2/listen``; audio bytes go out unchanged as binary frames."""

    def __init__(self, audio_format: AudioFormat = MULAW_8K) -> None:
        self.audio_format = audio_format
        super().__init__()
        self.ending = False  # finalize called: no more audio
        self.close_sent = False
        self.finalized = False
        self._last_final_turn = -1
        self._open_turn: PartialTranscript | None = None  # latest text of the open turn
        self._open_turn_index = -1

    # --- commands ---------------------------------------------------------------

    def send_audio(self, audio: bytes) -> None:
        if self.ending:
            raise RuntimeError("deepgram: audio after finalize")
        if audio:
            self._outbox.append(audio)

    def finalize(self) -> None:
        if self.ending:
            return
        self.ending = True
        self._outbox.append(FORCE_END_TURN)
        if self._open_turn is None:
            self._close_stream()

    def end_stream(self) -> None:
        """The session ends now, answered or not (its caller's deadline cut it): the
        ``ForceEndTurn`` of ``finalize`` if it was not sent, and ``CloseStream`` without
        waiting for the ``EndOfTurn`` that ``finalize`` would wait for."""
        self.finalize()
        self._close_stream()

    def keepalive(self) -> None:
        return None

    def _close_stream(self) -> None:
        if not self.close_sent:
            self.close_sent = True
            self._outbox.append(CLOSE_STREAM)

    # --- server messages --------------------------------------------------------

    def receive(self, message: str | bytes) -> list[ProviderEvent]:
        obj = parse_object(PROVIDER, message)
        kind = obj.string("type")
        if kind == "TurnInfo":
            return self._turn_info(obj)
        if kind == "Connected":
            return [SessionStarted(obj.optional_string("request_id", "") or "")]
        if kind == "Error":
            name = obj.optional_string("code", "") or ""
            description = obj.optional_string("description", "") or ""
            detail = f"error {name or 'without a code'}" + (f": {short(description)}" if description else "")
            return [ProviderFailed(error_for_vendor_code(name, detail))]
        return []  # Warning, ConfigureSuccess/Failure, and types added later

    def connection_closed(self, code: int, reason: str) -> list[ProviderEvent]:
        events: list[ProviderEvent] = []
        if self.ending and code in NORMAL_CLOSES:  # the end of the finalize sequence
            turn = self._open_turn
            if turn is not None and turn.text.strip() and self._open_turn_index > self._last_final_turn:
                events.append(FinalTranscript(turn.text, turn.start_ms, turn.end_ms))
            self._open_turn = None
        events += close_events(code, reason, ending=self.ending, finalized=self.finalized,
                               normal=NORMAL_CLOSES, error=error_for_close)
        self.finalized = self.finalized or self.ending and code in NORMAL_CLOSES
        return events

    def _turn_info(self, obj: WireObject) -> list[ProviderEvent]:
        event = obj.string("event")
        turn_index = obj.integer("turn_index")
        text = obj.optional_string("transcript", "") or ""
        start_ms = obj.optional_seconds_ms("audio_window_start") or 0
        end = obj.optional_seconds_ms("audio_window_end")
        end_ms = max(start_ms, start_ms if end is None else end)
        if event == "EndOfTurn":
            self._open_turn = None
            events: list[ProviderEvent] = []
            if turn_index > self._last_final_turn:
                self._last_final_turn = turn_index
                if text.strip():
                    events.append(FinalTranscript(text, start_ms, end_ms))
            if self.ending:
                self._close_stream()
                if obj.optional_string("trigger") == "manual" and not self.finalized:
                    # the answer to our ForceEndTurn: every byte we sent is in a turn now
                    self.finalized = True
                    events.append(Finalized())
            return events
        if event in _PARTIAL_EVENTS and turn_index > self._last_final_turn:
            partial = PartialTranscript(text, start_ms, end_ms)
            self._open_turn_index = turn_index
            self._open_turn = partial if text.strip() else self._open_turn
            if event == "StartOfTurn" and self._open_turn is None:
                # a turn began before any text: keep it open so finalize waits for it
                self._open_turn = partial
            return [partial] if text.strip() else []
        return []
