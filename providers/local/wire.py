"""The pipe protocol between a session and its recognizer process.  Pure codec.

Session → worker (stdin), binary frames: one kind byte, a 4-byte little-endian
length, the payload.

    b"A" <len> <pcm16 16 kHz>     audio to decode
    b"F" <0>                      flush: end the utterance, then Finalized

Worker → session (stdout), one JSON object per line:

    {"type": "ready"}                                   models loaded
    {"type": "partial"|"final", "text", "start_ms", "end_ms"}
    {"type": "finalized"}
    {"type": "done"}                                    one command fully handled
    {"type": "failed", "fatal": bool, "detail": str}    then the worker exits

``done`` is the flow-control credit: the session never has more than a fixed number
of commands unanswered, so audio queued for a slow recognizer stays bounded.
"""

from __future__ import annotations

import json
from typing import Final

import attrs

from ..errors import ProviderConfigError, ProviderError, ProviderProtocolError, ProviderRetryableError
from ..events import Finalized, FinalTranscript, PartialTranscript, ProviderFailed
from .settings import PROVIDER

__all__ = [
    "AUDIO",
    "FLUSH",
    "HEADER_BYTES",
    "MAX_PAYLOAD",
    "Ready",
    "Done",
    "WorkerEvent",
    "encode_command",
    "decode_header",
    "encode_event",
    "encode_failure",
    "EventDecoder",
]

AUDIO: Final = b"A"
FLUSH: Final = b"F"
HEADER_BYTES: Final = 5
#: Largest audio payload (10 s of 16 kHz pcm16); the gateway sends ~100 ms batches.
MAX_PAYLOAD: Final = 320_000
#: Longest event line accepted from the worker.
MAX_LINE: Final = 64 * 1024


@attrs.frozen
class Ready:
    """The worker loaded its models."""


@attrs.frozen
class Done:
    """The worker handled one command completely (its events precede this)."""


WorkerEvent = Ready | Done | PartialTranscript | FinalTranscript | Finalized | ProviderFailed


def encode_command(kind: bytes, payload: bytes = b"") -> bytes:
    if kind not in (AUDIO, FLUSH):
        raise ValueError(f"unknown command kind {kind!r}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"audio batch of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return kind + len(payload).to_bytes(4, "little") + payload


def decode_header(header: bytes) -> tuple[bytes, int]:
    """``(kind, payload length)``; ``ValueError`` on anything else."""
    kind, length = header[:1], int.from_bytes(header[1:HEADER_BYTES], "little")
    if len(header) != HEADER_BYTES or kind not in (AUDIO, FLUSH) or length > MAX_PAYLOAD:
        raise ValueError(f"bad command header {header!r}")
    return kind, length


def encode_event(event: WorkerEvent) -> bytes:
    if isinstance(event, PartialTranscript | FinalTranscript):
        kind = "partial" if isinstance(event, PartialTranscript) else "final"
        obj: dict[str, object] = {"type": kind, "text": event.text, "start_ms": event.start_ms,
                                  "end_ms": event.end_ms}
    elif isinstance(event, ProviderFailed):
        return encode_failure(event.error)
    else:
        obj = {"type": {Ready: "ready", Done: "done", Finalized: "finalized"}[type(event)]}
    return json.dumps(obj).encode() + b"\n"


def encode_failure(error: Exception) -> bytes:
    fatal = isinstance(error, ProviderError) and error.fatal
    detail = error.detail if isinstance(error, ProviderError) else repr(error)
    return json.dumps({"type": "failed", "fatal": fatal, "detail": detail}).encode() + b"\n"


class EventDecoder:
    """Bytes from the worker's stdout in, ``WorkerEvent``s out.

    Raises ``ProviderProtocolError`` on a line that is not one of the messages above.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[WorkerEvent]:
        self._buffer += data
        events: list[WorkerEvent] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            events.append(_decode_line(line))
        if len(self._buffer) > MAX_LINE:
            raise ProviderProtocolError(PROVIDER, f"worker sent a line longer than {MAX_LINE} bytes")
        return events


def _decode_line(line: bytes) -> WorkerEvent:
    try:
        obj = json.loads(line)
        kind = obj["type"]
        if kind in ("partial", "final"):
            cls = PartialTranscript if kind == "partial" else FinalTranscript
            return cls(str(obj["text"]), _ms(obj["start_ms"]), _ms(obj["end_ms"]))
        if kind == "failed":
            error_type = ProviderConfigError if obj["fatal"] else ProviderRetryableError
            return ProviderFailed(error_type(PROVIDER, str(obj["detail"])))
        return {"ready": Ready, "done": Done, "finalized": Finalized}[kind]()
    except (ValueError, KeyError, TypeError) as exc:
        raise ProviderProtocolError(PROVIDER, f"worker sent {line[:80]!r}") from exc


def _ms(value: object) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise TypeError(f"not a time in ms: {value!r}")
