"""A dead sink inside a real gateway: calls, other calls and other sinks never notice."""

from __future__ import annotations

import trio

from gateway.simulator import simulate_call
from gateway.sinks import SinkStatistics, open_sink_hub
from providers.scripted import ScriptedProvider
from tests.conftest import running_gateway
from tests.helpers import call_ids, tone
from tests.gateway.sinks.test_runtime import ListWriter

LIMIT = 30  # seconds: a bound on the test, never an assertion on speed


async def test_a_sink_that_never_returns_loses_its_own_events_only():
    dead = ListWriter("dead", trio.Event())  # its gate is never opened: write blocks forever
    alive = ListWriter("alive")
    with trio.fail_after(LIMIT):
        async with open_sink_hub([(None, dead), (None, alive)], queue_size=5, flush_timeout=0.5) as hub:
            async with running_gateway(ScriptedProvider(), [hub]) as gw, trio.open_nursery() as nursery:
                for n in (1, 2, 3):
                    call_sid, stream_sid = call_ids(n)
                    nursery.start_soon(lambda c=call_sid, s=stream_sid, n=n: simulate_call(
                        gw.ws_url, tone(4100, seed=n), fast=True, call_sid=c, stream_sid=s))
            while hub.statistics()[1].queued:
                await trio.sleep(0.01)
            during = hub.statistics()
    events = alive.events
    partials = sum(e.get("kind") == "partial" for e in events)
    others = len(events) - partials
    assert partials > 0
    for n in (1, 2, 3):
        call_sid = call_ids(n)[0]
        mine = [e for e in events if e["call_sid"] == call_sid]
        assert [e["text"] for e in mine if e.get("kind") == "committed"] == [
            "audio 0 to 2000", "audio 2000 to 4000", "audio 4000 to 4100"]
        assert mine[-1]["type"] == "call_ended" and mine[-1]["reason"] == "stop" and mine[-1]["dropped_ms"] == 0
        assert [e["seq"] for e in mine] == list(range(1, len(mine) + 1))
    # the dead sink: its stuck write holds the first batch (the first events emitted),
    # 5 wait in its queue, and partials were dropped before any other event
    final = hub.statistics()[0]
    held = events[:final.failed]
    held_partials = sum(e.get("kind") == "partial" for e in held)
    assert final.failed >= 1
    assert during[0] == SinkStatistics(name="dead", queued=5, delivered=0, dropped_partials=partials - held_partials,
                                       dropped_other=others - (len(held) - held_partials) - 5, failed=0)
    assert during[1] == SinkStatistics(name="alive", queued=0, delivered=len(events), dropped_partials=0,
                                       dropped_other=0, failed=0)
    # shutdown gave it 0.5 s; what it still held is counted, nothing vanished
    assert (final.queued, final.delivered, final.dropped) == (0, 0, len(events))
    assert dead.closed and alive.closed
