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

from ..base import MULAW_8K, AudioFormat
from ..codec import Outbox, close_events
from ..errors import (
    ProviderAuthError,
    ProviderConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloadedError,
    ProviderQuotaError,
    error_for_close_code,
)
from ..events import Finalized, FinalTranscript, PartialTranscript, ProviderEvent, ProviderFailed
from ..jsonwire import WireObject, parse_object, short

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


class DeepgramCodec(Outbox):
    """``SttCodec`` for ``/v1/listen``.  ``audio_format`` must match the URL's
    ``encoding``/``sample_rate``; audio bytes go out as binary frames unchanged."""

    def __init__(self, audio_format: AudioFormat = MULAW_8K) -> None:
        sample_bytes = 1 if audio_format.encoding == "mulaw" else 2
        frame = int(MAX_FRAME_MS * audio_format.bytes_per_ms)
        self._max_frame = frame - frame % sample_bytes
        super().__init__()
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

    # --- server messages --------------------------------------------------------

    def receive(self, message: str | bytes) -> list[ProviderEvent]:
        obj = parse_object(PROVIDER, message)
        kind = obj.string("type")
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
        events = close_events(code, reason, ending=self.closing, finalized=self.finalized,
                              normal=NORMAL_CLOSES, error=error_for_close)
        self.finalized = self.finalized or self.closing and code in NORMAL_CLOSES  # the end of finalize
        return events

    def _results(self, obj: WireObject) -> list[ProviderEvent]:
        is_final = obj.boolean("is_final")
        start_ms = obj.seconds_ms("start")
        end_ms = start_ms + obj.seconds_ms("duration")
        alternatives = obj.object("channel").objects("alternatives", required=True)
        if not alternatives:
            return []
        text = alternatives[0].string("transcript")
        if not text.strip():
            return []
        if is_final:
            return [FinalTranscript(text, start_ms, end_ms)]
        return [PartialTranscript(text, start_ms, end_ms)]

    def _error(self, obj: WireObject) -> ProviderError:
        name = obj.optional_string("variant", "") or obj.optional_string("code", "") or ""
        description = obj.optional_string("description", "") or obj.optional_string("message", "") or ""
        detail = f"error {name or 'without a name'}" + (f": {short(description)}" if description else "")
        return error_for_vendor_code(name, detail)
