"""The ``sqlite:PATH`` sink's schema: tables, forward-only migrations, version checks.

The schema version lives in ``PRAGMA user_version``.  ``MIGRATIONS[i]`` takes a database
from version ``i`` to ``i + 1``; a database is only ever moved forward, one step at a time,
each step in the same transaction as the version bump.  A database at a version newer
than ``SCHEMA_VERSION`` was written by a newer earpiece: ``SchemaVersionError``, nothing
touched.

Column names are part of the public contract (INTERFACE.md):

``calls(call_sid PRIMARY KEY, stream_sid, account_sid, from_number, to_number, started_at,
ended_at, end_reason, audio_ms, forwarded_ms, dropped_ms)`` ·
``transcripts(call_sid, seq, kind, text, provider, audio_start_ms, audio_end_ms,
emitted_at)`` with primary key ``(call_sid, seq)`` ·
``events(call_sid, seq, type, json)``, unique on ``(call_sid, seq)``.

``events.call_sid`` is NULL for an event of a stream that ended before Twilio's ``start``
named its call (SQLite treats NULLs as distinct, so such events never collide).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from .base import SinkSpecError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SchemaVersionError", "migrate", "schema_version"]

#: one tuple of statements per step; never edit a released step, append a new one
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 0 -> 1: the three tables
    (
        """CREATE TABLE calls (
            call_sid TEXT PRIMARY KEY NOT NULL,
            stream_sid TEXT,
            account_sid TEXT,
            from_number TEXT,
            to_number TEXT,
            started_at TEXT,
            ended_at TEXT,
            end_reason TEXT,
            audio_ms INTEGER,
            forwarded_ms INTEGER,
            dropped_ms INTEGER
        )""",
        """CREATE TABLE transcripts (
            call_sid TEXT NOT NULL,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            text TEXT NOT NULL,
            provider TEXT,
            audio_start_ms INTEGER,
            audio_end_ms INTEGER,
            emitted_at TEXT,
            PRIMARY KEY (call_sid, seq)
        )""",
        """CREATE TABLE events (
            call_sid TEXT,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            json TEXT NOT NULL,
            UNIQUE (call_sid, seq)
        )""",
    ),
    # 1 -> 2: `earpiece calls` lists by start time; consumers pick events by type
    (
        "CREATE INDEX calls_by_started_at ON calls (started_at)",
        "CREATE INDEX events_by_type ON events (type, call_sid)",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaVersionError(SinkSpecError):
    """The database's schema is newer than this earpiece knows (or otherwise unusable)."""


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_version(version: int, where: str, known: int = SCHEMA_VERSION) -> None:
    if version > known:
        raise SchemaVersionError(
            f"{where} has schema version {version}, but this earpiece knows versions up to {known}: "
            "upgrade earpiece, or point the sink at another file")


def migrate(conn: sqlite3.Connection, where: str, steps: Sequence[Sequence[str]] = MIGRATIONS) -> int:
    """Bring the database forward to ``len(steps)`` in one immediate transaction; returns the
    version it was at.  ``conn`` must be in autocommit mode (``isolation_level=None``) so the
    DDL and the version bump commit together."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(conn)
        check_version(found, where, len(steps))
        for version in range(found, len(steps)):
            for statement in steps[version]:
                try:
                    conn.execute(statement)
                except sqlite3.DatabaseError as exc:
                    # not transient: e.g. a file of another application that has a `calls` table
                    raise SchemaVersionError(f"cannot bring {where} from schema version {version} to "
                                             f"{version + 1}: {exc}") from exc
        if found != len(steps):
            # PRAGMA takes no parameters; the value is our own int
            conn.execute(f"PRAGMA user_version = {len(steps):d}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found
