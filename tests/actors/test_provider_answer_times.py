"""A provider that says its answers take long (a local decoder behind a busy, shared
queue) is waited for, not reconnected; one that says nothing keeps the call's watchdog.

``BusyDecoder`` is such a decoder on virtual time (``autojump_clock``): it takes audio at
once, commits every 2000 ms of it, and decodes its commits one after another, each
``decode_s`` seconds late, as an overloaded decode queue would; no partials (a busy
queue skips them).  The call: 6 s of speech at Twilio's pace, then ``stop``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio.testing

from actors.call import EndReason, run_call
from actors.config import CallConfig
from providers.base import MULAW_8K, AudioFormat, SlowAnswers
from providers.events import Finalized, FinalTranscript, ProviderEvent, SessionStarted
from tests.helpers import ListSink, play, tone, twilio_script

LIMIT = 300  # virtual seconds: a bound on each test, never an assertion
COMMIT_MS = 2000


class BusyDecoderSession:
    def __init__(self, decode_s: float) -> None:
        self.received_ms = 0
        self._committed_ms = 0
        self._decode_s = decode_s
        self._jobs_send, self._jobs = trio.open_memory_channel[tuple[int, int] | None](64)
        self._events_send, self._events = trio.open_memory_channel[ProviderEvent](64)
        self._events_send.send_nowait(SessionStarted("busy"))

    async def send_audio(self, audio: bytes) -> None:
        self.received_ms += len(audio) // 8
        while self.received_ms - self._committed_ms >= COMMIT_MS:
            self._queue(self._committed_ms + COMMIT_MS)
        await trio.lowlevel.checkpoint()

    def _queue(self, end_ms: int) -> None:
        self._jobs_send.send_nowait((self._committed_ms, end_ms))
        self._committed_ms = end_ms

    async def finalize(self) -> None:
        if self.received_ms > self._committed_ms:
            self._queue(self.received_ms)
        self._jobs_send.send_nowait(None)
        await trio.lowlevel.checkpoint()

    async def keepalive(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive(self) -> ProviderEvent:
        return await self._events.receive()

    async def decode(self) -> None:
        """The decode queue: one commit at a time, each ``decode_s`` late."""
        async for job in self._jobs:
            if job is None:
                await self._events_send.send(Finalized())
                return
            await trio.sleep(self._decode_s)
            start, end = job
            await self._events_send.send(FinalTranscript(f"audio {start} to {end}", start, end))


@attrs.define
class BusyDecoder:
    """Declares nothing: the call's watchdog defaults apply."""

    decode_s: float
    name: str = "busy"
    audio_format: AudioFormat = MULAW_8K
    chunk_ms: int | None = None
    keepalive_interval: float | None = None
    opened: int = 0

    @asynccontextmanager
    async def open_session(self) -> AsyncIterator[BusyDecoderSession]:
        self.opened += 1
        session = BusyDecoderSession(self.decode_s)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.decode)
            yield session
            nursery.cancel_scope.cancel()


@attrs.define
class DeclaredBusyDecoder(BusyDecoder):
    """Says how late it may answer (``providers.base.SlowAnswers``)."""

    answer_timeout: float = 40.0
    finalize_timeout: float = 40.0


async def call(provider: BusyDecoder, config: CallConfig = CallConfig(backoff_jitter=0)) -> tuple[Any, ListSink]:
    sink = ListSink()
    send, receive = trio.open_memory_channel[str](0)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(play, send, twilio_script(tone(6000)))
            outcome = await run_call(receive, provider, [sink], config=config)
            nursery.cancel_scope.cancel()
    return outcome, sink


def committed(sink: ListSink) -> list[tuple[str, int, int]]:
    return [(e["text"], e["audio_start_ms"], e["audio_end_ms"]) for e in sink.events
            if e["type"] == "transcript" and e["kind"] == "committed"]


def of_type(sink: ListSink, kind: str) -> list[dict[str, Any]]:
    return [e for e in sink.events if e["type"] == kind]


