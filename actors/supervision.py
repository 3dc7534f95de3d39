"""ProviderLeg: the provider side of a call, supervised.

A restart is a loop around an inner nursery, never a callback::

    ┌─▶ open_session(chain[i]) ── SttSender ∥ SttReceiver ∥ SessionMonitor ──▶ Finalized: done
    │        │ ProviderError (typed: .fatal decides)
    │        ▼
    │   provider_error ─ retryable, attempts left? ── sleep(backoff) ──────────────┐
    │        │ fatal, or max_attempts spent                                       │
    │        ▼                                                                    │
    │   next living provider of the chain (provider_failover) ────────────────────┤
    │        │ wrapped around: every provider spent its attempts                  │
    │        ▼                                                                    │
    │   probe mode: one attempt per provider, backoff_cap apart ──────────────────┤
    │        │ every provider failed fatally                                      │
    │        ▼                                                                    │
    │   discard: the rest of the call's audio is counted as dropped               │
    └──────────────────────────── provider_reconnected (replaying the tail) ◀─────┘

Audio never waits on any of this: the ReplayBuffer keeps taking it in (bounded) while
the leg is down, and every new session starts with the audio since the last committed
transcript, on the call's clock.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import trio

from providers.base import AudioFormat, SttProvider
from providers.errors import ProviderError

from .backoff import Backoff
from .config import CallConfig
from .convert import FormatConverter
from .messages import AudioBatch, CallEvent, ProviderNotice
from .replay import ReplayBuffer, SessionClock
from .stats import CallStats
from .stt_receiver import SttReceiver
from .stt_sender import SttSender
from .watchdog import SessionMonitor, is_speech

__all__ = ["ProviderLeg"]

log = logging.getLogger("earpiece.provider")


class _SessionFeed:
    """What one session's SttSender reads: the replay buffer, with each accepted batch
    recorded on the session clock and in the stall monitor."""

    def __init__(self, replay: ReplayBuffer, clock: SessionClock, monitor: SessionMonitor) -> None:
        self._replay = replay
        self._clock = clock
        self._monitor = monitor
        self._format = replay.audio_format

    async def receive(self) -> AudioBatch:
        try:
            return await self._replay.next_batch()
        except trio.EndOfChannel:
            self._monitor.audio_ended()
            raise

    def sending(self, batch: AudioBatch) -> None:
        self._clock.sent(batch)
        self._monitor.sending(batch.duration_ms, is_speech(batch.payload, self._format))

    def sent(self, batch: AudioBatch) -> None:
        self._replay.mark_sent(batch)
        self._monitor.accepted(batch.duration_ms)


class ProviderLeg:
    """Runs provider sessions for one call, one at a time, until one finalizes.

    Consumes: audio from ``replay`` (the ReplayBuffer run_call fills).
    Produces: transcripts and ``provider_error`` / ``provider_reconnected`` /
    ``provider_failover`` notices on ``events_send``; closes it when done.
    Never raises a ``ProviderError``: a provider failure never ends the call, and never
    slows Twilio down.  ``providers`` is the chain ``[primary, *fallbacks]``.
    """

    def __init__(
        self,
        providers: Sequence[SttProvider] | SttProvider,
        stats: CallStats,
        call_label: str = "",
        *,
        config: CallConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(providers, Sequence):
            providers = [providers]
        if not providers:
            raise ValueError("a provider leg needs at least one provider")
        self._chain = list(providers)
        self._stats = stats
        self._label = call_label
        self._config = config or CallConfig()
        self._backoff = Backoff(self._config.backoff_base, self._config.backoff_cap,
                                self._config.backoff_jitter, rng)
        self.current: SttProvider = self._chain[0]

    async def run(self, replay: ReplayBuffer, events_send: trio.MemorySendChannel[CallEvent]) -> None:
        config, stats, chain = self._config, self._stats, self._chain
        failures = [0] * len(chain)  # consecutive failed sessions, per provider
        dead = [False] * len(chain)  # failed fatally: never tried again in this call
        index, probing, failed_before = 0, False, 0
        async with events_send:
            while True:
                provider = self.current = chain[index]
                failure, healthy = await self._run_session(provider, replay, events_send, failed_before)
                if failure is None:
                    return
                failed_before += 1
                if healthy:
                    failures[index], probing = 0, False
                failures[index] += 1
                dead[index] = failure.fatal
                stats.provider_errors += 1
                log.warning("%s provider %s failed (%s): %s", self._label, provider.name,
                            "fatal" if failure.fatal else f"attempt {failures[index]}", failure.detail)
                await events_send.send(ProviderNotice("provider_error", provider.name, failure.detail, {
                    "fatal": failure.fatal, "attempt": failures[index], "error": type(failure).__name__}))

                if not failure.fatal and failures[index] < (1 if probing else config.max_attempts):
                    await self._pause(replay, self._backoff.delay(failures[index]))
                    continue
                following = self._next_alive(index, dead)
                if following is None:
                    log.warning("%s no provider left: the rest of the call's audio is dropped", self._label)
                    replay.discard()
                    return
                wrapped = following <= index
                if following != index:
                    stats.failovers += 1
                    why = "fatal" if failure.fatal else f"{failures[index]} attempts failed"
                    await events_send.send(ProviderNotice(
                        "provider_failover", chain[following].name,
                        f"{provider.name} → {chain[following].name}: {failure.detail} ({why})",
                        {"from": provider.name, "to": chain[following].name}))
                failures[following] = 0
                if wrapped:  # every living provider spent its attempts: probe, slowly
                    probing = True
                    await self._pause(replay, self._backoff.delay(64))
                index = following

    async def _pause(self, replay: ReplayBuffer, delay: float) -> None:
        """Sleep ``delay`` before the next attempt; once the caller hung up, at most a
        quarter of the drain deadline, so the final flush still gets its chances."""
        start = trio.current_time()
        with trio.move_on_after(delay):
            await replay.input_closed.wait()
            await trio.sleep_until(max(start, replay.input_closed_at) + self._config.drain_timeout / 4)

    @staticmethod
    def _next_alive(index: int, dead: list[bool]) -> int | None:
        n = len(dead)
        for step in range(1, n + 1):
            candidate = (index + step) % n
            if not dead[candidate]:
                return candidate
        return None

    async def _run_session(
        self,
        provider: SttProvider,
        replay: ReplayBuffer,
        events_send: trio.MemorySendChannel[CallEvent],
        failed_before: int,
    ) -> tuple[ProviderError | None, bool]:
        """One session, start to end.  Returns (the failure or None, whether it proved healthy)."""
        config = self._config
        # after the hang-up, half the drain for this session, half for a replacement
        monitor = SessionMonitor(provider.name, config.stall_timeout, config.healthy_ms,
                                 hurry_timeout=config.drain_timeout / 2)
        failure: ProviderError | None = None
        try:
            async with provider.open_session() as session:
                replayed = replay.rewind()
                offset = replay.replay_start_ms()
                if failed_before:
                    self._stats.reconnects += 1
                    await events_send.send(ProviderNotice(
                        "provider_reconnected", provider.name,
                        f"connected after {failed_before} failure(s); sending the {replay.held_ms} ms held from "
                        f"{offset} ms on ({replayed} ms of it sent before)",
                        {"attempt": failed_before, "replayed_ms": replayed, "backlog_ms": replay.held_ms,
                         "offset_ms": offset}))
                clock = SessionClock(offset)
                converter = self._converter(replay.audio_format, provider.audio_format)
                feed = _SessionFeed(replay, clock, monitor)
                sender = SttSender(
                    self._stats, provider.keepalive_interval, provider=provider.name,
                    send_timeout=config.send_timeout, on_sending=feed.sending, on_sent=feed.sent,
                    convert=converter.convert if converter else None,
                    flush=converter.flush if converter else None)
                receiver = SttReceiver(provider.name, offset, clock=clock, ledger=replay, on_event=monitor.answered)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sender.run, session, feed)
                    nursery.start_soon(monitor.run)
                    nursery.start_soon(_on_hang_up, replay, monitor)
                    await receiver.run(session, events_send)
                    nursery.cancel_scope.cancel()
        except* ProviderError as group:
            failure = _first(group)
        return failure, monitor.healthy

    @staticmethod
    def _converter(source: AudioFormat, target: AudioFormat) -> FormatConverter | None:
        return None if source == target else FormatConverter(source, target)


async def _on_hang_up(replay: ReplayBuffer, monitor: SessionMonitor) -> None:
    await replay.input_closed.wait()
    monitor.hung_up()


def _first(group: BaseExceptionGroup) -> ProviderError:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, ProviderError)
    return exc
