"""``jsonl:PATH``: one JSON object per line, appended, flushed per event."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

__all__ = ["JsonlSink"]


class JsonlSink:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            raise ValueError(f"directory {self.path.parent} does not exist")
        self._file = open(self.path, "ab")  # noqa: SIM115 - lives as long as the sink

    async def emit(self, event: Mapping[str, Any]) -> None:
        # A short buffered write: cheaper than a thread hop, and lines stay whole.
        self._file.write(orjson.dumps(event) + b"\n")
        self._file.flush()

    async def aclose(self) -> None:
        self._file.close()
