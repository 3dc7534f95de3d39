"""bench/call_memory.py measures what it says: live calls, the replay buffer at its bound."""

from __future__ import annotations

from bench.call_memory import NEVER, Scenario, measure, render


def test_call_memory_counts_the_held_audio_of_every_live_call():
    """Two calls that never commit, 1 s of replay: each holds at least its 1 s (8000 bytes)."""
    result = measure(Scenario("never commits", NEVER, 1000), calls=2, at_s=2.0, stagger_s=0.1, top=5)
    assert result.replay_peak_ms == 1000
    assert [o.reason for o in result.outcomes] == ["stop", "stop"]
    assert result.bytes_per_call > 8000
    assert len(result.sites) == 5 and result.sites[0].bytes_per_call >= result.sites[-1].bytes_per_call
    assert "| never commits | 1000 | 2 |" in render([result])
