"""``jsonl:PATH``: one JSON object per line, appended, flushed per batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from .base import SinkSpec, SinkSpecError

__all__ = ["JsonlSink", "encode_event", "from_spec"]


def encode_event(event: Mapping[str, Any]) -> bytes:
    """The event's JSON exactly as a JSONL line holds it (without the newline); the
    Redis sink's ``event`` field is the same bytes."""
    return orjson.dumps(event)


class JsonlSink:
    """A ``SinkWriter``: ``write`` appends a batch as whole lines and flushes once.
    ``emit`` appends one event, for use without a hub."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"jsonl:{self.path}"
        if self.path.parent and not self.path.parent.exists():
            raise ValueError(f"directory {self.path.parent} does not exist")
        self._file = open(self.path, "ab")  # noqa: SIM115 - lives as long as the sink

    async def write(self, events: Sequence[Mapping[str, Any]]) -> None:
        # A short buffered write: cheaper than a thread hop, and lines stay whole.
        self._file.write(b"".join(encode_event(event) + b"\n" for event in events))
        self._file.flush()

    async def emit(self, event: Mapping[str, Any]) -> None:
        await self.write((event,))

    async def aclose(self) -> None:
        self._file.close()


def from_spec(spec: SinkSpec, env: Mapping[str, str]) -> JsonlSink:
    if not spec.target:
        raise SinkSpecError(f"bad sink {spec.shown!r}: expected jsonl:PATH")
    if spec.options:
        raise SinkSpecError(f"bad sink {spec.shown!r}: jsonl takes no options other than types=")
    try:
        return JsonlSink(spec.target)
    except (OSError, ValueError) as exc:
        raise SinkSpecError(f"cannot open jsonl sink {spec.target!r}: {exc}") from None
