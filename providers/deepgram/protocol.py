"""Deepgram live streaming v1 (``/v1/listen``, Nova models) as a sans-I/O codec.

```
open ─▶ (audio | KeepAlive)* ─▶ Finalize, CloseStream ─▶ Results* ─▶ Metadata ─▶ close 1000
        ▲ Results (is_final false → partial, true → final), UtteranceEnd, SpeechStarted ...
```

Deepgram has no ready message: the session is live once the socket is open.

Mapping (each event's times are session milliseconds from ``start``/``duration``):

* ``Results`` with ``is_final: false`` → ``PartialTranscript`` of its span;
  ``is_final: true`` → ``FinalTranscript`` of its span.  Every ``is_final`` span is
  committed as it comes, so ``speech_final`` and ``UtteranceEnd`` (utterance
  boundaries) add no event and nothing is held back or delivered twice.
  Empty transcripts (silence) give no event.
* After ``finalize`` (``Finalize`` + ``CloseStream``): ``Metadata`` → ``Finalized``;
  the normal close (1000) that follows completes the sequence too (``connection_closed``
  returns ``Finalized`` then ``ProviderClosed``, whether or not ``Metadata`` came).
* ``Error`` → ``ProviderFailed`` (typed by ``error_for_vendor_code``).
* A close with a Deepgram reason (``DATA-0000``, ``NET-0000``, ``NET-0001``) or a
  non-normal code → ``ProviderFailed`` then ``ProviderClosed``; 1006 → ``ProviderClosed``.
* Other message types (``SpeechStarted``, ``ConfigureSuccess`` ...) are ignored;
  malformed ones raise ``ProviderProtocolError``.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..base import MULAW_8K, AudioFormat
from ..errors import (
    ProviderAuthError,
    ProviderConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloadedError,
    ProviderProtocolError,
    ProviderQuotaError,
    error_for_close_code,
)
from ..events import (
    Finalized,
    FinalTranscript,
    PartialTranscript,
    ProviderClosed,
    ProviderEvent,
    ProviderFailed,
)

__all__ = [
    "PROVIDER",
    "KEEPALIVE",
    "FINALIZE",
    "CLOSE_STREAM",
    "MAX_FRAME_MS",
    "DeepgramCodec",
    "error_for_vendor_code",
    "error_for_close",
]

PROVIDER = "deepgram"
KEEPALIVE = '{"type":"KeepAlive"}'
FINALIZE = '{"type":"Finalize"}'
CLOSE_STREAM = '{"type":"CloseStream"}'
#: Deepgram's guidance is 20-250 ms per binary frame; longer sends are split.
MAX_FRAME_MS = 250
#: Closes that end a session normally (1005: closed without a status, as Flux does).
NORMAL_CLOSES = (1000, 1005)
DETAIL_LIMIT = 200
#: Times beyond this (about 115 days) are not session times.
MAX_SECONDS = 10_000_000

_MISSING: Any = object()
_JSON_NAMES = {str: "a string", bool: "a boolean", dict: "an object", list: "an array"}


# ----------------------------------------------------------------------- strict JSON


def parse_object(message: str | bytes, provider: str = PROVIDER) -> dict[str, Any]:
    """One server text frame as a JSON object, or ``ProviderProtocolError``."""
    if isinstance(message, (bytes, bytearray, memoryview)):
        raise ProviderProtocolError(provider, "unexpected binary frame from the server")
    try:
        obj = orjson.loads(message)
    except orjson.JSONDecodeError:
        raise ProviderProtocolError(provider, "server message is not JSON") from None
    if type(obj) is not dict:
        raise ProviderProtocolError(provider, "server message is not a JSON object")
    return obj


def field(obj: dict[str, Any], key: str, kind: type, where: str, default: Any = _MISSING,
          provider: str = PROVIDER) -> Any:
    """``obj[key]`` checked to be a ``kind`` (``float`` accepts any JSON number, never a
    boolean); ``default`` when absent or null, or ``ProviderProtocolError``."""
    value = obj.get(key)
    if value is None:
        if default is _MISSING:
            raise ProviderProtocolError(provider, f"{where}: missing field {key!r}")
        return default
    if kind is float:
        ok = type(value) in (int, float)
    else:
        ok = type(value) is kind
    if not ok:
        expected = "a number" if kind is float else _JSON_NAMES.get(kind, kind.__name__)
        raise ProviderProtocolError(
            provider, f"{where}.{key}: expected {expected}, got {type(value).__name__}")
    return value


def seconds_to_ms(value: float, where: str, provider: str = PROVIDER) -> int:
    """A JSON time in seconds as whole ms; negative or absurd times are malformed."""
    if not 0 <= value <= MAX_SECONDS:
        raise ProviderProtocolError(provider, f"{where}: {value!r} is not a time in seconds")
    return int(round(value * 1000))


def short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 3] + "..."


# ----------------------------------------------------------------------- errors

# Keywords of Deepgram error names (v1 ``variant``, Flux ``code``, close reasons), in
# the order they are tried.  Deepgram documents few names; the rest are classified
# by what they say (auth, payment, rate, schema/decode), the default being retryable.
_VENDOR_CLASSES: tuple[tuple[tuple[str, ...], type[ProviderError]], ...] = (
    (("AUTH", "PERMISSION", "CREDENTIAL", "FORBIDDEN"), ProviderAuthError),
    (("PAYMENT", "BALANCE", "QUOTA", "CREDIT"), ProviderQuotaError),
    (("RATE_LIMIT", "RATELIMIT", "TOO_MANY", "CONCURRENCY", "OVERLOAD", "CAPACITY"), ProviderOverloadedError),
    (("DATA-", "SCHEMA", "INVALID", "UNSUPPORTED", "BAD_REQUEST", "DECODE"), ProviderConfigError),
)


def error_for_vendor_code(name: str, detail: str, *, code: int | None = None,
                          provider: str = PROVIDER) -> ProviderError:
    """Type a Deepgram error name (``SchemaError``, ``DATA-0000``, ``NET-0001``,
    ``INTERNAL_SERVER_ERROR`` ...)."""
    upper = name.upper().replace(" ", "_")
    for keywords, error_type in _VENDOR_CLASSES:
        if any(k in upper for k in keywords):
            return error_type(provider, detail, code=code, vendor_type=name or None)
    return ProviderConnectionError(provider, detail, code=code, vendor_type=name or None)


_CLOSE_REASONS = {
    "DATA-0000": "the audio could not be decoded; check the encoding and sample rate",
    "NET-0000": "Deepgram received no audio or text in time",
    "NET-0001": "no audio or KeepAlive for 10 s",
}


def error_for_close(code: int, reason: str, provider: str = PROVIDER) -> ProviderError:
    """Type a close Deepgram initiated.  Its reason carries an error code string."""
    name = reason.strip().split(" ", 1)[0].rstrip(":,.") if reason else ""
    if name in _CLOSE_REASONS or name.startswith(("DATA-", "NET-")):
        explanation = _CLOSE_REASONS.get(name, "")
        detail = f"connection closed with code {code} ({short(reason)})" + (
            f": {explanation}" if explanation else "")
        return error_for_vendor_code(name, detail, code=code, provider=provider)
    return error_for_close_code(provider, code, short(reason))


# ----------------------------------------------------------------------- codec


class DeepgramCodec:
    """``SttCodec`` for ``/v1/listen``.  ``audio_format`` must match the URL's
    ``encoding``/``sample_rate``; audio bytes go out as binary frames unchanged."""

    def __init__(self, audio_format: AudioFormat = MULAW_8K) -> None:
        sample_bytes = 1 if audio_format.encoding == "mulaw" else 2
        frame = int(MAX_FRAME_MS * audio_format.bytes_per_ms)
        self._max_frame = frame - frame % sample_bytes
        self._outbox: list[str | bytes] = []
        self.closing = False  # CloseStream queued: no more audio
        self.finalized = False  # Finalized emitted

    # --- commands ---------------------------------------------------------------

    def send_audio(self, audio: bytes) -> None:
        if self.closing:
            raise RuntimeError("deepgram: audio after finalize")
        size = len(audio)
        if size == 0:  # a zero-length binary frame makes Deepgram close the stream
            return
        if size <= self._max_frame:
            self._outbox.append(audio)
            return
        view = memoryview(audio)
        for start in range(0, size, self._max_frame):
            self._outbox.append(bytes(view[start:start + self._max_frame]))

    def finalize(self) -> None:
        if not self.closing:
            self.closing = True
            self._outbox += (FINALIZE, CLOSE_STREAM)

    def keepalive(self) -> None:
        if not self.closing:
            self._outbox.append(KEEPALIVE)

    def data_to_send(self) -> list[str | bytes]:
        out, self._outbox = self._outbox, []
        return out

    # --- server messages --------------------------------------------------------

    def receive(self, message: str | bytes) -> list[ProviderEvent]:
        obj = parse_object(message)
        kind = field(obj, "type", str, "message")
        if kind == "Results":
            return self._results(obj)
        if kind == "Metadata":
            if self.closing and not self.finalized:
                self.finalized = True
                return [Finalized()]
            return []
        if kind == "Error":
            return [ProviderFailed(self._error(obj))]
        return []  # UtteranceEnd, SpeechStarted, Configure*, and types added later

    def connection_closed(self, code: int, reason: str) -> list[ProviderEvent]:
        events: list[ProviderEvent] = []
        if self.closing and code in NORMAL_CLOSES:  # the end of the finalize sequence
            self.finalized = True
            events.append(Finalized())
        elif not self.finalized and code not in NORMAL_CLOSES and code != 1006:
            events.append(ProviderFailed(error_for_close(code, reason)))
        events.append(ProviderClosed(code, reason))
        return events

    def _results(self, obj: dict[str, Any]) -> list[ProviderEvent]:
        is_final = field(obj, "is_final", bool, "Results")
        start = field(obj, "start", float, "Results")
        duration = field(obj, "duration", float, "Results")
        channel = field(obj, "channel", dict, "Results")
        alternatives = field(channel, "alternatives", list, "Results.channel")
        start_ms = seconds_to_ms(start, "Results.start")
        end_ms = start_ms + seconds_to_ms(duration, "Results.duration")
        if not alternatives:
            return []
        best = alternatives[0]
        if type(best) is not dict:
            raise ProviderProtocolError(PROVIDER, "Results.channel.alternatives[0]: expected an object")
        text = field(best, "transcript", str, "Results.channel.alternatives[0]")
        if not text.strip():
            return []
        if is_final:
            return [FinalTranscript(text, start_ms, end_ms)]
        return [PartialTranscript(text, start_ms, end_ms)]

    def _error(self, obj: dict[str, Any]) -> ProviderError:
        name = field(obj, "variant", str, "Error", "") or field(obj, "code", str, "Error", "")
        description = field(obj, "description", str, "Error", "") or field(obj, "message", str, "Error", "")
        detail = f"error {name or 'without a name'}" + (f": {short(description)}" if description else "")
        return error_for_vendor_code(name, detail)
