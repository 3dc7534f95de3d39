"""Sinks: where a call's events go.  ``--sink SPEC`` (repeatable), ``EARPIECE_SINKS``
(comma-separated; see ``split_sink_list``).

A kind is a factory ``from_spec(spec, env) -> SinkWriter`` in ``SINK_KINDS`` (raising
``SinkSpecError`` for a bad spec, doing no network I/O); third-party kinds register one
under the entry-point group ``earpiece.sinks`` (the entry point's name is the kind).
Every writer runs behind the ``SinkHub`` (``runtime``): its own bounded queue and task.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from typing import Any

from . import jsonl, python, redis, sqlite, stdout, webhook
from .base import SinkDeliveryError, SinkSpec, SinkSpecError, SinkWriter, parse_sink_spec
from .jsonl import JsonlSink
from .runtime import SinkHub, SinkStatistics, open_sink_hub
from .stdout import StdoutSink, format_line

__all__ = ["SinkSpec", "check_sinks", "SinkSpecError", "SinkDeliveryError", "SinkWriter", "SinkHub", "SinkStatistics",
           "SINK_KINDS", "ENTRY_POINT_GROUP", "KNOWN_SINKS", "parse_sink_spec", "check_sink_spec", "sink_kinds",
           "split_sink_list", "create_writer", "open_sink_hub", "open_sinks", "StdoutSink", "JsonlSink",
           "format_line"]

SinkFactory = Callable[[SinkSpec, Mapping[str, str]], SinkWriter]

#: built-in kinds; one line per kind
SINK_KINDS: dict[str, SinkFactory] = {
    "stdout": stdout.from_spec,
    "jsonl": jsonl.from_spec,
    "python": python.from_spec,
    "redis": redis.from_spec,
    "rediss": redis.from_spec,
    "sqlite": sqlite.from_spec,
    "webhook": webhook.from_spec,
}

ENTRY_POINT_GROUP = "earpiece.sinks"

KNOWN_SINKS = ("stdout, jsonl:PATH, redis://HOST:PORT[/DB][?stream=NAME&maxlen=N], rediss://…, sqlite:PATH, "
               "webhook:URL, python:package.module:callable")


def sink_kinds() -> dict[str, SinkFactory | Any]:
    """Built-in kinds, then third-party entry points (loaded when used) for other names."""
    kinds: dict[str, SinkFactory | Any] = dict(SINK_KINDS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        kinds.setdefault(ep.name, ep)
    return kinds


def _factory(kind: str, shown: str) -> SinkFactory:
    found = sink_kinds().get(kind)
    if found is None:
        raise SinkSpecError(f"bad sink {shown!r}: unknown kind {kind!r}; expected one of {KNOWN_SINKS}"
                            f" or a kind registered under {ENTRY_POINT_GROUP!r}")
    if callable(found) and not hasattr(found, "load"):
        return found
    try:
        return found.load()
    except Exception as exc:
        raise SinkSpecError(f"sink kind {kind!r} (entry point {found.value}) cannot be loaded: {exc}") from None


def check_sink_spec(raw: str) -> SinkSpec:
    """Parse a spec and check that its kind exists, opening nothing."""
    spec = parse_sink_spec(raw)
    _factory(spec.kind, spec.shown)
    return spec


async def check_sinks(specs: Sequence[str], env: Mapping[str, str]) -> None:
    """Open each sink and close it again: ``SinkSpecError`` for the first that cannot be
    opened.  The parent of ``--workers N`` runs this before it starts a worker, so a bad
    path is one clear error and exit 2, not workers that die and are restarted."""
    for raw in specs:
        _, writer = create_writer(raw, env)
        await writer.aclose()


def create_writer(raw: str, env: Mapping[str, str]) -> tuple[SinkSpec, SinkWriter]:
    spec = parse_sink_spec(raw)
    return spec, _factory(spec.kind, spec.shown)(spec, env)


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9_.+-]*)(?=$|[:?,])")


def split_sink_list(raw: str, kinds: Iterable[str] | None = None) -> tuple[str, ...]:
    """Split ``EARPIECE_SINKS`` into specs.  A comma starts a new spec only when a known
    kind follows it (``stdout``, ``jsonl:``, ``redis://`` ...), so ``types=`` lists keep
    theirs: ``jsonl:a.jsonl?types=transcript.committed,call_ended,stdout`` is two sinks."""
    known = set(kinds if kinds is not None else sink_kinds())
    specs: list[str] = []
    current = ""
    for piece in raw.split(","):
        if not piece.strip():  # ", ," : nothing between two commas
            continue
        match = _SCHEME.match(piece.strip())
        if current and match and match.group(1) in known:
            specs.append(current)
            current = piece
        else:
            current = f"{current},{piece}" if current else piece
    specs.append(current)
    return tuple(s.strip() for s in specs if s.strip())


@asynccontextmanager
async def open_sinks(specs: Sequence[str], env: Mapping[str, str] | None = None, **options: Any
                     ) -> AsyncIterator[SinkHub]:
    """A running ``SinkHub`` over ``specs`` (``SinkSpecError`` before anything runs if
    one is bad); leaving it flushes every sink within its bound."""
    import os

    writers: list[tuple[SinkSpec, SinkWriter]] = []
    try:
        for raw in specs:
            writers.append(create_writer(raw, os.environ if env is None else env))
    except BaseException:
        for _, writer in writers:
            await writer.aclose()
        raise
    async with open_sink_hub(writers, **options) as hub:
        yield hub
