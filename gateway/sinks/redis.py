"""``redis://[[USER]:PASSWORD@]HOST:PORT[/DB][?stream=NAME&maxlen=N]`` (``rediss://`` for
TLS): a Redis Stream.

Every event is one ``XADD STREAM MAXLEN ~ N * type T call_sid C seq S event JSON``, a
batch one pipeline (one write, one round trip).  ``event`` is the event's JSON exactly as
the JSONL sink writes it.  When Redis is away (refused, reset, timed out, still loading
its data), ``write`` retries the same batch with jittered backoff on a new connection
until it is back (the events wait in the sink's bounded queue meanwhile), and delivers it
in order.  Delivery is at-least-once: a pipeline cut by a lost connection is sent again
whole, so a consumer may see an event twice, always with the same ``(call_sid, seq)``.

The write path speaks RESP over a trio stream itself (``resp``): coredis, which ``earpiece
tail`` uses, costs several times more CPU per round trip on this hot path.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import trio

from actors.backoff import Backoff

from .base import SinkDeliveryError, SinkSpec, SinkSpecError
from .jsonl import encode_event
from .resp import RespConnection, RespError, RespProtocolError, bulk, encode_command

__all__ = ["RedisStreamSink", "RedisTarget", "from_spec", "parse_target", "DEFAULT_STREAM", "DEFAULT_MAXLEN",
           "client_url"]

log = logging.getLogger("earpiece.sinks")

DEFAULT_STREAM = "earpiece:events"
DEFAULT_MAXLEN = 1_000_000
#: seconds to connect, and to get a pipeline's replies, before the connection counts as lost
CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 10.0
#: error replies that mean "not now" rather than "never": retried like a lost connection
_TRANSIENT = ("LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN")


def client_url(target: str) -> str:
    """The URL without our own query (``stream``, ``maxlen``)."""
    parts = urlsplit(target)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class _Away(Exception):
    """Redis cannot take the batch now; try again later."""


class RedisTarget:
    """Where and how to connect, from the URL (password kept out of ``repr``)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.tls = parts.scheme == "rediss"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.db = int(parts.path.strip("/") or 0)
        self.username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password is not None else None

    def __repr__(self) -> str:
        return f"RedisTarget({'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db})"

    def handshake(self) -> list[bytes]:
        commands = []
        if self._password is not None:
            auth = (self.username, self._password) if self.username else (self._password,)
            commands.append(encode_command("AUTH", *auth))
        if self.db:
            commands.append(encode_command("SELECT", self.db))
        return commands


class RedisStreamSink:
    """A ``SinkWriter`` appending to one Redis Stream over one connection."""

    def __init__(self, url: str, *, stream: str = DEFAULT_STREAM, maxlen: int = DEFAULT_MAXLEN, name: str = "",
                 backoff: Backoff | None = None) -> None:
        self._target = RedisTarget(url)
        self.stream = stream
        self.maxlen = maxlen
        self.name = name or f"redis stream {stream}"
        self._backoff = backoff or Backoff(base=0.05, cap=2.0)
        # The constant head of every XADD, encoded once: ``*14`` then the fixed words.
        self._head = encode_command(b"XADD", stream, b"MAXLEN", b"~", maxlen, b"*", b"type")
        self._head = b"*14" + self._head[self._head.index(b"\r\n"):]
        self._conn: RespConnection | None = None
        self._tls = ssl.create_default_context() if self._target.tls else None

    async def write(self, events: Sequence[Mapping[str, Any]]) -> None:
        commands = [self._xadd(event) for event in events]
        failures = 0
        while True:
            try:
                await self._send(commands)
            except _Away as exc:
                failures += 1
                if failures == 1:
                    log.warning("sink %s: Redis is away (%s); %d events wait in the queue, retrying",
                                self.name, exc, len(commands))
                await trio.sleep(self._backoff.delay(failures))
                continue
            if failures:
                log.warning("sink %s: Redis is back after %d failed attempts; delivered", self.name, failures)
            return

    def _xadd(self, event: Mapping[str, Any]) -> bytes:
        return b"".join((self._head, bulk(str(event.get("type", ""))), b"$8\r\ncall_sid\r\n",
                         bulk(str(event.get("call_sid", ""))), b"$3\r\nseq\r\n", bulk(str(event.get("seq", ""))),
                         b"$5\r\nevent\r\n", bulk(encode_event(event))))

    async def _send(self, commands: list[bytes]) -> None:
        try:
            if self._conn is None:
                with trio.fail_after(CONNECT_TIMEOUT):
                    conn = await RespConnection.open(self._target.host, self._target.port, tls=self._tls)
                    try:
                        for reply in await conn.pipeline(self._target.handshake()):
                            if isinstance(reply, RespError):
                                raise SinkDeliveryError(f"{self.name}: Redis refused the connection setup: "
                                                        f"{reply.message}")
                    except BaseException:
                        await conn.aclose()
                        raise
                self._conn = conn
            with trio.fail_after(REPLY_TIMEOUT):
                replies = await self._conn.pipeline(commands)
        except (OSError, EOFError, trio.BrokenResourceError, trio.TooSlowError, RespProtocolError,
                ssl.SSLError) as exc:
            await self._drop_connection()
            raise _Away(str(exc) or type(exc).__name__) from exc
        except BaseException:
            await self._drop_connection()  # cancelled mid-pipeline: the stream is in an unknown state
            raise
        errors = [r for r in replies if isinstance(r, RespError)]
        if errors:
            if all(e.message.startswith(_TRANSIENT) for e in errors):
                raise _Away(errors[0].message)
            raise SinkDeliveryError(f"{self.name}: Redis refused {len(errors)} of {len(commands)} events: "
                                    f"{errors[0].message}", lost=len(errors))

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.aclose()

    async def aclose(self) -> None:
        await self._drop_connection()


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
