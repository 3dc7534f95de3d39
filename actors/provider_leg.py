"""ProviderLeg: the provider side of a call.

One session at a time (``actors.supervision`` decides which, and when to give up), each
session two tasks around one ``ReplayLink``::

    ReplayBuffer ─▶ SttSender ─▶ ReplayLink.send ─▶ session (websocket, codec) ─▶ provider
    provider ─▶ session ─▶ ReplayLink.next_event ─▶ SttReceiver ─▶ events ─▶ TranscriptEmitter
    SessionMonitor: the stall watchdog, told of every batch and event by the link and of
    the hang-up by the ReplayBuffer; a cancel scope around the session, not a task

Audio never waits on any of this: the ReplayBuffer keeps taking it in (bounded) while
the leg is down, and every new session starts with the audio since the last committed
transcript, on the call's clock.
"""

from __future__ import annotations

import random

import trio

from providers.base import SttProvider, answer_timeout, finalize_timeout
from providers.chain import ProviderChain
from providers.errors import ProviderError

from .config import CallConfig
from .convert import session_converter
from .messages import CallEvent, ProviderNotice
from .replay import ReplayBuffer, SessionClock
from .session_link import ReplayLink
from .stats import CallStats
from .stt_receiver import SttReceiver
from .stt_sender import SttSender
from .supervision import Supervisor
from .watchdog import SessionMonitor

__all__ = ["ProviderLeg"]


class ProviderLeg:
    """Runs provider sessions for one call, one at a time, until one finalizes.

    Consumes: audio from ``replay`` (the ReplayBuffer run_call fills).
    Produces: transcripts and ``provider_error`` / ``provider_reconnected`` /
    ``provider_failover`` notices on ``events_send``; closes it when done.
    Never raises a ``ProviderError``: a provider failure never ends the call, and never
    slows Twilio down.  ``chain``: the call's providers, failed over along in order.
    """

    def __init__(
        self,
        chain: ProviderChain,
        stats: CallStats,
        call_label: str = "",
        *,
        config: CallConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._stats = stats
        self._config = config or CallConfig()
        self._supervisor = Supervisor(chain, stats, call_label, self._config, rng)

    async def run(self, replay: ReplayBuffer, events_send: trio.MemorySendChannel[CallEvent]) -> None:
        async with events_send:
            async def session(provider: SttProvider, failed_before: int) -> tuple[ProviderError | None, bool]:
                return await self._run_session(provider, replay, events_send, failed_before)

            await self._supervisor.run(session, replay, events_send)

    async def _run_session(
        self,
        provider: SttProvider,
        replay: ReplayBuffer,
        events_send: trio.MemorySendChannel[CallEvent],
        failed_before: int,
    ) -> tuple[ProviderError | None, bool]:
        """One session, start to end.  Returns (the failure or None, whether it proved healthy)."""
        config = self._config
        stall_timeout, send_timeout, hurry_timeout = _answer_times(provider, config)
        monitor = SessionMonitor(provider.name, stall_timeout, config.healthy_ms, hurry_timeout=hurry_timeout)
        failure: ProviderError | None = None
        try:
            async with provider.open_session() as session:
                offset = await self._rewind(provider, replay, events_send, failed_before)
                link = ReplayLink(session, provider.name, replay, monitor, SessionClock(offset),
                                  session_converter(replay.audio_format, provider.audio_format))
                sender = SttSender(provider.keepalive_interval, send_timeout=send_timeout)
                # The watchdog and the hang-up are a cancel scope and a callback, not
                # tasks: a session is two tasks (the sender, the receiver in this one).
                replay.call_when_input_closed(monitor.hung_up)
                try:
                    with monitor.watching():
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(sender.run, link)
                            await SttReceiver().run(link, events_send)
                            nursery.cancel_scope.cancel()
                finally:
                    replay.call_when_input_closed(None)
        except* ProviderError as group:
            failure = _first(group)
        return failure, monitor.healthy

    async def _rewind(self, provider: SttProvider, replay: ReplayBuffer,
                      events_send: trio.MemorySendChannel[CallEvent], failed_before: int) -> int:
        """Start ``replay`` over for a new session; returns where its audio starts on the
        call clock.  After a failure, says so (``provider_reconnected``)."""
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
        return offset


def _answer_times(provider: SttProvider, config: CallConfig) -> tuple[float, float, float]:
    """How long one session of ``provider`` may go without answering: (stall, send,
    after the hang-up).  After the hang-up, half the drain for this session, half for a
    replacement.  A provider that declares longer answer times
    (``providers.base.SlowAnswers``: a local decoder under load, whose ``send_audio``
    also waits for its decodes) gets them: a reconnect would only decode the same audio
    again.  A provider that declares nothing gets the call's settings exactly."""
    answer, finalize = answer_timeout(provider) or 0.0, finalize_timeout(provider) or 0.0
    return (max(config.stall_timeout, answer), max(config.send_timeout, answer),
            max(config.drain_timeout / 2, finalize))


def _first(group: BaseExceptionGroup) -> ProviderError:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, ProviderError)
    return exc
