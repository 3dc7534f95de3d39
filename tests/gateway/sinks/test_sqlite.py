"""sqlite:PATH sink and `earpiece calls`: real gateway, real calls, real SQLite files, other processes reading."""

from __future__ import annotations

import json
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import orjson
import pytest
import trio
import trio_websocket

from actors.backoff import Backoff
from gateway.simulator import simulate_call
from gateway.sinks import open_sinks
from gateway.sinks.base import SinkDeliveryError, SinkSpecError, parse_sink_spec
from gateway.sinks.sqlite import SqliteWriter, from_spec
from gateway.sinks.sqlite_schema import MIGRATIONS, SCHEMA_VERSION, SchemaVersionError, migrate
from providers.scripted import ScriptedProvider
from tests.conftest import running_gateway
from tests.helpers import call_ids, open_stream_socket, tone, twilio_script

CALL_LIMIT = 30  # seconds: a bound on each test, never an assertion on speed

READER = """
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=5)
sid = sys.argv[2]
print(json.dumps({
    "mode": db.execute("PRAGMA journal_mode").fetchone()[0],
    "calls": db.execute("SELECT call_sid, from_number, to_number, ended_at FROM calls WHERE call_sid = ?",
                        (sid,)).fetchall(),
    "transcripts": [row[0] for row in db.execute("SELECT text FROM transcripts WHERE call_sid = ? ORDER BY seq",
                                                 (sid,))],
}))
"""


def writer_for(path: Path, options: str = "") -> SqliteWriter:
    return from_spec(parse_sink_spec(f"sqlite:{path}{options}"), {})


def rows(path: Path, sql: str, *args: object) -> list[tuple]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql, args).fetchall()


def expected_rows(jsonl: list[dict]) -> tuple[set, list, list]:
    """What the contract says the tables hold, derived from the JSONL sink's events."""
    calls: dict[str, dict] = {}
    for e in jsonl:
        if e["type"] == "call_started":
            params = e["custom_parameters"]
            calls.setdefault(e["call_sid"], {}).update(
                stream_sid=e["stream_sid"], account_sid=e["account_sid"], from_number=params.get("From"),
                to_number=params.get("To"), started_at=e["emitted_at"])
        elif e["type"] == "call_ended":
            calls.setdefault(e["call_sid"], {}).update(
                ended_at=e["emitted_at"], end_reason=e["reason"], audio_ms=e["audio_ms"],
                forwarded_ms=e["forwarded_ms"], dropped_ms=e["dropped_ms"])
    columns = ("stream_sid", "account_sid", "from_number", "to_number", "started_at", "ended_at", "end_reason",
               "audio_ms", "forwarded_ms", "dropped_ms")
    call_rows = {(sid, *(c[k] for k in columns)) for sid, c in calls.items()}
    transcripts = sorted((e["call_sid"], e["seq"], e["kind"], e["text"], e["provider"], e["audio_start_ms"],
                          e["audio_end_ms"], e["emitted_at"])
                         for e in jsonl if e["type"] == "transcript" and e["kind"] == "committed")
    return call_rows, transcripts, columns


async def committed_rows(db: Path, call_sid: str, at_least: int) -> None:
    """Wait (bounded by the caller's ``fail_after``) until the sink stored that many commits."""
    while rows(db, "SELECT count(*) FROM transcripts WHERE call_sid = ?", call_sid)[0][0] < at_least:
        await trio.sleep(0.01)


