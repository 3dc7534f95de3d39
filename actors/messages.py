"""Data that travels between a call's actors.  Frozen, one line to build in a test."""

from __future__ import annotations

from typing import Any, Literal, Union

import attrs

__all__ = [
    "AudioBatch",
    "StreamStarted",
    "CallStarted",
    "Transcript",
    "DtmfPressed",
    "ProviderNotice",
    "CallEnded",
    "CallEvent",
]


@attrs.frozen
class AudioBatch:
    """A run of call audio.  ``start_ms``/``duration_ms`` are on the call's audio clock
    (0 = first media byte of the call); ``payload`` is mu-law 8 kHz before the
    Resampler and the ReplayBuffer's format after it (``actors.convert.replay_format``)."""

    start_ms: int
    duration_ms: int
    payload: bytes

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.duration_ms


@attrs.frozen
class StreamStarted:
    """Twilio's ``start`` arrived: what TwilioReader reports through ``nursery.start``."""

    call_sid: str
    stream_sid: str
    account_sid: str
    custom_parameters: dict[str, str]
    tracks: tuple[str, ...]
    media_format: str


# --- call events, rendered by TranscriptEmitter into INTERFACE.md's JSON ---------------


@attrs.frozen
class CallStarted:
    stream: StreamStarted


@attrs.frozen
class Transcript:
    kind: Literal["partial", "committed"]
    text: str
    provider: str
    audio_start_ms: int
    audio_end_ms: int


@attrs.frozen
class DtmfPressed:
    digit: str
    audio_ms: int


@attrs.frozen
class ProviderNotice:
    """``provider_error`` / ``provider_reconnected`` / ``provider_failover``."""

    type: Literal["provider_error", "provider_reconnected", "provider_failover"]
    provider: str
    detail: str
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class CallEnded:
    reason: Literal["stop", "disconnect", "shutdown", "error"]
    audio_ms: int
    forwarded_ms: int
    dropped_ms: int
    detail: str = ""
    extra: dict[str, Any] = attrs.field(factory=dict)


CallEvent = Union[CallStarted, Transcript, DtmfPressed, ProviderNotice, CallEnded]
