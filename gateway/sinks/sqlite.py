"""``sqlite:PATH[?partials=1]``: every event into an SQLite file other processes can read live.

Tables and columns: ``gateway.sinks.sqlite_schema`` (part of the public contract).
``calls`` gets one row per call from ``call_started`` (``from_number`` / ``to_number`` from
its ``custom_parameters`` ``From`` / ``To``, which the gateway's TwiML passes) and
``call_ended``; ``transcripts`` the committed transcripts (partials too with
``?partials=1``); ``events`` every event, ``json`` exactly as the JSONL sink writes it.

Delivery upstream is at-least-once: a repeat of ``(call_sid, seq)`` adds no row.

The file is in WAL mode, so readers in other processes never block the writer nor see
half a batch; each ``write()`` is one transaction.  ``synchronous=NORMAL``: a committed
batch survives a crash of earpiece; a power cut may lose the last batches.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import orjson
import outcome
import trio

from actors.backoff import Backoff

from .base import Event, SinkDeliveryError, SinkSpec, SinkSpecError
from .sqlite_schema import SchemaVersionError, check_version, migrate

__all__ = ["SqliteWriter", "from_spec", "rows_for", "SqliteRows"]

log = logging.getLogger("earpiece.sinks.sqlite")

T = TypeVar("T")

#: how long one statement waits for another process's write lock before it fails
BUSY_TIMEOUT_MS = 5000
#: attempts at one batch while the file is locked or the disk refuses (then given up)
MAX_ATTEMPTS = 6

_INSERT_EVENT = "INSERT OR IGNORE INTO events (call_sid, seq, type, json) VALUES (?, ?, ?, ?)"
_INSERT_TRANSCRIPT = ("INSERT OR IGNORE INTO transcripts (call_sid, seq, kind, text, provider, audio_start_ms, "
                      "audio_end_ms, emitted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
# Upserts touching disjoint columns: the start and the end of a call may come in either
# order (and repeated) and still make one complete row.
_UPSERT_STARTED = (
    "INSERT INTO calls (call_sid, stream_sid, account_sid, from_number, to_number, started_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (call_sid) DO UPDATE SET stream_sid = excluded.stream_sid, "
    "account_sid = excluded.account_sid, from_number = excluded.from_number, to_number = excluded.to_number, "
    "started_at = excluded.started_at")
_UPSERT_ENDED = (
    "INSERT INTO calls (call_sid, stream_sid, ended_at, end_reason, audio_ms, forwarded_ms, dropped_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (call_sid) DO UPDATE SET "
    "stream_sid = coalesce(calls.stream_sid, excluded.stream_sid), ended_at = excluded.ended_at, "
    "end_reason = excluded.end_reason, audio_ms = excluded.audio_ms, forwarded_ms = excluded.forwarded_ms, "
    "dropped_ms = excluded.dropped_ms")


@attrs.frozen
class SqliteRows:
    """One batch as rows, in the batch's order (pure; no I/O)."""

    events: list[tuple[Any, ...]]
    transcripts: list[tuple[Any, ...]]
    started: list[tuple[Any, ...]]
    ended: list[tuple[Any, ...]]


def rows_for(events: Sequence[Event], *, partials: bool = False) -> SqliteRows:
    rows = SqliteRows([], [], [], [])
    for event in events:
        call_sid = event.get("call_sid") or None
        kind = event.get("type")
        rows.events.append((call_sid, event.get("seq"), kind, orjson.dumps(event).decode()))
        if call_sid is None:
            continue  # kept in `events`; a call without a sid has no row of its own
        if kind == "transcript" and (partials or event.get("kind") == "committed"):
            rows.transcripts.append((call_sid, event.get("seq"), event.get("kind"), event.get("text"),
                                     event.get("provider"), event.get("audio_start_ms"),
                                     event.get("audio_end_ms"), event.get("emitted_at")))
        elif kind == "call_started":
            params = event.get("custom_parameters")
            params = params if isinstance(params, Mapping) else {}
            rows.started.append((call_sid, event.get("stream_sid"), event.get("account_sid"), params.get("From"),
                                 params.get("To"), event.get("emitted_at")))
        elif kind == "call_ended":
            rows.ended.append((call_sid, event.get("stream_sid"), event.get("emitted_at"), event.get("reason"),
                               event.get("audio_ms"), event.get("forwarded_ms"), event.get("dropped_ms")))
    return rows


