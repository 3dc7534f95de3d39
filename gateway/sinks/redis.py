"""``redis://HOST:PORT[/DB][?stream=NAME&maxlen=N]`` (``rediss://`` for TLS): a Redis Stream.

Every event is one ``XADD STREAM MAXLEN ~ N * type T call_sid C seq S event JSON``, a
batch one pipeline (one round trip).  ``event`` is the event's JSON exactly as the JSONL
sink writes it.  When Redis is away, ``write`` retries the same batch with jittered
backoff until it is back (the events wait in the sink's bounded queue meanwhile) and
delivers it in order.  Delivery is at-least-once: a pipeline cut by a lost connection is
sent again whole, so a consumer may see an event twice, always with the same
``(call_sid, seq)``.

Client: coredis (its I/O is anyio, so it runs on trio).  Its connection pool lives as long
as this writer's context, which the sink's own task enters (see ``runtime``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import trio

from actors.backoff import Backoff

from .base import SinkDeliveryError, SinkSpec, SinkSpecError
from .jsonl import encode_event

if TYPE_CHECKING:
    import coredis

__all__ = ["RedisStreamSink", "from_spec", "DEFAULT_STREAM", "DEFAULT_MAXLEN", "client_url"]

log = logging.getLogger("earpiece.sinks")

DEFAULT_STREAM = "earpiece:events"
DEFAULT_MAXLEN = 1_000_000
#: seconds to connect / to wait for a reply before the connection counts as lost
CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 10.0


def client_url(target: str) -> str:
    """The URL without our own query (``stream``, ``maxlen``), for the client."""
    parts = urlsplit(target)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class RedisStreamSink:
    """A ``SinkWriter`` and async context manager (the connection pool's lifetime)."""

    def __init__(self, url: str, *, stream: str = DEFAULT_STREAM, maxlen: int = DEFAULT_MAXLEN, name: str = "",
                 backoff: Backoff | None = None) -> None:
        self._url = url
        self.stream = stream
        self.maxlen = maxlen
        self.name = name or f"redis stream {stream}"
        self._backoff = backoff or Backoff(base=0.05, cap=2.0)
        self._client: coredis.Redis[bytes] | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> RedisStreamSink:
        # coredis is imported when a Redis sink starts, not by every ``earpiece`` command.
        import coredis
        from coredis.retry import NoRetryPolicy

        # No I/O here: the pool connects on the first command.
        client = coredis.Redis.from_url(self._url, retry_policy=NoRetryPolicy(), connect_timeout=CONNECT_TIMEOUT,
                                        stream_timeout=REPLY_TIMEOUT)
        self._client = await self._stack.enter_async_context(client)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._client = None
        await self._stack.aclose()

    async def write(self, events: Sequence[Mapping[str, Any]]) -> None:
        if self._client is None:
            raise SinkDeliveryError(f"{self.name}: used outside its context (no connection pool)")
        from coredis.exceptions import ConnectionError as RedisConnectionError
        from coredis.exceptions import RedisError

        # Failures that mean "Redis is away for now" retry the batch; a ResponseError
        # (wrong type at the key, no permission) is the user's to fix: the batch is given up.
        away = (RedisConnectionError, TimeoutError, OSError)
        entries = [_fields(event) for event in events]
        failures = 0
        while True:
            try:
                await self._xadd(self._client, entries)
            except away as exc:
                failures += 1
                if failures == 1:
                    log.warning("sink %s: Redis is away (%s); %d events wait in the queue, retrying",
                                self.name, exc, len(entries))
                await trio.sleep(self._backoff.delay(failures))
                continue
            except RedisError as exc:
                raise SinkDeliveryError(f"{self.name}: Redis refused the batch: {exc}") from exc
            if failures:
                log.warning("sink %s: Redis is back after %d failed attempts; delivered", self.name, failures)
            return

    async def _xadd(self, client: coredis.Redis[bytes], entries: list[dict[str, bytes]]) -> None:
        from coredis.tokens import PureToken

        async with client.pipeline(transaction=False) as pipe:
            for fields in entries:
                pipe.xadd(self.stream, fields, trim_strategy=PureToken.MAXLEN, threshold=self.maxlen,
                          trim_operator=PureToken.APPROXIMATELY)

    async def aclose(self) -> None:
        return None


def _fields(event: Mapping[str, Any]) -> dict[str, bytes]:
    return {"type": str(event.get("type", "")).encode(), "call_sid": str(event.get("call_sid", "")).encode(),
            "seq": str(event.get("seq", "")).encode(), "event": encode_event(event)}


def parse_target(spec: SinkSpec) -> tuple[str, str, int]:
    """(client URL, stream, maxlen) from a ``redis://`` spec, or ``SinkSpecError``."""
    parts = urlsplit(spec.target)
    if not parts.hostname:
        raise SinkSpecError(f"bad sink {spec.shown!r}: expected {spec.kind}://HOST:PORT[/DB][?stream=NAME&maxlen=N]")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise SinkSpecError(f"bad sink {spec.shown!r}: the port must be a number") from None
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise SinkSpecError(f"bad sink {spec.shown!r}: the database must be a number (/0), not {db!r}")
    unknown = sorted(set(spec.options) - {"stream", "maxlen"})
    if unknown:
        raise SinkSpecError(f"bad sink {spec.shown!r}: unknown option {', '.join(unknown)} "
                            "(redis takes stream=, maxlen=, types=)")
    stream = spec.options.get("stream", DEFAULT_STREAM)
    if not stream:
        raise SinkSpecError(f"bad sink {spec.shown!r}: stream= needs a name")
    raw = spec.options.get("maxlen", str(DEFAULT_MAXLEN))
    if not raw.isdigit() or int(raw) < 1:
        raise SinkSpecError(f"bad sink {spec.shown!r}: maxlen= must be a positive whole number, not {raw!r}")
    return client_url(spec.target), stream, int(raw)


def from_spec(spec: SinkSpec, env: Mapping[str, str]) -> RedisStreamSink:
    url, stream, maxlen = parse_target(spec)
    return RedisStreamSink(url, stream=stream, maxlen=maxlen, name=f"{spec.shown.split('?')[0]} stream={stream}")
