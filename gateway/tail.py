"""``earpiece tail redis://…``: the downstream side of a deployment in one command.

Reads the Redis Stream the ``redis://`` sink writes and prints each event the way the
``stdout`` sink does.  Plain (``XREAD``, from the start of the stream, or ``--from ID``,
``$`` for only what comes next) or as a member of a consumer group (``--group G
--consumer C``: ``XREADGROUP``; first what this consumer was given and did not
acknowledge before, then new entries; every printed entry acknowledged with ``XACK``).
Runs until interrupted; a lost connection is retried with backoff.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import orjson
import trio

from actors.backoff import Backoff

from .sinks import SinkSpecError, parse_sink_spec
from .sinks.redis import parse_target
from .sinks.stdout import format_line

__all__ = ["tail_stream", "tail_target"]

log = logging.getLogger("earpiece.tail")

#: entries per read, and how long one blocking read waits (ms) before asking again
READ_COUNT = 200
BLOCK_MS = 1000


def tail_target(url: str) -> tuple[str, str]:
    """(client URL, stream) from ``redis://HOST:PORT[/DB][?stream=NAME]`` (``SinkSpecError``)."""
    spec = parse_sink_spec(url)
    if spec.kind not in ("redis", "rediss"):
        raise SinkSpecError(f"tail reads a Redis Stream: expected redis://HOST:PORT[/DB][?stream=NAME], not {spec.shown!r}")
    client_url, stream, _ = parse_target(spec)
    return client_url, stream


def _line(fields: Mapping[Any, Any]) -> str | None:
    raw = fields.get(b"event", fields.get("event"))
    try:
        event = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return f"(an entry without an event: {dict(fields)!r})"
    return format_line(event) if isinstance(event, dict) else None


async def tail_stream(url: str, *, group: str | None = None, consumer: str | None = None, start: str | None = None,
                      out: TextIO | None = None, block_ms: int = BLOCK_MS) -> None:
    """Print the stream's events until cancelled."""
    import coredis
    from coredis.retry import NoRetryPolicy

    client_url, stream = tail_target(url)
    async with coredis.Redis.from_url(client_url, retry_policy=NoRetryPolicy(), connect_timeout=2.0,
                                      stream_timeout=block_ms / 1000 + 10) as client:
        await _StreamTail(client, stream, group, consumer, start, block_ms).run(out or sys.stdout)


class _StreamTail:
    """``tail_stream``'s loop on one client: read, print, acknowledge (group mode); a lost
    connection is announced once, retried with backoff, announced again when it is back."""

    def __init__(self, client: Any, stream: str, group: str | None, consumer: str | None, start: str | None,
                 block_ms: int) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer or "earpiece-tail"
        self.start = start
        self.block_ms = block_ms
        self.backoff = Backoff(base=0.1, cap=5.0)
        self.failures = 0
        self.last_id = start or "0"
        # group mode: (re)starting, first re-read what this consumer holds unacknowledged
        self.pending_first = True

    async def run(self, out: TextIO) -> None:
        from coredis.exceptions import ConnectionError as RedisConnectionError

        while True:
            try:
                reply = await self._read()
            except (RedisConnectionError, TimeoutError, OSError) as exc:
                await self._retry_after(exc)
                continue
            if self.failures:
                print("earpiece tail: Redis is back", file=sys.stderr, flush=True)
                self.failures = 0
            entries = next(iter(reply.values()), ()) if reply else ()
            if not entries:
                self.pending_first = False
                continue
            lines = [line for line in (_line(entry.field_values) for entry in entries) if line is not None]
            if lines:
                out.write("".join(line + "\n" for line in lines))
                out.flush()
            self.last_id = entries[-1].identifier.decode()
            if self.group is not None:
                await self._acknowledge(entries)

    async def _read(self) -> Any:
        client, stream = self.client, self.stream
        if self.group is None:
            if self.last_id == "$":
                # "$" resolved once: re-sending it would skip what came between two reads
                newest = await client.xrevrange(stream, count=1)
                self.last_id = newest[0].identifier.decode() if newest else "0-0"
            return await client.xread({stream: self.last_id}, count=READ_COUNT, block=self.block_ms)
        if self.pending_first:
            await self._create_group()
        return await client.xreadgroup(self.group, self.consumer, {stream: "0" if self.pending_first else ">"},
                                       count=READ_COUNT, block=None if self.pending_first else self.block_ms)

    async def _create_group(self) -> None:
        from coredis.exceptions import ResponseError

        try:
            await self.client.xgroup_create(self.stream, self.group, self.start or "0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _retry_after(self, exc: Exception) -> None:
        self.failures += 1
        self.pending_first = True
        if self.failures == 1:
            print(f"earpiece tail: Redis is away ({exc}); retrying", file=sys.stderr, flush=True)
        await trio.sleep(self.backoff.delay(self.failures))

    async def _acknowledge(self, entries: Any) -> None:
        from coredis.exceptions import ConnectionError as RedisConnectionError

        try:
            await self.client.xack(self.stream, self.group, [entry.identifier for entry in entries])
        except (RedisConnectionError, TimeoutError, OSError):
            self.pending_first = True  # unacknowledged: printed again once Redis is back (at-least-once)