class _DbThread:
    """One thread that owns the connection: every job runs on it, one at a time, so the
    connection keeps sqlite3's ``check_same_thread`` guard (trio's worker threads are
    pooled, so ``trio.to_thread`` would hand it to whichever thread is free)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the thread and return its result.  Not cancellable once queued:
        a transaction is either committed or rolled back before ``run`` returns, so the
        caller always knows which."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        result: list[outcome.Outcome[T]] = []

        def job() -> None:
            result.append(outcome.capture(fn))
            token.run_sync_soon(done.set)

        self._jobs.put(job)
        with trio.CancelScope(shield=True):
            await done.wait()
        return result[0].unwrap()

    async def stop(self) -> None:
        self._jobs.put(None)
        await trio.to_thread.run_sync(self._thread.join)


class SqliteWriter:
    """The ``sqlite:`` writer.  The file is opened (and migrated forward) on the first
    ``write()``, on the writer's own thread; construction touches nothing but the check in
    ``from_spec``."""

    def __init__(self, path: Path, *, partials: bool = False, max_attempts: int = MAX_ATTEMPTS,
                 backoff: Backoff | None = None, busy_timeout: float = BUSY_TIMEOUT_MS / 1000) -> None:
        self.path = path
        self.partials = partials
        self.name = f"sqlite:{path}"
        self._max_attempts = max_attempts
        self._busy_timeout = busy_timeout
        self._backoff = backoff or Backoff(0.2, 5.0)
        self._thread: _DbThread | None = None
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SqliteWriter({self.name!r}, partials={self.partials})"

    async def write(self, events: Sequence[Event]) -> None:
        """Store the batch in one transaction.  While the file is locked by another writer
        or the disk refuses (``sqlite3.OperationalError``), retry with backoff up to
        ``max_attempts``; then, or at once for anything else, ``SinkDeliveryError``."""
        if not events:
            return
        rows = rows_for(events, partials=self.partials)
        if self._thread is None:
            self._thread = _DbThread(f"earpiece-{self.name}")
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self._thread.run(lambda: self._insert(rows))
                return
            except sqlite3.OperationalError as exc:
                if attempt == self._max_attempts:
                    raise SinkDeliveryError(f"{self.name}: gave up on {len(events)} events after "
                                            f"{attempt} attempts: {exc}") from exc
                delay = self._backoff.delay(attempt)
                log.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", self.name, exc, delay, attempt,
                            self._max_attempts)
                await trio.sleep(delay)
            except SchemaVersionError as exc:
                raise SinkDeliveryError(str(exc)) from exc
            except sqlite3.Error as exc:
                raise SinkDeliveryError(f"{self.name}: cannot store {len(events)} events: {exc}") from exc

    def _open(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are ours (BEGIN IMMEDIATE takes the write lock up
        # front, so a batch never fails half-way on a lock upgrade).
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=self._busy_timeout)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            found = migrate(conn, str(self.path))
        except BaseException:
            conn.close()
            raise
        if found == 0:
            log.info("%s: created the schema", self.name)
        return conn

    def _insert(self, rows: SqliteRows) -> None:
        if self._conn is None:
            self._conn = self._open()
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT_EVENT, rows.events)
            conn.executemany(_INSERT_TRANSCRIPT, rows.transcripts)
            conn.executemany(_UPSERT_STARTED, rows.started)
            conn.executemany(_UPSERT_ENDED, rows.ended)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the last connection checkpoints the WAL into the file
            self._conn = None

    async def aclose(self) -> None:
        if self._thread is not None:
            thread, self._thread = self._thread, None
            await thread.run(self._close)
            await thread.stop()


def from_spec(spec: SinkSpec, env: Mapping[str, str]) -> SqliteWriter:
    """``sqlite:PATH[?partials=1]`` → a writer.  ``SinkSpecError`` when the path is empty,
    its directory does not exist, an option is unknown, or the file exists but is not an
    SQLite database or has a schema newer than this earpiece knows (read-only check; the
    file is created on the first write)."""
    target = spec.target.strip()
    if not target or target == ":memory:":
        raise SinkSpecError(f"bad sink {spec.shown!r}: sqlite:PATH needs a file path, e.g. sqlite:calls.db")
    unknown = sorted(set(spec.options) - {"partials"})
    if unknown:
        raise SinkSpecError(f"bad sink {spec.shown!r}: sqlite takes only partials=0|1, not {', '.join(unknown)}")
    partials = spec.options.get("partials", "0")
    if partials not in ("0", "1"):
        raise SinkSpecError(f"bad sink {spec.shown!r}: partials= takes 0 or 1, not {partials!r}")
    path = Path(target).expanduser()
    if not path.parent.is_dir():
        raise SinkSpecError(f"bad sink {spec.shown!r}: directory {path.parent} does not exist")
    if path.is_dir():
        raise SinkSpecError(f"bad sink {spec.shown!r}: {path} is a directory")
    if path.exists():
        check_existing(path)
    return SqliteWriter(path, partials=partials == "1")


def check_existing(path: Path) -> int:
    """The schema version of an existing file, read without writing anything;
    ``SinkSpecError`` if it is not an SQLite database or is newer than we know."""
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            # reading the schema is what tells "not a database" apart
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise SinkSpecError(f"{path} cannot be used as an earpiece database: {exc}") from None
    check_version(version, str(path))
    clash = sorted(tables & {"calls", "transcripts", "events"})
    if version == 0 and clash:
        raise SinkSpecError(f"{path} already has table(s) {', '.join(clash)} but no earpiece schema version: "
                            "point the sink at a file of its own")
    return version