async def test_concurrent_calls_are_stored_exactly_as_the_jsonl_sink_saw_them_and_readable_while_live(tmp_path):
    db, jsonl_path = tmp_path / "calls.db", tmp_path / "events.jsonl"
    held_sid = call_ids(1)[0]
    params = {n: {"From": f"+1500555000{n}", "To": "+15005550001", "CallSid": call_ids(n)[0]} for n in range(1, 5)}
    with trio.fail_after(CALL_LIMIT):
        async with open_sinks([f"jsonl:{jsonl_path}", f"sqlite:{db}"], {}) as hub:
            async with running_gateway(ScriptedProvider(), [hub]) as gw:
                async with trio.open_nursery() as nursery:
                    for n in (2, 3, 4):
                        sid, stream = call_ids(n)
                        nursery.start_soon(lambda n=n, sid=sid, stream=stream: simulate_call(
                            gw.ws_url, tone(1000 * n + 300, seed=n), fast=True, custom_parameters=params[n],
                            call_sid=sid, stream_sid=stream))
                    # Call 1 is held half-way while another process reads the file.
                    async with open_stream_socket(gw.ws_url) as ws:
                        script = list(twilio_script(tone(4500), n=1, params=params[1]))
                        half = 2 + 2500 // 20  # connected, start, 2.5 s of media
                        for message, _ in script[:half]:
                            await ws.send_message(message)
                        await committed_rows(db, held_sid, 1)
                        reader = await trio.run_process([sys.executable, "-c", READER, str(db), held_sid],
                                                        capture_stdout=True)
                        for message, _ in script[half:]:
                            await ws.send_message(message)
                        with pytest.raises(trio_websocket.ConnectionClosed):
                            while True:
                                await ws.get_message()
                await gw.idle()
    jsonl_stats, store = hub.statistics()  # after shutdown: each sink delivered all it held

    seen = json.loads(reader.stdout)
    assert seen == {"mode": "wal", "calls": [[held_sid, "+15005550001", "+15005550001", None]],
                    "transcripts": ["audio 0 to 2000"]}
    lines = jsonl_path.read_bytes().splitlines()
    events = [orjson.loads(line) for line in lines]
    assert (jsonl_stats.delivered, jsonl_stats.dropped) == (len(events), 0)
    assert (store.name, store.queued, store.delivered, store.dropped) == (f"sqlite:{db}", 0, len(events), 0)
    call_rows, transcripts, columns = expected_rows(events)
    assert len(call_rows) == 4
    assert {e["dropped_ms"] for e in events if e["type"] == "call_ended"} == {0}
    assert set(rows(db, f"SELECT call_sid, {', '.join(columns)} FROM calls")) == call_rows
    assert rows(db, "SELECT * FROM transcripts ORDER BY call_sid, seq") == transcripts
    assert [t[3] for t in transcripts if t[0] == held_sid] == ["audio 0 to 2000", "audio 2000 to 4000",
                                                             "audio 4000 to 4500"]
    stored = rows(db, "SELECT call_sid, seq, type, json FROM events ORDER BY rowid")
    for n in range(1, 5):
        sid = call_ids(n)[0]
        mine = [(e["call_sid"], e["seq"], e["type"], line.decode()) for e, line in zip(events, lines)
                if e["call_sid"] == sid]
        assert [row for row in stored if row[0] == sid] == mine
    assert len(stored) == len(events)


async def test_a_batch_becomes_rows_once_however_often_it_is_delivered(tmp_path):
    """At-least-once upstream: repeats of (call_sid, seq) add nothing; the end may come first."""
    started = {"type": "call_started", "call_sid": "CA1", "stream_sid": "MZ1", "account_sid": "AC1",
               "custom_parameters": {"From": "+1", "To": "+2"}, "seq": 1, "emitted_at": "t1"}
    partial = {"type": "transcript", "kind": "partial", "text": "hel", "call_sid": "CA1", "stream_sid": "MZ1",
               "seq": 2, "provider": "scripted", "audio_start_ms": 0, "audio_end_ms": 500, "emitted_at": "t2"}
    committed = dict(partial, kind="committed", text="hello", seq=3, audio_end_ms=900, emitted_at="t3")
    ended = {"type": "call_ended", "call_sid": "CA1", "stream_sid": "MZ1", "reason": "stop", "audio_ms": 900,
             "forwarded_ms": 900, "dropped_ms": 0, "detail": "", "seq": 4, "emitted_at": "t4"}

    plain, with_partials = writer_for(tmp_path / "a.db"), writer_for(tmp_path / "b.db", "?partials=1")
    for writer in (plain, with_partials):
        await writer.write([ended])  # the end first, as a retried batch may deliver it
        await writer.write([started, partial, committed])
        await writer.write([started, partial, committed, ended])
        await writer.aclose()
    for name in ("a.db", "b.db"):
        db = tmp_path / name
        assert rows(db, "SELECT * FROM calls") == [("CA1", "MZ1", "AC1", "+1", "+2", "t1", "t4", "stop", 900, 900, 0)]
        assert [r[:2] for r in rows(db, "SELECT call_sid, seq FROM events ORDER BY seq")] == [
            ("CA1", 1), ("CA1", 2), ("CA1", 3), ("CA1", 4)]
    assert rows(tmp_path / "a.db", "SELECT seq, kind, text FROM transcripts") == [(3, "committed", "hello")]
    assert rows(tmp_path / "b.db", "SELECT seq, kind, text FROM transcripts ORDER BY seq") == [
        (2, "partial", "hel"), (3, "committed", "hello")]


