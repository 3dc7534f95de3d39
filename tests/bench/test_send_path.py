"""bench/send_path.py drives the real send path end to end (a smoke run, no timing asserted)."""

from __future__ import annotations

from bench.send_path import KEEPALIVE, memory_session, one_run


async def test_send_path_bench_sends_every_batch_of_every_call_then_commits():
    for keepalive in (None, KEEPALIVE):
        # one_run asserts that each session sent every batch and the final commit
        assert await one_run(memory_session, calls=3, batches=20, keepalive=keepalive) > 0