async def test_a_provider_that_declares_slow_answers_is_waited_for_without_reconnect_or_replay(
        autojump_clock: trio.testing.MockClock) -> None:
    """Each commit comes 12 s late (36 s for the last, well past the 10 s stall watchdog
    and the 2 s drain): one session, no reconnect, no replay, every commit exactly once,
    and the call ends as a plain ``stop`` once the decoder finalized."""
    provider = DeclaredBusyDecoder(decode_s=12.0)
    assert isinstance(provider, SlowAnswers)
    outcome, sink = await call(provider)
    assert committed(sink) == [("audio 0 to 2000", 0, 2000), ("audio 2000 to 4000", 2000, 4000),
                               ("audio 4000 to 6000", 4000, 6000)]
    assert provider.opened == 1
    assert [e["type"] for e in sink.events if e["type"].startswith("provider_")] == []
    (ended,) = of_type(sink, "call_ended")
    assert (ended["reason"], ended["audio_ms"], ended["forwarded_ms"], ended["dropped_ms"], ended["detail"]) == \
        ("stop", 6000, 6000, 0, "")
    assert (ended["replayed_ms"], ended["reconnects"]) == (0, 0)
    assert (outcome.reason, outcome.close_code) == (EndReason.STOP, 1000)


async def test_the_same_late_decoder_declaring_nothing_gets_the_calls_watchdog(
        autojump_clock: trio.testing.MockClock) -> None:
    """Today's defaults, unchanged for providers that declare nothing (every cloud
    provider): after the hang-up the session must make progress within half the 2 s
    drain, so it is taken for stalled, reconnected with its audio replayed, and the
    drain deadline ends the call before any late commit arrives."""
    provider = BusyDecoder(decode_s=12.0)
    assert not isinstance(provider, SlowAnswers)
    outcome, sink = await call(provider)
    errors = of_type(sink, "provider_error")
    assert errors and errors[0]["detail"].endswith("no progress for 1 s after the caller hung up")
    assert of_type(sink, "provider_reconnected")[0]["replayed_ms"] == 6000
    assert committed(sink) == []
    assert provider.opened >= 2
    (ended,) = of_type(sink, "call_ended")
    assert (ended["reason"], ended["detail"]) == ("stop", "final transcript not received within 2 s")
    assert outcome.reason is EndReason.STOP


async def test_a_declared_answer_time_never_shortens_the_calls_own_settings(
        autojump_clock: trio.testing.MockClock) -> None:
    """A provider declaring less than the call allows is held to the call's settings: a
    decoder 3 s late declaring 1 s still gets the 10 s it would get without declaring
    (half of a 20 s drain) and finishes in one session."""
    provider = DeclaredBusyDecoder(decode_s=3.0, answer_timeout=1.0, finalize_timeout=1.0)
    outcome, sink = await call(provider, CallConfig(backoff_jitter=0, drain_timeout=20.0))
    assert [text for text, _, _ in committed(sink)] == ["audio 0 to 2000", "audio 2000 to 4000",
                                                        "audio 4000 to 6000"]
    assert provider.opened == 1
    assert of_type(sink, "call_ended")[0]["detail"] == ""


async def test_a_served_gateway_passes_the_declared_answer_times_on_to_the_call() -> None:
    """Through the real gateway (Hypercorn on 127.0.0.1, Twilio's pace, real time): a
    decoder whose commit comes 1.5 s after the hang-up (past the 1 s the watchdog gives
    a provider that declares nothing) gets its declared time; one session, no
    reconnect, the commit once."""
    from gateway.simulator import simulate_call
    from tests.conftest import running_gateway

    provider = DeclaredBusyDecoder(decode_s=1.5)
    sink = ListSink()
    with trio.fail_after(60):
        async with running_gateway(provider, [sink]) as gw:
            await simulate_call(gw.ws_url, tone(2000))
            await gw.idle()
    assert committed(sink) == [("audio 0 to 2000", 0, 2000)]
    assert [e["type"] for e in sink.events if e["type"].startswith("provider_")] == []
    assert provider.opened == 1
    (ended,) = of_type(sink, "call_ended")
    assert (ended["reason"], ended["detail"], ended["dropped_ms"]) == ("stop", "", 0)
