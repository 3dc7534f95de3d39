"""TranscriptEmitter: call events into INTERFACE.md's JSON, to every sink."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import trio

from .messages import CallEnded, CallEvent, CallStarted, DtmfPressed, ProviderNotice, Transcript
from .ports import Sink

__all__ = ["TranscriptEmitter", "utc_timestamp"]


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def utc_timestamp() -> str:
    """``2026-11-25T17:00:00.123Z`` (wall-clock time for consumers, never for timing).
    ``strftime`` runs once per second, not once per event."""
    now = datetime.now(UTC)
    whole = now.replace(microsecond=0)
    if whole != _second[0]:
        _second[0], _second[1] = whole, whole.strftime("%Y-%m-%dT%H:%M:%S.")
    return f"{_second[1]}{now.microsecond // 1000:03d}Z"


class TranscriptEmitter:
    """Consumes ``CallEvent``s until the channel closes; renders each as one JSON
    object (``seq`` +1 per event of any type, ``emitted_at``) and hands it to every
    sink in order.  Closes ``events_receive``.  Raises what a sink raises."""

    def __init__(self, sinks: Sequence[Sink], now: Callable[[], str] = utc_timestamp) -> None:
        self._sinks = tuple(sinks)
        self._now = now
        self.seq = 0
        self._ids: dict[str, str] = {"call_sid": "", "stream_sid": ""}

    async def run(self, events_receive: trio.MemoryReceiveChannel[CallEvent]) -> None:
        async with events_receive:
            async for event in events_receive:
                rendered = self.render(event)
                for sink in self._sinks:
                    await sink.emit(rendered)

    def render(self, event: CallEvent) -> dict[str, Any]:
        self.seq += 1
        if isinstance(event, CallStarted):
            stream = event.stream
            self._ids = {"call_sid": stream.call_sid, "stream_sid": stream.stream_sid}
            body: dict[str, Any] = {
                "type": "call_started",
                **self._ids,
                "account_sid": stream.account_sid,
                "custom_parameters": stream.custom_parameters,
                "tracks": list(stream.tracks),
                "media_format": stream.media_format,
            }
        elif isinstance(event, Transcript):
            body = {
                "type": "transcript",
                "kind": event.kind,
                "text": event.text,
                **self._ids,
                "provider": event.provider,
                "audio_start_ms": event.audio_start_ms,
                "audio_end_ms": event.audio_end_ms,
            }
        elif isinstance(event, DtmfPressed):
            body = {"type": "dtmf", "digit": event.digit, **self._ids, "audio_ms": event.audio_ms}
        elif isinstance(event, ProviderNotice):
            body = {"type": event.type, "provider": event.provider, "detail": event.detail, **self._ids,
                    **event.extra}
        elif isinstance(event, CallEnded):
            body = {
                "type": "call_ended",
                **self._ids,
                "reason": event.reason,
                "audio_ms": event.audio_ms,
                "forwarded_ms": event.forwarded_ms,
                "dropped_ms": event.dropped_ms,
                "detail": event.detail,
                **event.extra,
            }
        else:  # pragma: no cover - the union is closed
            raise TypeError(f"not a call event: {event!r}")
        body["seq"] = self.seq
        body["emitted_at"] = self._now()
        return body
