"""Sinks: where a call's events go.  ``--sink SPEC`` (repeatable):

``stdout`` · ``jsonl:PATH``

A sink is anything with ``async emit(event)`` and ``async aclose()``; new kinds slot
in here without touching the actors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

from .jsonl import JsonlSink
from .stdout import StdoutSink, format_line

__all__ = ["ClosableSink", "SinkSpecError", "parse_sink_spec", "open_sinks", "StdoutSink", "JsonlSink",
           "format_line", "KNOWN_SINKS"]

KNOWN_SINKS = "stdout, jsonl:PATH"


class SinkSpecError(ValueError):
    pass


class ClosableSink(Protocol):
    async def emit(self, event: Any) -> None: ...
    async def aclose(self) -> None: ...


def parse_sink_spec(spec: str) -> tuple[str, str]:
    """Validate a spec without opening anything: returns (kind, argument)."""
    spec = spec.strip()
    if spec == "stdout":
        return "stdout", ""
    kind, sep, arg = spec.partition(":")
    if kind == "jsonl" and sep and arg:
        return "jsonl", arg
    raise SinkSpecError(f"bad sink {spec!r}: expected one of {KNOWN_SINKS}")


def _open(kind: str, arg: str) -> ClosableSink:
    if kind == "stdout":
        return StdoutSink()
    if kind == "jsonl":
        try:
            return JsonlSink(arg)
        except (OSError, ValueError) as exc:
            raise SinkSpecError(f"cannot open jsonl sink {arg!r}: {exc}") from None
    raise SinkSpecError(f"unknown sink kind {kind!r}")


@asynccontextmanager
async def open_sinks(specs: Sequence[str]) -> AsyncIterator[list[ClosableSink]]:
    sinks: list[ClosableSink] = []
    try:
        for spec in specs:
            sinks.append(_open(*parse_sink_spec(spec)))
        yield sinks
    finally:
        for sink in sinks:
            await sink.aclose()