async def test_events_of_a_stream_that_never_named_its_call_are_all_kept(tmp_path):
    db = tmp_path / "calls.db"
    writer = writer_for(db)
    nameless = {"type": "call_ended", "call_sid": "", "stream_sid": "", "reason": "error", "audio_ms": 0,
                "forwarded_ms": 0, "dropped_ms": 0, "detail": "no start", "seq": 1, "emitted_at": "t"}
    await writer.write([nameless])
    await writer.write([dict(nameless, emitted_at="u")])
    await writer.aclose()
    assert rows(db, "SELECT call_sid, seq, type FROM events") == [(None, 1, "call_ended"), (None, 1, "call_ended")]
    assert rows(db, "SELECT * FROM calls") == []


async def test_an_older_database_is_migrated_forward_keeping_its_rows(tmp_path):
    older = tmp_path / "v1.db"
    with closing(sqlite3.connect(older, isolation_level=None)) as conn:
        assert migrate(conn, "v1.db", MIGRATIONS[:1]) == 0
        conn.execute("INSERT INTO calls (call_sid, started_at) VALUES ('CA0', 't0')")
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # a file at user_version 0, no tables
    ended = {"type": "call_ended", "call_sid": "CA0", "stream_sid": "MZ0", "reason": "stop", "audio_ms": 20,
             "forwarded_ms": 20, "dropped_ms": 0, "seq": 9, "emitted_at": "t9"}
    for db in (older, empty):
        writer = writer_for(db)
        await writer.write([ended])
        await writer.aclose()
        assert rows(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert ("calls_by_started_at",) in rows(db, "SELECT name FROM sqlite_schema WHERE type = 'index'")
    assert rows(older, "SELECT call_sid, started_at, end_reason FROM calls") == [("CA0", "t0", "stop")]
    assert rows(empty, "SELECT call_sid, started_at, end_reason FROM calls") == [("CA0", None, "stop")]


async def test_a_database_from_a_newer_earpiece_is_refused_untouched(tmp_path):
    db = tmp_path / "newer.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}.*up to {SCHEMA_VERSION}"):
        writer_for(db)
    assert issubclass(SchemaVersionError, SinkSpecError)  # `serve` exits 2 at start
    # A file that became newer after start: the batch is given up, typed, and nothing written.
    late = tmp_path / "late.db"
    writer = writer_for(late)
    with closing(sqlite3.connect(late)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SinkDeliveryError, match="upgrade earpiece"):
        await writer.write([{"type": "dtmf", "digit": "1", "call_sid": "CA1", "seq": 1}])
    await writer.aclose()
    assert rows(late, "SELECT name FROM sqlite_schema") == []


