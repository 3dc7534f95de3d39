"""SttSender: call audio into one provider session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from providers.base import SttSession
from providers.errors import ProviderStalledError

from .messages import AudioBatch
from .stats import CallStats

__all__ = ["SttSender", "AudioSource"]


class AudioSource(Protocol):
    """Where a sender takes audio from: a memory channel, or a ``ReplayBuffer`` feed.
    ``receive`` raises ``trio.EndOfChannel`` when the call's audio is over."""

    async def receive(self) -> AudioBatch: ...


class SttSender:
    """Consumes ``AudioBatch``es and sends each to ``session``; when the audio ends (the
    caller hung up) asks the session for its final transcript (``finalize``) and returns.
    Sends ``keepalive`` after ``keepalive_interval`` seconds without audio.  Does not
    close its source: the audio outlives a session.

    Each batch is reported to ``on_sending`` before it is sent (the session clock and
    the stall watchdog: the vendor may answer it before ``send_audio`` returns), and
    once the session accepted it to ``on_sent`` (the replay buffer) or, without that
    hook, counted in ``stats.forwarded_ms``.
    ``convert`` turns call audio into the session's format when the two differ.

    Raises: what ``session.send_audio``/``finalize``/``keepalive`` raise (a
    ``ProviderError``), and ``ProviderStalledError`` when one of them takes longer than
    ``send_timeout`` seconds (a provider that stopped reading; every session type, not
    only WebSocket ones).
    """

    def __init__(
        self,
        stats: CallStats,
        keepalive_interval: float | None = None,
        *,
        provider: str = "provider",
        send_timeout: float | None = None,
        on_sending: Callable[[AudioBatch], None] | None = None,
        on_sent: Callable[[AudioBatch], None] | None = None,
        convert: Callable[[bytes], bytes] | None = None,
        flush: Callable[[], bytes] | None = None,
    ) -> None:
        self._stats = stats
        self._keepalive_interval = keepalive_interval
        self._provider = provider
        self._send_timeout = send_timeout
        self._on_sending = on_sending
        self._on_sent = on_sent
        self._convert = convert
        self._flush = flush

    async def run(self, session: SttSession, audio_receive: AudioSource) -> None:
        while True:
            if self._keepalive_interval is None:
                try:
                    batch = await audio_receive.receive()
                except trio.EndOfChannel:
                    break
            else:
                with trio.move_on_after(self._keepalive_interval) as idle:
                    try:
                        batch = await audio_receive.receive()
                    except trio.EndOfChannel:
                        break
                if idle.cancelled_caught:
                    await self._bounded("a keepalive", session.keepalive)
                    continue
            payload = self._convert(batch.payload) if self._convert is not None else batch.payload
            if self._on_sending is not None:
                self._on_sending(batch)
            if payload:
                await self._bounded("audio", session.send_audio, payload)
            if self._on_sent is not None:
                self._on_sent(batch)
            else:
                self._stats.forward(batch)
        if self._flush is not None and (tail := self._flush()):
            await self._bounded("audio", session.send_audio, tail)
        await self._bounded("the end of the audio", session.finalize)

    async def _bounded(self, what: str, operation: Callable[..., Awaitable[None]], *args: bytes) -> None:
        if self._send_timeout is None:
            await operation(*args)
            return
        try:
            with trio.fail_after(self._send_timeout):
                await operation(*args)
        except trio.TooSlowError:
            raise ProviderStalledError(
                self._provider, f"provider did not take {what} for {self._send_timeout:g} s") from None
