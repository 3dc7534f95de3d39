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
    from coredis.exceptions import ConnectionError as RedisConnectionError
    from coredis.exceptions import ResponseError
    from coredis.retry import NoRetryPolicy

    client_url, stream = tail_target(url)
    out = out or sys.stdout
    backoff = Backoff(base=0.1, cap=5.0)
    failures = 0
    last_id = start or "0"
    # group mode: (re)starting, first re-read what this consumer holds unacknowledged
    pending_first = True
    async with coredis.Redis.from_url(client_url, retry_policy=NoRetryPolicy(), connect_timeout=2.0,
                                      stream_timeout=block_ms / 1000 + 10) as client:
        while True:
            try:
                if group is None and last_id == "$":
                    # "$" resolved once: re-sending it would skip what came between two reads
                    newest = await client.xrevrange(stream, count=1)
                    last_id = newest[0].identifier.decode() if newest else "0-0"
                if group is None:
                    reply = await client.xread({stream: last_id}, count=READ_COUNT, block=block_ms)
                else:
                    if pending_first:
                        try:
                            await client.xgroup_create(stream, group, start or "0", mkstream=True)
                        except ResponseError as exc:
                            if "BUSYGROUP" not in str(exc):
                                raise
                    reply = await client.xreadgroup(group, consumer or "earpiece-tail",
                                                    {stream: "0" if pending_first else ">"}, count=READ_COUNT,
                                                    block=None if pending_first else block_ms)
            except (RedisConnectionError, TimeoutError, OSError) as exc:
                failures += 1
                pending_first = True
                if failures == 1:
                    print(f"earpiece tail: Redis is away ({exc}); retrying", file=sys.stderr, flush=True)
                await trio.sleep(backoff.delay(failures))
                continue
            if failures:
                print("earpiece tail: Redis is back", file=sys.stderr, flush=True)
                failures = 0
            entries = next(iter(reply.values()), ()) if reply else ()
            if not entries:
                pending_first = False
                continue
            lines = [line for line in (_line(entry.field_values) for entry in entries) if line is not None]
            if lines:
                out.write("".join(line + "\n" for line in lines))
                out.flush()
            last_id = entries[-1].identifier.decode()
            if group is not None:
                try:
                    await client.xack(stream, group, [entry.identifier for entry in entries])
                except (RedisConnectionError, TimeoutError, OSError):
                    pending_first = True  # unacknowledged: printed again once Redis is back (at-least-once)
