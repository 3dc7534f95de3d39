"""``earpiece calls sqlite:PATH [CALL_SID]``: what the ``sqlite:`` sink stored.

Without a sid: one line per call, oldest first (sid, from, to, started, duration,
end reason, dropped audio).  With one: that call's committed transcripts in order, one
line each, ``[start-end] text`` on the call's audio clock.

The file is opened read-only (a gateway may be writing it at the same time: WAL lets
both go on).  A missing or unusable file is ``ConfigError`` (exit status 2); an unknown
sid prints one line and exits with status 1.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TextIO

import attrs

from .config import ConfigError
from .sinks.base import SinkSpecError, parse_sink_spec
from .sinks.sqlite_schema import SchemaVersionError, check_version

__all__ = ["StoredCall", "StoredTranscript", "open_calls_db", "list_calls", "call_transcript", "run_calls"]


@attrs.frozen
class StoredCall:
    call_sid: str
    from_number: str | None
    to_number: str | None
    started_at: str | None
    ended_at: str | None
    end_reason: str | None
    audio_ms: int | None
    dropped_ms: int | None


@attrs.frozen
class StoredTranscript:
    seq: int
    text: str
    audio_start_ms: int | None
    audio_end_ms: int | None


def db_path(spec: str) -> Path:
    """``sqlite:PATH`` → PATH (``ConfigError`` for anything else)."""
    try:
        parsed = parse_sink_spec(spec)
    except SinkSpecError as exc:
        raise ConfigError(str(exc)) from None
    if parsed.kind != "sqlite" or not parsed.target:
        raise ConfigError(f"earpiece calls reads a sqlite:PATH sink's file, not {spec!r}")
    return Path(parsed.target).expanduser()


@contextmanager
def open_calls_db(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection (``ConfigError`` if the file is missing, not a database,
    or from a newer earpiece)."""
    if not path.is_file():
        raise ConfigError(f"no such database: {path}")
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open {path}: {exc}") from None
    with closing(conn):
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            check_version(version, str(path))
            if version == 0:
                raise ConfigError(f"{path} holds no earpiece calls yet (no schema)")
        except SchemaVersionError as exc:
            raise ConfigError(str(exc)) from None
        except sqlite3.Error as exc:
            raise ConfigError(f"{path} cannot be read as an earpiece database: {exc}") from None
        yield conn


def list_calls(conn: sqlite3.Connection) -> list[StoredCall]:
    rows = conn.execute(
        "SELECT call_sid, from_number, to_number, started_at, ended_at, end_reason, audio_ms, dropped_ms "
        "FROM calls ORDER BY started_at IS NULL, started_at, call_sid")
    return [StoredCall(*row) for row in rows]


def call_transcript(conn: sqlite3.Connection, call_sid: str) -> list[StoredTranscript] | None:
    """The committed transcripts in ``seq`` order; ``None`` if the call is unknown."""
    known = conn.execute("SELECT 1 FROM calls WHERE call_sid = ? UNION ALL "
                         "SELECT 1 FROM transcripts WHERE call_sid = ? LIMIT 1", (call_sid, call_sid)).fetchone()
    if known is None:
        return None
    rows = conn.execute("SELECT seq, text, audio_start_ms, audio_end_ms FROM transcripts "
                        "WHERE call_sid = ? AND kind = 'committed' ORDER BY seq", (call_sid,))
    return [StoredTranscript(*row) for row in rows]


def _clock(ms: int | None) -> str:
    if ms is None:
        return "?"
    minutes, rest = divmod(ms, 60_000)
    return f"{minutes}:{rest / 1000:04.1f}"


def call_line(call: StoredCall) -> tuple[str, ...]:
    duration = f"{call.audio_ms / 1000:.1f}s" if call.audio_ms is not None else "-"
    return (call.call_sid, call.from_number or "-", call.to_number or "-", call.started_at or "-", duration,
            call.end_reason or ("live" if call.ended_at is None else "-"),
            f"{call.dropped_ms}ms" if call.dropped_ms is not None else "-")


def run_calls(spec: str, call_sid: str | None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    path = db_path(spec)
    with open_calls_db(path) as conn:
        if call_sid is None:
            rows = [("call_sid", "from", "to", "started", "duration", "reason", "dropped")]
            rows += [call_line(call) for call in list_calls(conn)]
            widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
            for row in rows:
                out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")
            return 0
        transcript = call_transcript(conn, call_sid)
    if transcript is None:
        err.write(f"earpiece: no call {call_sid} in {path}\n")
        return 1
    for line in transcript:
        out.write(f"[{_clock(line.audio_start_ms)}-{_clock(line.audio_end_ms)}] {line.text}\n")
    return 0