async def test_a_file_locked_by_another_writer_is_retried_then_given_up_typed(tmp_path, caplog):
    db = tmp_path / "locked.db"
    writer = SqliteWriter(db, max_attempts=3, backoff=Backoff(0.01, 0.01, jitter=0), busy_timeout=0.01)
    event = {"type": "dtmf", "digit": "1", "call_sid": "CA1", "stream_sid": "MZ1", "seq": 1, "emitted_at": "t"}
    await writer.write([event])  # creates the schema
    with closing(sqlite3.connect(db, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # another process's writer holding the lock
        with pytest.raises(SinkDeliveryError, match="after 3 attempts: database is locked"):
            await writer.write([dict(event, seq=2)])
        other.execute("ROLLBACK")
    await writer.write([dict(event, seq=2)])
    await writer.aclose()
    assert [r.getMessage().split(";")[0] for r in caplog.records if "retrying" in r.getMessage()] == [
        f"sqlite:{db}: database is locked"] * 2
    assert rows(db, "SELECT seq FROM events") == [(1,), (2,)]


@pytest.mark.parametrize(("spec", "message"), [
    ("sqlite:", "needs a file path"),
    ("sqlite:{tmp}/no/such/dir/calls.db", "does not exist"),
    ("sqlite:{tmp}/calls.db?partial=1", "only partials=0|1, not partial"),
    ("sqlite:{tmp}/calls.db?partials=yes", "0 or 1"),
    ("sqlite:{tmp}", "is a directory"),
    ("sqlite:{tmp}/text.db", "cannot be used as an earpiece database"),
    ("sqlite:{tmp}/app.db", "already has table(s) calls"),
])
def test_bad_sqlite_specs_say_what_to_fix(tmp_path, spec, message):
    (tmp_path / "text.db").write_text("not a database, just some text that is long enough" * 100)
    with closing(sqlite3.connect(tmp_path / "app.db")) as conn:
        conn.execute("CREATE TABLE calls (id INTEGER)")
    with pytest.raises(SinkSpecError, match=message.replace("|", r"\|").replace("(", r"\(").replace(")", r"\)")):
        from_spec(parse_sink_spec(spec.format(tmp=tmp_path)), {})


async def earpiece(*args: str) -> trio.CompletedProcess:
    return await trio.run_process([sys.executable, "-m", "gateway.cli", *args], capture_stdout=True,
                                  capture_stderr=True, check=False)


async def test_earpiece_calls_lists_a_real_call_and_prints_its_transcript(tmp_path):
    db = tmp_path / "calls.db"
    sid, stream = call_ids(5)
    with trio.fail_after(CALL_LIMIT):
        async with open_sinks([f"sqlite:{db}"], {}) as hub, running_gateway(ScriptedProvider(), [hub]) as gw:
            await simulate_call(gw.ws_url, tone(4200), fast=True, call_sid=sid, stream_sid=stream,
                                custom_parameters={"From": "+15005550006", "To": "+15005550001"})
            await gw.idle()
        (store,) = hub.statistics()
        assert (store.queued, store.dropped) == (0, 0) and store.delivered > 0
        (started,), = rows(db, "SELECT started_at FROM calls")
        listing = await earpiece("calls", f"sqlite:{db}")
        transcript = await earpiece("calls", f"sqlite:{db}", sid)
        unknown = await earpiece("calls", f"sqlite:{db}", "CA" + "f" * 32)
        missing = await earpiece("calls", f"sqlite:{tmp_path / 'nope.db'}")
        not_sqlite = await earpiece("calls", f"jsonl:{db}")
    assert listing.returncode == 0, listing.stderr
    header, line = listing.stdout.decode().splitlines()
    assert header.split() == ["call_sid", "from", "to", "started", "duration", "reason", "dropped"]
    assert line.split() == [sid, "+15005550006", "+15005550001", started, "4.2s", "stop", "0ms"]
    assert transcript.returncode == 0, transcript.stderr
    assert transcript.stdout.decode().splitlines() == [
        "[0:00.0-0:02.0] audio 0 to 2000", "[0:02.0-0:04.0] audio 2000 to 4000", "[0:04.0-0:04.2] audio 4000 to 4200"]
    assert (unknown.returncode, unknown.stdout) == (1, b"")
    assert unknown.stderr.decode() == f"earpiece: no call CA{'f' * 32} in {db}\n"
    assert missing.returncode == 2 and missing.stderr.decode().strip().endswith("no such database: "
                                                                                 f"{tmp_path / 'nope.db'}")
    assert not_sqlite.returncode == 2 and b"reads a sqlite:PATH sink's file" in not_sqlite.stderr
    assert rows(db, "SELECT count(*) FROM calls") == [(1,)]  # read-only: nothing changed


async def test_earpiece_calls_refuses_a_newer_database(tmp_path):
    db = tmp_path / "newer.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 3}")
    with trio.fail_after(CALL_LIMIT):
        done = await earpiece("calls", f"sqlite:{db}")
    assert done.returncode == 2
    assert b"upgrade earpiece" in done.stderr and len(done.stderr.splitlines()) == 1
