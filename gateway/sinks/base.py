"""What every sink shares: the spec syntax and the writer seam.

A spec is ``KIND[:TARGET][?OPTIONS]`` (``stdout``, ``jsonl:calls.jsonl``,
``redis://127.0.0.1:6379/0?stream=earpiece:events``, ``sqlite:calls.db?partials=1``,
``webhook:https://crm.example/hook``, ``python:mypkg.hooks:on_event``).  Any spec takes
``types=`` (comma-separated, ``+`` also accepted so it fits in ``EARPIECE_SINKS``):
``transcript`` (both kinds), ``transcript.partial``, ``transcript.committed``, or an
event type such as ``call_ended``.  ``types`` is taken out of the spec; the other options
stay with the sink (for ``webhook:URL`` and ``redis://`` the URL keeps its own query).

A ``SinkWriter`` is one destination.  The sink runtime calls it from that sink's own
task, never from a call: ``write`` delivers a batch in order and returns once it is
delivered (retrying inside, with backoff, while the destination is away: the events
wait in the sink's bounded queue meanwhile), or raises ``SinkDeliveryError`` to give
up on that batch (its events are counted as dropped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

import attrs

__all__ = ["Event", "SinkSpec", "SinkSpecError", "SinkDeliveryError", "SinkWriter", "parse_sink_spec",
           "EVENT_TYPES"]

Event = Mapping[str, Any]

#: what ``types=`` may name (``transcript`` stands for both kinds)
EVENT_TYPES = frozenset({
    "transcript", "transcript.partial", "transcript.committed", "call_started", "call_ended", "dtmf",
    "provider_error", "provider_reconnected", "provider_failover",
})


class SinkSpecError(ValueError):
    """A ``--sink`` spec that cannot be used; the message says what to fix."""


class SinkDeliveryError(Exception):
    """A writer gave up on a batch (e.g. a webhook answered 400, or retries ran out).

    ``lost``: how many of the batch's events were lost (``None``: all of them), for a
    writer that delivers event by event and lost only some (``python:``)."""

    def __init__(self, message: str, *, lost: int | None = None) -> None:
        super().__init__(message)
        self.lost = lost


class SinkWriter(Protocol):
    #: shown in logs and as the ``sink`` metrics label; never holds a password or token
    name: str

    async def write(self, events: Sequence[Event]) -> None: ...

    async def aclose(self) -> None: ...


@attrs.frozen
class SinkSpec:
    kind: str
    #: what follows ``KIND:`` (a path, URL or ``module:callable``); for ``redis``/``rediss``
    #: the whole URL without ``types``
    target: str
    #: the spec's options other than ``types`` (for URL kinds they also stay in ``target``)
    options: Mapping[str, str] = attrs.field(factory=dict)
    #: ``None``: every event
    types: frozenset[str] | None = None
    #: the spec as given, with any password shown as ``***``
    shown: str = ""

    def wants(self, event: Event) -> bool:
        if self.types is None:
            return True
        kind = event.get("type")
        if kind == "transcript":
            return "transcript" in self.types or f"transcript.{event.get('kind')}" in self.types
        return kind in self.types


def _redact(spec: str) -> str:
    """``redis://:secret@host`` → ``redis://:***@host``."""
    scheme, sep, rest = spec.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return spec
    auth, _, host = rest.partition("@")
    user = auth.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def parse_sink_spec(spec: str) -> SinkSpec:
    """Split a spec without opening anything (``SinkSpecError`` when malformed)."""
    raw = spec.strip()
    if not raw:
        raise SinkSpecError("empty sink spec")
    if raw.startswith(("redis://", "rediss://")):
        kind = raw.split("://", 1)[0]
        body = raw
    else:
        kind, sep, body = raw.partition(":")
        if not sep and "?" in kind:
            kind, _, query = kind.partition("?")
            body = "?" + query
    base, _, query = body.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    types: frozenset[str] | None = None
    rest: list[tuple[str, str]] = []
    for key, value in pairs:
        if key == "types":
            names = frozenset(t.strip() for t in value.replace("+", ",").split(",") if t.strip())
            unknown = sorted(names - EVENT_TYPES)
            if unknown or not names:
                raise SinkSpecError(f"bad sink {_redact(raw)!r}: types= takes {', '.join(sorted(EVENT_TYPES))}"
                                    + (f", not {', '.join(unknown)}" if unknown else ""))
            types = names
        else:
            rest.append((key, value))
    target = base + ("?" + urlencode(rest) if rest else "") if kind in ("redis", "rediss", "webhook") else base
    return SinkSpec(kind=kind, target=target, options=dict(rest), types=types, shown=_redact(raw))
