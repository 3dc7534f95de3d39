"""The seams every STT provider fits: audio formats, the sans-I/O codec, the session.

Two layers, as in h11/wsproto:

* ``SttCodec`` is pure: audio and commands in, wire messages out (``data_to_send``);
  wire messages in, provider-neutral events out (``receive``).  No I/O, no clock.
* ``SttSession`` is what the call runtime talks to: ``send_audio``, ``finalize``,
  ``keepalive`` and ``receive``.  WebSocket vendors get one from
  ``providers.websocket.open_websocket_session`` around their codec; ``local`` and
  ``scripted`` implement it directly.

An ``SttProvider`` is configured once per gateway and opens one session per call (and
one more per reconnect).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol, runtime_checkable

import attrs

from .errors import ProviderStalledError
from .events import FinalTranscript, PartialTranscript, ProviderEvent

__all__ = [
    "AudioFormat",
    "MULAW_8K",
    "SttCodec",
    "SttSession",
    "SttProvider",
    "AudioSpanTracker",
    "HeldAudio",
]


@attrs.frozen
class AudioFormat:
    """Encoding and rate of the audio a provider is sent."""

    encoding: Literal["mulaw", "pcm16"]
    sample_rate: int

    @property
    def bytes_per_ms(self) -> int | float:
        per_sample = 1 if self.encoding == "mulaw" else 2
        return self.sample_rate * per_sample / 1000

    def duration_ms(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_ms

    def __str__(self) -> str:
        return f"{self.encoding}/{self.sample_rate}"


MULAW_8K = AudioFormat("mulaw", 8000)


class SttCodec(Protocol):
    """A vendor's wire protocol, sans I/O.  Raises only ``ProviderProtocolError``
    (malformed input) from ``receive``.

    A codec whose ``finalize`` holds its last message back until the vendor answers
    (Deepgram Flux: ``CloseStream`` after the forced ``EndOfTurn``) also has
    ``end_stream()``: the session is ending now, answered or not, so queue every
    end-of-stream message at once.  Without it, ``finalize`` is what ends a session
    cut short (``WebSocketSession.end``)."""

    def send_audio(self, audio: bytes) -> None: ...
    def finalize(self) -> list[ProviderEvent] | None:
        """Start the end sequence.  May return events that need no server reply
        (``[Finalized()]`` when nothing is left to commit); ``None`` means none."""
        ...

    def keepalive(self) -> None: ...
    def data_to_send(self) -> list[str | bytes]: ...
    def receive(self, message: str | bytes) -> list[ProviderEvent]: ...
    def connection_closed(self, code: int, reason: str) -> list[ProviderEvent]: ...


@runtime_checkable
class SttSession(Protocol):
    """One live provider session.

    ``receive`` returns events in order; the connection ending is the event
    ``ProviderClosed`` (after which ``receive`` keeps returning it).  ``send_audio``
    may block (backpressure) and raises a ``ProviderError`` when the link is gone.
    ``finalize`` asks for the final transcript; the session then yields the remaining
    transcripts and ``Finalized``.
    """

    async def send_audio(self, audio: bytes) -> None: ...
    async def finalize(self) -> None: ...
    async def keepalive(self) -> None: ...
    async def receive(self) -> ProviderEvent: ...


class SttProvider(Protocol):
    """A configured provider.  ``audio_format`` is what ``send_audio`` takes;
    ``chunk_ms`` the batch duration the vendor wants (None: any);
    ``keepalive_interval`` seconds of send-idle before ``keepalive`` (None: never)."""

    name: str
    audio_format: AudioFormat
    chunk_ms: int | None
    keepalive_interval: float | None

    def open_session(self) -> AbstractAsyncContextManager[SttSession]: ...


class AudioSpanTracker:
    """Pure helper for codecs whose vendor gives no timings.

    Counts session audio sent, and hands out spans: a partial spans from the end of
    the last committed span to the audio sent so far; a final does too and then moves
    the committed mark.  Vendor timings, when present, win.
    """

    def __init__(self, audio_format: AudioFormat) -> None:
        self._bytes_per_ms = audio_format.bytes_per_ms
        self.sent_bytes = 0
        self.committed_ms = 0

    def add(self, nbytes: int) -> None:
        self.sent_bytes += nbytes

    @property
    def sent_ms(self) -> int:
        return int(self.sent_bytes / self._bytes_per_ms)

    def partial(self, text: str, start_ms: int | None = None, end_ms: int | None = None) -> PartialTranscript:
        start = self.committed_ms if start_ms is None else start_ms
        end = self.sent_ms if end_ms is None else end_ms
        return PartialTranscript(text, start, max(start, end))

    def final(self, text: str, start_ms: int | None = None, end_ms: int | None = None) -> FinalTranscript:
        start = self.committed_ms if start_ms is None else start_ms
        end = self.sent_ms if end_ms is None else end_ms
        end = max(start, end)
        self.committed_ms = max(self.committed_ms, end)
        return FinalTranscript(text, start, end)


class HeldAudio:
    """Audio a codec holds, in order, until its session is configured (vendors that
    answer ``session.created`` with ``session.update``).  Bounded: past
    ``max_ms`` the session counts as stalled."""

    def __init__(self, provider: str, audio_format: AudioFormat, max_ms: int) -> None:
        self._provider = provider
        self._max_ms = max_ms
        self._max_bytes = int(max_ms * audio_format.bytes_per_ms)
        self._parts: list[bytes] = []
        self._bytes = 0

    def hold(self, audio: bytes) -> None:
        if self._bytes + len(audio) > self._max_bytes:
            raise ProviderStalledError(self._provider, f"session not configured after {self._max_ms} ms of audio")
        self._parts.append(audio)
        self._bytes += len(audio)

    def release(self) -> list[bytes]:
        parts, self._parts, self._bytes = self._parts, [], 0
        return parts
