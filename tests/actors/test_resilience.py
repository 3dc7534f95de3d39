"""Provider resilience, as a caller's transcript consumer sees it: scripted faults,
virtual time (``autojump_clock``), exact transcripts, bytes, events and times.

Reading the tables: Twilio frame *k* (20 ms) arrives at trio time ``k * 0.02``, so call
audio up to ``ms`` is available at ``(ms - 20) / 1000`` s; the scripted provider commits
every 2000 ms of *session* audio and names the session span in its text, so a
reconnected session's "audio 0 to 2000" lands at the call-clock span its replay started
at.  ``backoff_jitter=0`` makes the reconnect schedule exact: 0.1, 0.2, 0.4, 0.8 s...
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from actors.backoff import Backoff
from actors.call import CallOutcome, run_call
from actors.config import CallConfig
from providers.base import AudioFormat
from providers.chain import ProviderChain
from providers.scripted import (
    Close,
    ErrorMessage,
    Garbage,
    RefuseHandshake,
    ScriptedProvider,
    SlowConsumer,
    Stall,
    random_faults,
)
from tests.helpers import ListSink, call_ids, play, task_count, tone, twilio_script

EXACT = CallConfig(backoff_jitter=0)
LIMIT = 300  # virtual seconds: a bound on each test, never an assertion


class TimedSink(ListSink):
    """Also records the trio time each event was emitted at (``t``)."""

    async def emit(self, event: Any) -> None:
        self.events.append({**event, "t": trio.current_time()})


async def call(provider, audio: bytes, *, config: CallConfig = EXACT, stop: bool = True, n: int = 1,
               rng: random.Random | None = None, script=None) -> tuple[CallOutcome, TimedSink]:
    sink = TimedSink()
    send, receive = trio.open_memory_channel[str](0)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(play, send, script if script is not None else twilio_script(audio, n=n, stop=stop))
            outcome = await run_call(receive, provider, [sink], config=config, rng=rng)
            nursery.cancel_scope.cancel()
    return outcome, sink


def committed(sink: ListSink) -> list[tuple[str, int, int, str]]:
    return [(e["text"], e["audio_start_ms"], e["audio_end_ms"], e["provider"]) for e in sink.events
            if e["type"] == "transcript" and e["kind"] == "committed"]


def spans(sink: ListSink) -> list[tuple[int, int]]:
    return [(start, end) for _, start, end, _ in committed(sink)]


def notices(sink: ListSink) -> list[tuple[str, str]]:
    return [(e["type"], e["provider"]) for e in sink.events if e["type"].startswith("provider_")]


def of_type(sink: ListSink, kind: str) -> list[dict[str, Any]]:
    return [e for e in sink.events if e["type"] == kind]


def accounting(sink: ListSink) -> tuple[str, int, int, int]:
    ended = sink.events[-1]
    assert ended["type"] == "call_ended"
    return ended["reason"], ended["audio_ms"], ended["forwarded_ms"], ended["dropped_ms"]


def assert_tiles(sink: ListSink, end_ms: int) -> None:
    """Committed spans cover [0, end_ms] exactly once: no word lost, none twice."""
    got = spans(sink)
    assert got and got[0][0] == 0 and got[-1][1] == end_ms, got
    assert all(a[1] == b[0] for a, b in zip(got, got[1:])), got
    assert all(start < end for start, end in got), got


def ms(audio: bytes, start: int, end: int | None = None) -> bytes:
    return audio[start * 8:] if end is None else audio[start * 8:end * 8]


# --- 1. the provider closes mid-utterance -----------------------------------------------


@pytest.mark.parametrize("code", [1006, 1011])
async def test_close_mid_utterance_reconnects_replays_the_uncommitted_tail_and_loses_nothing(autojump_clock, code):
    provider = ScriptedProvider(faults={0: [Close(code, after_ms=2500)]})
    audio = tone(5000)
    before = task_count()
    outcome, sink = await call(provider, audio)
    assert task_count() == before

    first, second = provider.sessions
    assert bytes(first.received) == ms(audio, 0, 2500)  # it closed once it had 2.5 s
    assert bytes(second.received) == ms(audio, 2000)  # the uncommitted tail (2.0-2.5 s), then the rest
    assert provider.attempts == [0, pytest.approx(2.48 + 0.1)]  # closed when 2.5 s had arrived; 0.1 s backoff

    assert committed(sink) == [("audio 0 to 2000", 0, 2000, "scripted"),
                               ("audio 0 to 2000", 2000, 4000, "scripted"),  # session 2's clock starts at 2000
                               ("audio 2000 to 3000", 4000, 5000, "scripted")]
    assert notices(sink) == [("provider_error", "scripted"), ("provider_reconnected", "scripted")]
    [error] = of_type(sink, "provider_error")
    assert error["fatal"] is False and str(code) in error["detail"] and error["attempt"] == 1
    [reconnected] = of_type(sink, "provider_reconnected")
    assert (reconnected["replayed_ms"], reconnected["offset_ms"]) == (500, 2000)
    types = sink.types()
    assert types.index("provider_error") < types.index("provider_reconnected")
    assert accounting(sink) == ("stop", 5000, 5000, 0)
    assert sink.events[-1]["replayed_ms"] == 500 and sink.events[-1]["reconnects"] == 1
    assert outcome.statistics.replayed_ms == 500


async def test_partials_after_a_reconnect_never_reach_back_before_the_committed_mark(autojump_clock):
    provider = ScriptedProvider(faults={0: [Close(1011, after_ms=2500)]})
    _, sink = await call(provider, tone(4000))
    partials = [(e["audio_start_ms"], e["audio_end_ms"]) for e in sink.events if e.get("kind") == "partial"]
    after = partials[partials.index((2000, 2500)) + 1:]
    assert after == [(2000, 2500), (2000, 3000), (2000, 3500)]  # the new session's, on the call clock


# --- 2. the handshake is refused -------------------------------------------------------------


async def test_401_without_fallback_is_one_fatal_error_and_all_audio_counted_as_dropped(autojump_clock):
    provider = ScriptedProvider(faults={0: [RefuseHandshake(401)]})
    outcome, sink = await call(provider, tone(3000))
    assert provider.attempts == [0] and provider.sessions == []  # fatal: never retried
    assert sink.types() == ["call_started", "provider_error", "call_ended"]
    error = sink.events[1]
    assert error["fatal"] is True and "401" in error["detail"] and error["error"] == "ProviderAuthError"
    assert accounting(sink) == ("stop", 3000, 0, 3000)
    assert outcome.reason == "stop" and "final transcript" not in outcome.detail


async def test_401_with_a_fallback_fails_over_at_once_and_the_fallback_gets_every_byte(autojump_clock):
    primary = ScriptedProvider(name="primary", faults={0: [RefuseHandshake(401)]})
    fallback = ScriptedProvider(name="fallback")
    audio = tone(3000)
    _, sink = await call(ProviderChain(primary, fallback), audio, config=CallConfig(backoff_jitter=0))
    assert primary.attempts == [0] and fallback.attempts == [0]  # no backoff before a failover
    assert bytes(fallback.sessions[0].received) == audio
    assert notices(sink) == [("provider_error", "primary"), ("provider_failover", "fallback"),
                             ("provider_reconnected", "fallback")]
    [failover] = of_type(sink, "provider_failover")
    assert (failover["from"], failover["to"]) == ("primary", "fallback") and "401" in failover["detail"]
    assert [c[3] for c in committed(sink)] == ["fallback", "fallback"]
    assert_tiles(sink, 3000)
    assert accounting(sink) == ("stop", 3000, 3000, 0)


async def test_503_is_retried_with_exact_exponential_backoff(autojump_clock):
    provider = ScriptedProvider(faults={a: [RefuseHandshake(503)] for a in range(3)})
    audio = tone(3000)
    _, sink = await call(provider, audio)
    assert provider.attempts == [0, pytest.approx(0.1), pytest.approx(0.3), pytest.approx(0.7)]
    assert bytes(provider.sessions[0].received) == audio  # 0.7 s of audio waited in the replay buffer
    errors = of_type(sink, "provider_error")
    assert [(e["fatal"], e["attempt"], e["error"]) for e in errors] == [
        (False, 1, "ProviderConnectionError"), (False, 2, "ProviderConnectionError"),
        (False, 3, "ProviderConnectionError")]
    assert [e["t"] for e in errors] == [0, pytest.approx(0.1), pytest.approx(0.3)]
    [reconnected] = of_type(sink, "provider_reconnected")
    assert (reconnected["attempt"], reconnected["replayed_ms"], reconnected["offset_ms"]) == (3, 0, 0)
    assert committed(sink)[0] == ("audio 0 to 2000", 0, 2000, "scripted")
    assert_tiles(sink, 3000)
    assert accounting(sink) == ("stop", 3000, 3000, 0)


async def test_backoff_is_jittered_reproducibly_with_a_seeded_rng(autojump_clock):
    provider = ScriptedProvider(faults={a: [RefuseHandshake(503)] for a in range(4)})
    await call(provider, tone(4000), config=CallConfig(), rng=random.Random(7))
    expected = Backoff(0.1, 5.0, 0.5, random.Random(7))
    times = [0.0]
    for attempt in range(1, 5):
        delay = expected.delay(attempt)
        assert expected.ceiling(attempt) / 2 <= delay <= expected.ceiling(attempt)
        times.append(times[-1] + delay)
    assert provider.attempts == [pytest.approx(t) for t in times]


async def test_after_every_attempt_failed_the_provider_is_probed_and_the_outage_replayed(autojump_clock):
    """A 503 outage longer than the retry budget but shorter than the replay buffer
    costs no audio: the provider is probed every backoff_cap seconds; the first probe
    that connects gets the whole outage replayed."""
    provider = ScriptedProvider(faults={a: [RefuseHandshake(503)] for a in range(6)})
    audio = tone(15_000)
    _, sink = await call(provider, audio)
    # 5 attempts (0.1 + 0.2 + 0.4 + 0.8 s apart), then probes every 5 s
    assert provider.attempts == [0, pytest.approx(0.1), pytest.approx(0.3), pytest.approx(0.7),
                                 pytest.approx(1.5), pytest.approx(6.5), pytest.approx(11.5)]
    assert bytes(provider.sessions[0].received) == audio
    assert len(of_type(sink, "provider_error")) == 6 and not of_type(sink, "provider_failover")
    assert_tiles(sink, 15_000)
    assert accounting(sink) == ("stop", 15_000, 15_000, 0)


async def test_a_vendor_wide_outage_shorter_than_the_replay_buffer_costs_no_audio(autojump_clock):
    """The vendor goes down at 3 s for 8 s: the live session closes, every attempt is
    refused (then probed every 5 s); the first session after the outage gets 2.0-14.6 s
    replayed at once and the call loses nothing."""
    provider = ScriptedProvider()
    audio = tone(20_000)

    async def vendor() -> None:
        await trio.sleep(3)
        provider.outage(8)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(vendor)
        _, sink = await call(provider, audio)
    t = 3.08  # the first batch after 3 s went out at 3.08 s and the session closed
    assert provider.attempts == [0] + [pytest.approx(t + d) for d in (0.1, 0.3, 0.7, 1.5, 6.5, 11.5)]
    first, second = provider.sessions
    assert bytes(first.received) == ms(audio, 0, 3100) and bytes(second.received) == ms(audio, 2000)
    [reconnected] = of_type(sink, "provider_reconnected")
    assert (reconnected["offset_ms"], reconnected["replayed_ms"]) == (2000, 1100)
    assert_tiles(sink, 20_000)
    assert accounting(sink) == ("stop", 20_000, 20_000, 0)


async def test_after_the_hang_up_the_next_probe_comes_within_the_drain(autojump_clock):
    """Probing every 5 s would miss a 2 s drain: once the caller hung up, the pause
    before the next attempt is at most a quarter of the drain."""
    provider = ScriptedProvider(faults={a: [RefuseHandshake(503)] for a in range(6)})
    audio = tone(8000)
    _, sink = await call(provider, audio)
    assert provider.attempts[5:] == [pytest.approx(6.5), pytest.approx(8.0 + 0.5)]  # not 11.5
    assert bytes(provider.sessions[0].received) == audio
    assert_tiles(sink, 8000)
    assert accounting(sink) == ("stop", 8000, 8000, 0)


# --- 3. garbage and vendor error messages -----------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Garbage(after_ms=2500), "ProviderProtocolError"),
        (ErrorMessage(fatal=False, after_ms=2500, vendor_type="rate_limited"), "ProviderRetryableError"),
    ],
    ids=["garbage", "retryable error message"],
)
async def test_garbage_or_a_retryable_error_reconnects_and_loses_nothing(autojump_clock, fault, error):
    provider = ScriptedProvider(faults={0: [fault]})
    audio = tone(5000)
    _, sink = await call(provider, audio)
    assert bytes(provider.sessions[1].received) == ms(audio, 2000)
    [failure] = of_type(sink, "provider_error")
    assert failure["fatal"] is False and failure["error"] == error
    assert notices(sink)[1] == ("provider_reconnected", "scripted")
    assert_tiles(sink, 5000)
    assert accounting(sink) == ("stop", 5000, 5000, 0)


async def test_a_fatal_error_message_without_fallback_keeps_the_call_and_counts_the_rest_dropped(autojump_clock):
    provider = ScriptedProvider(faults={0: [ErrorMessage(fatal=True, after_ms=2500, vendor_type="quota_exceeded")]})
    _, sink = await call(provider, tone(5000))
    assert len(provider.attempts) == 1
    assert committed(sink) == [("audio 0 to 2000", 0, 2000, "scripted")]
    [failure] = of_type(sink, "provider_error")
    assert failure["fatal"] is True and "quota_exceeded" in failure["detail"]
    assert accounting(sink) == ("stop", 5000, 2500, 2500)  # the 2.5 s it took, nothing after


# --- 4. the provider stalls ----------------------------------------------------------------


async def test_a_provider_that_stops_answering_is_caught_by_the_watchdog_and_replaced(autojump_clock):
    provider = ScriptedProvider(faults={0: [Stall(after_ms=1500)]})
    audio = tone(20_000)
    _, sink = await call(provider, audio)
    # the first unanswered speech (1.5-1.6 s) went out at 1.58 s; 10 s later: stalled
    [error] = of_type(sink, "provider_error")
    assert error["t"] == pytest.approx(11.58) and error["error"] == "ProviderStalledError"
    assert "no answer" in error["detail"]
    assert provider.attempts == [0, pytest.approx(11.68)]
    assert bytes(provider.sessions[1].received) == audio  # nothing was committed: all replayed
    assert_tiles(sink, 20_000)
    assert accounting(sink) == ("stop", 20_000, 20_000, 0)


async def test_a_provider_that_stops_reading_is_caught_by_the_send_deadline(autojump_clock):
    provider = ScriptedProvider(faults={0: [Stall(after_ms=1500, stop_reading=True)]})
    audio = tone(10_000)
    _, sink = await call(provider, audio)
    first, second = provider.sessions
    assert bytes(first.received) == ms(audio, 0, 1500)
    [error] = of_type(sink, "provider_error")
    assert error["t"] == pytest.approx(1.58 + 5.0) and "did not take audio for 5 s" in error["detail"]
    assert provider.attempts == [0, pytest.approx(6.68)]
    assert bytes(second.received) == audio
    assert_tiles(sink, 10_000)
    assert accounting(sink) == ("stop", 10_000, 10_000, 0)


async def test_silence_is_not_a_stall_but_an_unanswered_hang_up_is(autojump_clock):
    """A vendor that says nothing while the caller is silent is not reconnected; once the
    caller hung up it must answer within half the drain, or a new session gets the audio."""
    provider = ScriptedProvider(faults={0: [Stall(after_ms=0)]})
    _, sink = await call(provider, b"\xff" * 8 * 25_000)
    [error] = of_type(sink, "provider_error")  # none in 25 s of silence
    assert error["t"] == pytest.approx(25.0 + 1.0) and "after the caller hung up" in error["detail"]
    assert provider.attempts == [0, pytest.approx(26.1)]
    assert_tiles(sink, 25_000)
    assert accounting(sink) == ("stop", 25_000, 25_000, 0)


async def test_a_provider_going_deaf_in_the_last_second_is_replaced_within_the_drain(autojump_clock):
    provider = ScriptedProvider(faults={0: [Stall(after_ms=4500, stop_reading=True)]})
    audio = tone(5000)
    outcome, sink = await call(provider, audio)
    [error] = of_type(sink, "provider_error")
    assert error["t"] == pytest.approx(6.0)  # 1 s without progress after the hang-up at 5.0 s
    assert bytes(provider.sessions[1].received) == ms(audio, 4000)
    assert_tiles(sink, 5000)
    assert accounting(sink) == ("stop", 5000, 5000, 0) and "final transcript" not in outcome.detail


async def test_a_replay_burst_is_not_a_stall_before_the_vendor_had_time_to_answer(autojump_clock):
    """12 s of audio replayed at once: the watchdog wants 10 s of *time* too."""
    provider = ScriptedProvider(faults={**{a: [RefuseHandshake(503)] for a in range(6)}, 6: [Stall()]})
    audio = tone(25_000)
    _, sink = await call(provider, audio)
    # still probing (the session never proved healthy): the next probe would be 5 s
    # later, but the caller hung up at 25 s: it comes 0.5 s after that
    assert provider.attempts[6:] == [pytest.approx(11.5), pytest.approx(25.5)]
    stalled = [e for e in of_type(sink, "provider_error") if e["error"] == "ProviderStalledError"]
    assert [e["t"] for e in stalled] == [pytest.approx(11.5 + 10)]  # not at 11.5, when 11.5 s were unanswered
    assert bytes(provider.sessions[1].received) == audio
    assert_tiles(sink, 25_000)


# --- 5. the provider is slower than real time ----------------------------------------------------


async def test_a_slow_consumer_is_tolerated_with_bounded_lag_and_exact_drops(autojump_clock):
    """Decision: no reconnect (it would only replay more to the same slow provider).
    The replay buffer bounds memory and lag; the oldest unsent audio beyond it is
    dropped and counted, and every committed span stays on the call clock."""
    provider = ScriptedProvider(faults={0: [SlowConsumer(rate=0.5)]})
    config = CallConfig(backoff_jitter=0, replay_ms=4000)
    outcome, sink = await call(provider, tone(20_000), config=config)
    [session] = provider.sessions
    assert len(provider.attempts) == 1 and not notices(sink)
    stats = outcome.statistics
    assert stats.replay_peak_ms <= 4000  # memory bounded
    assert stats.replay_overflow_ms > 0
    received_ms = len(session.received) // 8
    assert accounting(sink)[1:] == (20_000, received_ms, 20_000 - received_ms)  # exact
    assert stats.replay_overflow_ms <= stats.dropped_ms
    got = spans(sink)
    assert all(a[1] <= b[0] and a[0] < a[1] for a, b in zip(got, got[1:]))  # in order, never overlapping
    for event in of_type(sink, "transcript"):  # bounded lag: what is transcribed is at most ~4 s old
        newest = min(event["t"] * 1000 + 20, 20_000)  # audio that had arrived when it was emitted
        assert newest - event["audio_end_ms"] <= 4000 + 200
    assert "final transcript not received" in outcome.detail  # a 4 s backlog at half speed > 2 s drain


# --- 6. Twilio's stop arrives during a reconnect ------------------------------------------------------


async def test_stop_during_a_reconnect_still_gets_the_final_transcript_from_the_new_session(autojump_clock):
    sequencer = trio.testing.Sequencer()

    async def on_open(attempt: int) -> None:
        if attempt == 1:
            async with sequencer(0):  # the reconnect has begun...
                pass
            async with sequencer(2):  # ...and completes only after Twilio's stop
                pass

    provider = ScriptedProvider(faults={0: [Close(1011, after_ms=2500)]}, on_open=on_open)
    audio = tone(3000)
    script = list(twilio_script(audio))

    async def twilio() -> Any:
        for message, is_media in script[:-1]:
            yield message, is_media
        async with sequencer(1):
            yield script[-1]

    _, sink = await _call_with_async_script(provider, twilio())
    assert bytes(provider.sessions[1].received) == ms(audio, 2000)
    assert committed(sink) == [("audio 0 to 2000", 0, 2000, "scripted"), ("audio 0 to 1000", 2000, 3000, "scripted")]
    types = sink.types()
    assert types[types.index("provider_reconnected") + 1:] == ["transcript"] * 3 + ["call_ended"]
    assert accounting(sink) == ("stop", 3000, 3000, 0)


async def test_stop_during_a_reconnect_that_outlasts_the_drain_deadline_counts_the_loss_exactly(autojump_clock):
    sequencer = trio.testing.Sequencer()

    async def on_open(attempt: int) -> None:
        if attempt == 1:
            async with sequencer(0):
                pass
            async with sequencer(2):
                await trio.sleep(5)  # the vendor takes 5 s to answer the handshake

    provider = ScriptedProvider(faults={0: [Close(1011, after_ms=2500)]}, on_open=on_open)
    script = list(twilio_script(tone(3000)))

    async def twilio() -> Any:
        for message, is_media in script[:-1]:
            yield message, is_media
        async with sequencer(1):
            yield script[-1]

    outcome, sink = await _call_with_async_script(provider, twilio())
    assert len(provider.sessions) == 1
    assert committed(sink) == [("audio 0 to 2000", 0, 2000, "scripted")]
    assert accounting(sink) == ("stop", 3000, 2500, 500)  # 2.5-3.0 s never reached a provider
    assert "final transcript not received within 2 s" in outcome.detail


async def _call_with_async_script(provider, script) -> tuple[CallOutcome, TimedSink]:
    sink = TimedSink()
    send, receive = trio.open_memory_channel[str](0)

    async def player() -> None:
        async with send:
            async for message, is_media in script:
                await send.send(message)
                if is_media:
                    await trio.sleep(0.02)

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(player)
            outcome = await run_call(receive, provider, [sink], config=EXACT)
            nursery.cancel_scope.cancel()
    return outcome, sink


# --- 7. Twilio's socket drops without stop while the provider is down --------------------------------


async def test_twilio_drop_during_a_provider_outage_flushes_through_the_new_session(autojump_clock):
    provider = ScriptedProvider(faults={0: [Close(1006, after_ms=2500)], 1: [RefuseHandshake(503)]})
    audio = tone(2600)
    outcome, sink = await call(provider, audio, stop=False)
    assert outcome.reason == "disconnect"
    assert bytes(provider.sessions[1].received) == ms(audio, 2000)
    assert_tiles(sink, 2600)
    assert accounting(sink) == ("disconnect", 2600, 2600, 0)


# --- 8. failover carries the replay buffer ------------------------------------------------------------


async def test_primary_down_fails_over_after_its_attempts_with_exactly_the_unacknowledged_tail(autojump_clock):
    primary = ScriptedProvider(name="primary", faults={0: [Close(1011, after_ms=2500)],
                                                       **{a: [RefuseHandshake(503)] for a in range(1, 10)}})
    fallback = ScriptedProvider(name="fallback")
    audio = tone(6000)
    _, sink = await call(ProviderChain(primary, fallback), audio, config=CallConfig(backoff_jitter=0))
    t = 2.48
    assert primary.attempts == [0] + [pytest.approx(t + d) for d in (0.1, 0.3, 0.7, 1.5)]
    assert fallback.attempts == [pytest.approx(t + 1.5)]  # straight after the 5th failure
    assert bytes(fallback.sessions[0].received) == ms(audio, 2000)  # unacknowledged tail + rest
    assert notices(sink) == [("provider_error", "primary")] * 5 + [("provider_failover", "fallback"),
                                                                   ("provider_reconnected", "fallback")]
    [reconnected] = of_type(sink, "provider_reconnected")
    assert (reconnected["offset_ms"], reconnected["replayed_ms"]) == (2000, 500)
    assert committed(sink) == [("audio 0 to 2000", 0, 2000, "primary"), ("audio 0 to 2000", 2000, 4000, "fallback"),
                               ("audio 2000 to 4000", 4000, 6000, "fallback")]
    assert accounting(sink) == ("stop", 6000, 6000, 0)
    assert sink.events[-1]["failovers"] == 1


async def test_failover_to_a_provider_of_another_format_converts_the_replay(autojump_clock):
    primary = ScriptedProvider(name="primary", faults={0: [Close(1011, after_ms=2500)], 1: [RefuseHandshake(401)]})
    fallback = ScriptedProvider(name="fallback", audio_format=AudioFormat("pcm16", 16000))
    _, sink = await call(ProviderChain(primary, fallback), tone(5000), config=CallConfig(backoff_jitter=0))
    received = len(fallback.sessions[0].received)
    assert abs(received - 3000 * 32) <= 64  # 2.0-5.0 s at 16 kHz pcm16 (soxr delay flushed)
    assert spans(sink) == [(0, 2000), (2000, 4000), (4000, 5000)]
    assert accounting(sink) == ("stop", 5000, 5000, 0)


async def test_a_failing_fallback_hands_back_to_the_primary(autojump_clock):
    primary = ScriptedProvider(name="primary", faults={0: [ErrorMessage(False, after_ms=2500)],
                                                       **{a: [RefuseHandshake(503)] for a in range(1, 5)}})
    fallback = ScriptedProvider(name="fallback", faults={a: [RefuseHandshake(503)] for a in range(5)})
    _, sink = await call(ProviderChain(primary, fallback), tone(12_000), config=CallConfig(backoff_jitter=0))
    failovers = [(e["from"], e["to"]) for e in of_type(sink, "provider_failover")]
    assert failovers == [("primary", "fallback"), ("fallback", "primary")]
    assert len(primary.sessions) == 2 and fallback.sessions == []
    assert_tiles(sink, 12_000)
    assert accounting(sink) == ("stop", 12_000, 12_000, 0)


# --- bounded everything: a provider down longer than the replay buffer -------------------------------


async def test_an_outage_longer_than_the_replay_buffer_drops_exactly_the_oldest_audio(autojump_clock):
    """Down for the first 16.5 s with a 10 s buffer: the first 6.5 s is lost, exactly."""
    provider = ScriptedProvider(faults={a: [RefuseHandshake(503)] for a in range(7)})
    audio = tone(20_000)
    outcome, sink = await call(provider, audio, config=CallConfig(backoff_jitter=0, replay_ms=10_000))
    assert provider.attempts[-1] == pytest.approx(16.5)
    [session] = provider.sessions
    # at 16.5 s the audio up to 16.5 s had arrived (its last frame at 16.48 s): 6.5-16.5 s is held
    assert bytes(session.received) == ms(audio, 6500)
    assert outcome.statistics.replay_peak_ms == 10_000
    assert accounting(sink) == ("stop", 20_000, 13_500, 6500)
    assert outcome.statistics.replay_overflow_ms == 6500
    assert spans(sink)[0] == (6500, 8500)


# --- 10. many calls, random faults: only the faulty calls notice ---------------------------------------


async def test_100_concurrent_calls_with_seeded_random_provider_failures_touch_only_their_calls(autojump_clock):
    rng = random.Random(20261125)
    faulty = set(rng.sample(range(100), 30))
    config = CallConfig(backoff_jitter=0, stall_timeout=2.0, send_timeout=1.0, drain_timeout=10.0)
    length = 10_000
    def script(n: int):  # the first session faults; a reconnect faults again half the time
        first, again = random_faults(1.0, seed=n, after_ms=(300, 6000)), random_faults(0.5, seed=n, after_ms=(300, 6000))
        return lambda attempt: first(attempt) if attempt == 0 else again(attempt) if attempt < 3 else ()

    providers = {n: ScriptedProvider(faults=script(n) if n in faulty else {}) for n in range(100)}
    audio = {n: tone(length, seed=n) for n in range(100)}
    sink = TimedSink()
    before = task_count()

    async def one(n: int) -> None:
        send, receive = trio.open_memory_channel[str](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(play, send, twilio_script(audio[n], n=n + 1))
            await run_call(receive, providers[n], [sink], config=config, rng=random.Random(n))
            nursery.cancel_scope.cancel()

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            for n in range(100):
                nursery.start_soon(one, n)
    assert task_count() == before

    for n in range(100):
        call_sid = call_ids(n + 1)[0]
        events = sink.of_call(call_sid)
        per_call = ListSink()
        per_call.events = events
        ended = events[-1]
        assert ended["type"] == "call_ended" and ended["reason"] == "stop"
        assert_tiles(per_call, length)  # every call, faulty or not: no word lost, none twice
        assert (ended["audio_ms"], ended["forwarded_ms"], ended["dropped_ms"]) == (length, length, 0)
        if n in faulty:
            assert "provider_error" in per_call.types()
            continue
        [session] = providers[n].sessions
        assert bytes(session.received) == audio[n]
        assert [e["type"] for e in events if e["type"].startswith("provider_")] == []
        assert [(e["text"], e["audio_start_ms"], e["audio_end_ms"]) for e in events if e.get("kind") == "committed"] \
            == [(f"audio {a} to {a + 2000}", a, a + 2000) for a in range(0, length, 2000)]
