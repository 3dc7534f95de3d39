"""Supervision of a call's provider sessions: the restart loop, backoff and failover.

A restart is a loop around one session at a time, never a callback::

    ┌─▶ session(chain[i]) ──▶ Finalized: done
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

What one session is (its sender, receiver and watchdog) is ``actors.provider_leg``'s.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

import trio

from providers.base import SttProvider
from providers.chain import ProviderChain
from providers.errors import ProviderError

from .backoff import Backoff
from .config import CallConfig
from .messages import CallEvent, ProviderNotice
from .replay import ReplayBuffer
from .stats import CallStats

__all__ = ["Supervisor", "SessionRun"]

log = logging.getLogger("earpiece.provider")

#: Runs one session of a provider to its end, given how many sessions failed before it
#: in this call; returns (the failure or None when it finalized, whether it proved healthy).
SessionRun = Callable[[SttProvider, int], Awaitable[tuple[ProviderError | None, bool]]]


class Supervisor:
    """Runs sessions of ``chain``'s providers (primary first) one at a time until one
    finalizes or none is left, reporting ``provider_error`` / ``provider_failover``
    notices on ``events_send``.  Between attempts it waits on ``replay`` (the caller
    hanging up shortens the wait); with no provider left it discards the call's audio."""

    def __init__(self, chain: ProviderChain, stats: CallStats, label: str, config: CallConfig,
                 rng: random.Random | None = None) -> None:
        self._chain = chain
        self._stats = stats
        self._label = label
        self._config = config
        self._backoff = Backoff(config.backoff_base, config.backoff_cap, config.backoff_jitter, rng)

    async def run(self, session: SessionRun, replay: ReplayBuffer,
                  events_send: trio.MemorySendChannel[CallEvent]) -> None:
        chain = self._chain
        failures = [0] * len(chain)  # consecutive failed sessions, per provider
        dead = [False] * len(chain)  # failed fatally: never tried again in this call
        index, probing, failed_before = 0, False, 0
        while True:
            provider = chain[index]
            failure, healthy = await session(provider, failed_before)
            if failure is None:
                return
            failed_before += 1
            if healthy:
                failures[index], probing = 0, False
            failures[index] += 1
            dead[index] = failure.fatal
            await self._report(provider, failure, failures[index], events_send)
            if not failure.fatal and failures[index] < (1 if probing else self._config.max_attempts):
                await self._pause(replay, self._backoff.delay(failures[index]))
                continue
            following = _next_alive(index, dead)
            if following is None:
                log.warning("%s no provider left: the rest of the call's audio is dropped", self._label)
                replay.discard()
                return
            if following != index:
                await self._fail_over(provider, chain[following], failure, failures[index], events_send)
            failures[following] = 0
            if following <= index:  # wrapped: every living provider spent its attempts: probe, slowly
                probing = True
                await self._pause(replay, self._backoff.delay(64))
            index = following

    async def _report(self, provider: SttProvider, failure: ProviderError, attempt: int,
                      events_send: trio.MemorySendChannel[CallEvent]) -> None:
        self._stats.provider_errors += 1
        log.warning("%s provider %s failed (%s): %s", self._label, provider.name,
                    "fatal" if failure.fatal else f"attempt {attempt}", failure.detail)
        await events_send.send(ProviderNotice("provider_error", provider.name, failure.detail, {
            "fatal": failure.fatal, "attempt": attempt, "error": type(failure).__name__}))

    async def _fail_over(self, provider: SttProvider, to: SttProvider, failure: ProviderError, attempts: int,
                         events_send: trio.MemorySendChannel[CallEvent]) -> None:
        self._stats.failovers += 1
        why = "fatal" if failure.fatal else f"{attempts} attempts failed"
        await events_send.send(ProviderNotice(
            "provider_failover", to.name, f"{provider.name} → {to.name}: {failure.detail} ({why})",
            {"from": provider.name, "to": to.name}))

    async def _pause(self, replay: ReplayBuffer, delay: float) -> None:
        """Sleep ``delay`` before the next attempt; once the caller hung up, at most a
        quarter of the drain deadline, so the final flush still gets its chances."""
        start = trio.current_time()
        with trio.move_on_after(delay):
            await replay.input_closed.wait()
            await trio.sleep_until(max(start, replay.input_closed_at) + self._config.drain_timeout / 4)


def _next_alive(index: int, dead: list[bool]) -> int | None:
    n = len(dead)
    for step in range(1, n + 1):
        candidate = (index + step) % n
        if not dead[candidate]:
            return candidate
    return None
