"""SinkHub: every sink its own bounded queue and task; a call never waits for one."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import trio
import trio.testing

from gateway.sinks import (
    SinkDeliveryError,
    SinkSpecError,
    check_sink_spec,
    create_writer,
    open_sink_hub,
    parse_sink_spec,
    split_sink_list,
)
from gateway.sinks.runtime import SinkHub, SinkStatistics


class ListWriter:
    """Keeps every batch it was given; blocks while ``gate`` is closed."""

    def __init__(self, name: str = "list", gate: trio.Event | None = None) -> None:
        self.name = name
        self.batches: list[list[dict[str, Any]]] = []
        self.gate = gate
        self.closed = False

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for batch in self.batches for e in batch]

    async def write(self, events: Sequence[Mapping[str, Any]]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.batches.append([dict(e) for e in events])

    async def aclose(self) -> None:
        self.closed = True


def partial(seq: int, call: str = "CA1") -> dict[str, Any]:
    return {"type": "transcript", "kind": "partial", "text": f"p{seq}", "call_sid": call, "seq": seq}


def committed(seq: int, call: str = "CA1") -> dict[str, Any]:
    return {"type": "transcript", "kind": "committed", "text": f"c{seq}", "call_sid": call, "seq": seq}


def emit_now(hub: SinkHub, event: Mapping[str, Any]) -> None:
    """Run ``hub.emit`` to completion without a scheduler: proves it has no checkpoint."""
    coro = hub.emit(event)
    with pytest.raises(StopIteration):
        coro.send(None)


async def test_emit_never_suspends_even_when_every_sink_is_blocked(autojump_clock):
    gate = trio.Event()
    blocked = ListWriter("blocked", gate)
    async with open_sink_hub([(None, blocked)], queue_size=3, flush_timeout=1) as hub:
        for seq in range(1, 50):
            emit_now(hub, committed(seq))
        assert hub.statistics()[0].queued == 3
        gate.set()


async def test_full_queue_drops_partials_first_then_the_oldest_and_counts_each(autojump_clock):
    gate = trio.Event()
    writer = ListWriter("slow", gate)
    async with open_sink_hub([(None, writer)], queue_size=4, flush_timeout=10) as hub:
        emit_now(hub, committed(1))
        await trio.testing.wait_all_tasks_blocked()  # the lane took seq 1 and waits on the gate
        for event in (partial(2), committed(3), partial(4), committed(5), committed(6)):
            emit_now(hub, event)  # queue: p2 c3 p4 c5 -> c6 drops p2
        emit_now(hub, partial(7))  # full, p4 is the oldest partial
        emit_now(hub, committed(8))  # full of p7 c3 c5 c6: p7 goes
        emit_now(hub, committed(9))  # no partial left: the oldest (c3) goes
        emit_now(hub, partial(10))  # full, no partial queued: the new partial goes
        stats = hub.statistics()[0]
        assert stats == SinkStatistics(name="slow", queued=4, delivered=0, dropped_partials=4, dropped_other=1,
                                       failed=0)
        gate.set()
    assert [e["seq"] for e in writer.events] == [1, 5, 6, 8, 9]
    final = hub.statistics()[0]
    assert (final.delivered, final.queued, final.dropped) == (5, 0, 5)
    assert writer.closed


async def test_drops_are_logged_once_per_interval_with_counts(autojump_clock, caplog):
    gate = trio.Event()
    writer = ListWriter("slow", gate)
    caplog.set_level(logging.WARNING, "earpiece.sinks")
    async with open_sink_hub([(None, writer)], queue_size=2, flush_timeout=10, log_interval=10) as hub:
        emit_now(hub, partial(1))
        await trio.testing.wait_all_tasks_blocked()  # the lane holds it, waiting on the gate
        for seq in range(2, 1002):  # 2 fit, 998 dropped
            emit_now(hub, partial(seq))
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and lines[0].startswith("sink slow lost events: 1 partials")
        await trio.sleep(11)
        emit_now(hub, partial(2000))
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 2 and lines[1].startswith("sink slow lost events: 998 partials")
        assert lines[1].endswith("totals 999/0/0")
        gate.set()
    assert hub.statistics()[0].dropped_partials == 999


async def test_a_blocked_sink_does_not_delay_the_others(autojump_clock):
    blocked = ListWriter("blocked", trio.Event())
    fast = ListWriter("fast")
    async with open_sink_hub([(None, blocked), (None, fast)], queue_size=10, flush_timeout=3) as hub:
        for seq in range(1, 101):
            emit_now(hub, committed(seq))
            await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        assert [e["seq"] for e in fast.events] == list(range(1, 101))
        start = trio.current_time()
    # shutdown: the blocked sink had 3 s to flush, then what it held is counted
    assert trio.current_time() - start == pytest.approx(3)
    slow, quick = hub.statistics()
    assert quick.delivered == 100 and quick.dropped == 0
    assert slow.delivered == 0 and slow.queued == 0
    assert slow.dropped_other + slow.failed == 100  # 90 overflowed, 1 cut mid-write, 9 left at shutdown
    assert slow.failed == 1


async def test_types_filter_sends_each_sink_only_what_it_asked_for(autojump_clock):
    everything, commits = ListWriter("all"), ListWriter("commits")
    spec = parse_sink_spec("jsonl:x.jsonl?types=transcript.committed,call_ended")
    async with open_sink_hub([(None, everything), (spec, commits)]) as hub:
        for event in (partial(1), committed(2), {"type": "dtmf", "digit": "5", "seq": 3},
                      {"type": "call_ended", "seq": 4}):
            await hub.emit(event)
    assert [e["seq"] for e in everything.events] == [1, 2, 3, 4]
    assert [e["seq"] for e in commits.events] == [2, 4]


class FailingWriter(ListWriter):
    def __init__(self, exc: Exception) -> None:
        super().__init__("failing")
        self.exc = exc

    async def write(self, events: Sequence[Mapping[str, Any]]) -> None:
        if any(e["seq"] == 2 for e in events):
            raise self.exc
        await super().write(events)


@pytest.mark.parametrize("exc", [SinkDeliveryError("the endpoint said 400"), RuntimeError("a bug in the sink")])
async def test_a_failing_batch_is_counted_and_the_sink_goes_on(autojump_clock, caplog, exc):
    writer = FailingWriter(exc)
    async with open_sink_hub([(None, writer)]) as hub:
        for seq in (1, 2, 3):
            await hub.emit(committed(seq))
            await trio.testing.wait_all_tasks_blocked()
    assert [e["seq"] for e in writer.events] == [1, 3]
    stats = hub.statistics()[0]
    assert (stats.delivered, stats.failed) == (2, 1)
    assert any("failing" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("raw", "specs"), [
    ("stdout", ("stdout",)),
    ("stdout,jsonl:a.jsonl", ("stdout", "jsonl:a.jsonl")),
    ("jsonl:a.jsonl?types=transcript.committed,call_ended,stdout",
     ("jsonl:a.jsonl?types=transcript.committed,call_ended", "stdout")),
    ("redis://127.0.0.1:6379/0?stream=s&types=transcript,call_ended, jsonl:b.jsonl?types=dtmf,call_started",
     ("redis://127.0.0.1:6379/0?stream=s&types=transcript,call_ended", "jsonl:b.jsonl?types=dtmf,call_started")),
    (" stdout , ,python:m:f", ("stdout", "python:m:f")),
])
def test_earpiece_sinks_splits_only_where_a_new_sink_starts(raw, specs):
    assert split_sink_list(raw) == specs


@pytest.mark.parametrize(("raw", "says"), [
    ("kafka:x", "unknown kind 'kafka'"),
    ("jsonl:", "expected jsonl:PATH"),
    ("jsonl:/no/such/dir/x.jsonl", "does not exist"),
    ("stdout?types=nope", "types= takes"),
    ("redis://127.0.0.1:notaport", "port must be a number"),
    ("redis://127.0.0.1:6379/zero", "database must be a number"),
    ("redis://127.0.0.1:6379?maxlen=-1", "maxlen= must be a positive"),
    ("redis://127.0.0.1:6379?strem=x", "unknown option strem"),
    ("redis://:hunter2@127.0.0.1:6379?strem=x", "redis://:***@127.0.0.1"),
    ("python:nosuchmodule_earpiece:f", "cannot import 'nosuchmodule_earpiece'"),
    ("python:json:nosuch", "has no 'nosuch'"),
    ("python:json", "expected python:package.module:callable"),
])
def test_bad_specs_say_what_to_fix(raw, says):
    with pytest.raises(SinkSpecError) as error:
        check_sink_spec(raw)
        create_writer(raw, {})
    assert says in str(error.value)
    assert "hunter2" not in str(error.value)


seen: list[dict[str, Any]] = []


def record_sync(event: dict[str, Any]) -> None:
    if event["seq"] == 2:
        raise ValueError("the user's callable failed")
    seen.append(event)


async def record_async(event: dict[str, Any]) -> None:
    await trio.sleep(0.1)
    seen.append(event)


@pytest.mark.parametrize("fn", ["record_sync", "record_async"])
async def test_python_sink_calls_a_sync_or_async_callable_per_event(autojump_clock, caplog, fn):
    seen.clear()
    spec, writer = create_writer(f"python:{__name__}:{fn}", {})
    async with open_sink_hub([(spec, writer)]) as hub:
        for seq in (1, 2, 3):
            await hub.emit(committed(seq))
    stats = hub.statistics()[0]
    if fn == "record_sync":
        assert [e["seq"] for e in seen] == [1, 3]
        assert (stats.delivered, stats.failed) == (2, 1)
        assert "the user's callable failed" in caplog.text
    else:
        assert [e["seq"] for e in seen] == [1, 2, 3]
        assert (stats.delivered, stats.failed) == (3, 0)


async def test_third_party_kind_registered_as_an_entry_point(tmp_path, monkeypatch, autojump_clock):
    (tmp_path / "earpiece_demo_sink.py").write_text(textwrap.dedent("""
        class Writer:
            def __init__(self, spec):
                self.name = "demo:" + spec.target
                self.got = []
            async def write(self, events):
                self.got.extend(events)
            async def aclose(self):
                pass

        def from_spec(spec, env):
            return Writer(spec)
    """))
    dist = tmp_path / "earpiece_demo_sink-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: earpiece-demo-sink\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[earpiece.sinks]\ndemo = earpiece_demo_sink:from_spec\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert split_sink_list("demo:a?types=transcript,call_ended,stdout") == (
        "demo:a?types=transcript,call_ended", "stdout")
    spec, writer = create_writer("demo:target-x", {})
    async with open_sink_hub([(spec, writer)]) as hub:
        await hub.emit(committed(1))
    assert writer.name == "demo:target-x" and [e["seq"] for e in writer.got] == [1]
    monkeypatch.delitem(sys.modules, "earpiece_demo_sink")


def test_earpiece_sinks_variable_reaches_settings_split_at_sink_kinds_only():
    from gateway.config import Settings

    settings = Settings.from_sources({}, {"EARPIECE_SINKS": "jsonl:a.jsonl?types=transcript.committed,call_ended,"
                                                            "stdout,redis://127.0.0.1:6379"})
    assert settings.sinks == ("jsonl:a.jsonl?types=transcript.committed,call_ended", "stdout",
                              "redis://127.0.0.1:6379")
    assert parse_sink_spec(settings.sinks[0]).types == frozenset({"transcript.committed", "call_ended"})
    flagged = Settings.from_sources({"sink": ["jsonl:b.jsonl?types=dtmf,call_ended"]}, {"EARPIECE_SINKS": "stdout"})
    assert flagged.sinks == ("jsonl:b.jsonl?types=dtmf,call_ended",)


async def test_a_sink_failing_every_batch_logs_once_per_interval_not_per_batch(autojump_clock, caplog):
    class AlwaysRefused(ListWriter):
        async def write(self, events: Sequence[Mapping[str, Any]]) -> None:
            raise SinkDeliveryError("the endpoint said 400")

    writer = AlwaysRefused("refused")
    caplog.set_level(logging.WARNING, "earpiece.sinks")
    async with open_sink_hub([(None, writer)], log_interval=10) as hub:
        for seq in range(100):
            await hub.emit(committed(seq))
            await trio.sleep(0.01)  # one batch each: 100 failures within a second
    assert hub.statistics()[0].failed == 100
    details = [r for r in caplog.records if "gave up" in r.getMessage()]
    counts = [r for r in caplog.records if "lost events" in r.getMessage()]
    assert len(details) == 1 and len(counts) == 2  # the first, then the rest at shutdown
    assert counts[-1].getMessage().endswith("totals 0/0/100")
