"""The pieces of provider resilience on their own: backoff schedule, replay buffer,
session clock, speech gate, stall monitor, commit de-duplication."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from actors.backoff import Backoff
from actors.messages import AudioBatch, Transcript
from actors.replay import ReplayBuffer, SessionClock
from actors.session_link import ReplayLink
from actors.speech import is_speech
from actors.stats import CallStats
from actors.stt_receiver import SttReceiver
from actors.watchdog import SessionMonitor
from providers.base import MULAW_8K, AudioFormat
from providers.errors import ProviderStalledError
from providers.events import Finalized, FinalTranscript, PartialTranscript
from tests.helpers import tone


def batch(start: int, ms: int = 100) -> AudioBatch:
    return AudioBatch(start, ms, tone(ms, seed=start))


# --- Backoff -----------------------------------------------------------------------------


def test_backoff_doubles_from_base_to_cap_exactly_without_jitter():
    backoff = Backoff(0.1, 5.0, jitter=0)
    assert [backoff.delay(n) for n in range(1, 10)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])
    assert backoff.delay(10_000) == 5.0


def test_backoff_jitter_shortens_each_delay_by_at_most_its_share_and_is_seedable():
    a, b = Backoff(0.1, 5.0, 0.5, random.Random(3)), Backoff(0.1, 5.0, 0.5, random.Random(3))
    delays = [a.delay(n) for n in range(1, 9)]
    assert delays == [b.delay(n) for n in range(1, 9)]
    assert all(a.ceiling(n) / 2 <= d <= a.ceiling(n) for n, d in enumerate(delays, start=1))
    assert len(set(delays)) == len(delays)


# --- ReplayBuffer ---------------------------------------------------------------------------


async def test_replay_buffer_hands_out_in_order_and_keeps_sent_audio_until_committed():
    stats = CallStats()
    buffer = ReplayBuffer(1000, stats, MULAW_8K)
    for start in (0, 100, 200):
        buffer.append(batch(start))
    for _ in range(3):
        sent = await buffer.next_batch()
        buffer.mark_sent(sent)
    assert stats.forwarded_ms == 300 and buffer.held_ms == 300
    buffer.commit(150)  # a commit mid-batch keeps the rest of that batch, to the sample
    assert buffer.held_ms == 150
    assert buffer.rewind() == 150 and buffer.replay_start_ms() == 150
    again = await buffer.next_batch()
    assert (again.start_ms, again.duration_ms, again.payload) == (150, 50, batch(100).payload[50 * 8:])
    buffer.mark_sent(again)
    assert stats.forwarded_ms == 300 and stats.replayed_ms == 50  # a replay is not forwarded twice


async def test_replay_buffer_overflow_drops_sent_audio_first_then_the_oldest_unsent_counted():
    stats = CallStats()
    buffer = ReplayBuffer(300, stats, MULAW_8K)
    buffer.append(batch(0))
    buffer.mark_sent(await buffer.next_batch())
    for start in (100, 200, 300):
        buffer.append(batch(start))
    assert buffer.held_ms == 300 and stats.replay_overflow_ms == 0  # the sent 0-100 went first
    buffer.append(batch(400))
    assert buffer.held_ms == 300 and stats.replay_overflow_ms == 100  # then unsent 100-200
    assert (await buffer.next_batch()).start_ms == 200
    assert stats.replay_peak_ms == 300


async def test_replay_buffer_ends_the_feed_once_input_ended_and_all_was_sent():
    """The buffer is the audio channel's receiving end: closing it ends the feed,
    after what was taken in has been sent."""
    buffer = ReplayBuffer(1000, CallStats(), MULAW_8K)
    async with buffer as audio_send:  # as the Resampler holds it
        await audio_send.send(batch(0))
        audio_send.send_nowait(batch(100))
        assert not buffer.input_closed.is_set()
    assert buffer.input_closed.is_set() and buffer.input_ended
    buffer.mark_sent(await buffer.next_batch())
    buffer.mark_sent(await buffer.next_batch())
    with pytest.raises(trio.EndOfChannel):
        await buffer.next_batch()


async def test_a_discarded_buffer_takes_nothing_more_and_ends_the_feed():
    stats = CallStats()
    buffer = ReplayBuffer(1000, stats, MULAW_8K)
    buffer.append(batch(0))
    buffer.discard()
    buffer.append(batch(100))
    assert buffer.held_ms == 0
    with pytest.raises(trio.EndOfChannel):
        await buffer.next_batch()
    assert stats.forwarded_ms == 0


def test_splitting_pcm16_keeps_whole_samples():
    buffer = ReplayBuffer(1000, CallStats(), AudioFormat("pcm16", 16000))
    buffer.append(AudioBatch(0, 100, bytes(3200)))
    buffer._unsent.clear()  # noqa: SLF001 - white box: put the batch among the sent
    buffer._sent.append(AudioBatch(0, 100, bytes(range(256)) * 12 + bytes(128)))  # noqa: SLF001
    buffer.commit(30)
    [rest] = list(buffer._sent)  # noqa: SLF001
    assert (rest.start_ms, rest.duration_ms, len(rest.payload)) == (30, 70, 3200 - 30 * 32)


# --- SessionClock ------------------------------------------------------------------------


def test_session_clock_maps_through_gaps_and_ends_belong_to_the_audio_before():
    clock = SessionClock(2000)
    assert clock.to_call(0) == 2000
    for start in (2000, 2100):
        clock.sent(batch(start))
    clock.sent(batch(5000))  # the buffer skipped 2200-5000
    assert clock.to_call(150) == 2150
    assert clock.to_call(200) == 5000 and clock.to_call(200, end=True) == 2200
    assert clock.to_call(250, end=True) == 5050


# --- the speech gate and the stall monitor ---------------------------------------------------------


def test_speech_gate_tells_line_silence_from_speech_in_both_formats():
    assert not is_speech(b"\xff" * 800, MULAW_8K) and not is_speech(b"\x7f\xfe\xff\x7e" * 200, MULAW_8K)
    assert is_speech(tone(100), MULAW_8K)
    pcm = AudioFormat("pcm16", 16000)
    assert not is_speech(bytes(3200), pcm)
    assert is_speech((3000).to_bytes(2, "little", signed=True) * 1600, pcm)


async def test_stall_monitor_needs_both_time_and_speech_without_an_answer(autojump_clock):
    monitor = SessionMonitor("x", stall_timeout=2.0, healthy_ms=5000)
    with pytest.raises(ProviderStalledError):
        with monitor.watching():
            monitor.sending(3000, speech=True)  # a burst: enough speech, no time yet
            await trio.sleep(1.9)
            monitor.answered()  # an answer resets it
            monitor.sending(100, speech=True)
            await trio.sleep(2.5)  # enough time, not enough speech: still fine
            assert trio.current_time() == pytest.approx(4.4)
            monitor.sending(1900, speech=True)  # now both: stalled at once
            await trio.sleep(1)
            pytest.fail("not stalled")  # pragma: no cover
    assert trio.current_time() == pytest.approx(4.4)


async def test_the_watchdog_cancels_the_session_it_watches_and_names_the_stall(autojump_clock):
    monitor = SessionMonitor("x", stall_timeout=2.0, healthy_ms=5000, hurry_timeout=3.0)
    reached = []
    with pytest.raises(ProviderStalledError, match="no answer to 2 s of speech"):
        with monitor.watching():
            monitor.sending(2000, speech=True)  # enough speech: stalled 2 s later unless answered
            await trio.sleep(1.5)
            reached.append(trio.current_time())
            await trio.sleep(10)
            pytest.fail("not cancelled")  # pragma: no cover
    assert reached == [pytest.approx(1.5)] and trio.current_time() == pytest.approx(2.0)


async def test_the_watchdog_lets_a_session_that_answers_run_and_hurries_it_after_the_hang_up(autojump_clock):
    replay = ReplayBuffer(10_000, CallStats(), MULAW_8K)
    monitor = SessionMonitor("x", stall_timeout=2.0, healthy_ms=5000, hurry_timeout=3.0)
    replay.call_when_input_closed(monitor.hung_up)
    with pytest.raises(ProviderStalledError, match="no progress for 3 s after the caller hung up"):
        with monitor.watching():
            for _ in range(50):  # 5 s of speech, answered every 100 ms: never stalled
                monitor.sending(100, speech=True)
                monitor.accepted(100)
                await trio.sleep(0.1)
                monitor.answered()
            assert trio.current_time() == pytest.approx(5.0)
            replay.end_input()  # the caller hangs up; the session makes no more progress
            await trio.sleep(10)
            pytest.fail("not cancelled")  # pragma: no cover
    assert trio.current_time() == pytest.approx(8.0)
    # a block that ends before any stall raises nothing
    quiet = SessionMonitor("y", stall_timeout=2.0, healthy_ms=5000, hurry_timeout=3.0)
    with quiet.watching():
        quiet.sending(1000, speech=True)
        await trio.sleep(5)  # not enough speech for a stall, however long
    assert trio.current_time() == pytest.approx(13.0)


async def test_the_hang_up_reaches_a_session_that_starts_after_it_at_once():
    replay = ReplayBuffer(10_000, CallStats(), MULAW_8K)
    replay.end_input()
    heard = []
    replay.call_when_input_closed(lambda: heard.append("hung up"))
    assert heard == ["hung up"]
    replay.call_when_input_closed(None)
    replay.end_input()  # a second end is no news
    assert heard == ["hung up"]


def test_a_session_proves_healthy_after_healthy_ms_accepted_while_answering():
    async def main() -> None:
        monitor = SessionMonitor("x", stall_timeout=10.0, healthy_ms=1000)
        for _ in range(9):
            monitor.sending(100, speech=True)
            monitor.accepted(100)
        assert not monitor.healthy  # 900 ms, and 900 ms of it unanswered
        monitor.answered()
        monitor.sending(100, speech=True)
        monitor.accepted(100)
        assert monitor.healthy

    trio.run(main)


# --- commit de-duplication across sessions ------------------------------------------------------------


class Events:
    def __init__(self, *events) -> None:
        self._events = list(events) + [Finalized()]

    async def receive(self):
        await trio.lowlevel.checkpoint()
        return self._events.pop(0)


async def test_a_new_session_never_commits_a_span_twice_and_overlaps_start_at_the_mark():
    replay = ReplayBuffer(10_000, CallStats(), MULAW_8K)
    replay.commit(2000)  # an earlier session of the call committed up to 2000 ms
    send, receive = trio.open_memory_channel(10)
    clock = SessionClock(1500)  # the replay started before the mark (vendor timing slack)
    monitor = SessionMonitor("p", stall_timeout=5.0, healthy_ms=1000)
    link = ReplayLink(Events(FinalTranscript("old", 0, 400), PartialTranscript("old partial", 0, 500),
                             FinalTranscript("overlap", 400, 900), FinalTranscript("new", 900, 1500)),
                      "p", replay, monitor, clock)
    await SttReceiver().run(link, send)
    send.close()
    got = [e async for e in receive]
    assert got == [Transcript("committed", "overlap", "p", 2000, 2400), Transcript("committed", "new", "p", 2400, 3000)]
    assert link.duplicates == 1 and replay.committed_end_ms == 3000
    assert monitor.events == 5  # every event answered the watchdog, the end included
