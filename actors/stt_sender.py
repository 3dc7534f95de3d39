"""SttSender: call audio into one provider session."""

from __future__ import annotations

import math
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
    ``receive`` raises ``trio.EndOfChannel`` when the call's audio is over, and must be
    cancel-safe: the sender's idle timer cancels it."""

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
        self._timing: str | None = None  # what the timer of run() is timing: None = the wait for audio

    async def run(self, session: SttSession, audio_receive: AudioSource) -> None:
        held: AudioBatch | None = None  # received as the timer went off, not sent yet
        while True:
            with trio.CancelScope() as timer:
                first, held = held, None
                try:
                    held = await self._stream(session, audio_receive, timer, first)
                except trio.EndOfChannel:
                    break
            if not timer.cancelled_caught:
                continue  # it went off just as an operation completed: nothing lost, a fresh timer
            if self._timing is not None:
                raise self._stalled(self._timing)
            if self._keepalive_interval is not None:
                await self._bounded("a keepalive", session.keepalive)
        if self._flush is not None and (tail := self._flush()):
            await self._bounded("audio", session.send_audio, tail)
        await self._bounded("the end of the audio", session.finalize)

    async def _stream(self, session: SttSession, audio_receive: AudioSource, timer: trio.CancelScope,
                      batch: AudioBatch | None) -> AudioBatch | None:
        """Receive and send batches until ``timer`` goes off.  One scope serves every
        batch, its deadline moved from operation to operation: the keepalive interval
        while waiting for audio, ``send_timeout`` while the session takes it (a scope
        per wait cost more than the rest of this loop).  ``self._timing`` says which
        was running.  A scope that went off stays cancelled, so when it goes off just as
        an operation completed this returns, with the batch received but not sent yet.

        Without a keepalive the last send's deadline is left armed while waiting for
        audio (one deadline move per batch, not two): after ``send_timeout`` of silence
        it goes off, the wait is cancelled (receiving is cancel-safe) and run() takes a
        fresh timer, with no deadline until the next send."""
        keepalive, send_timeout = self._keepalive_interval, self._send_timeout
        while True:
            if batch is None:
                self._timing = None
                if keepalive is not None:
                    timer.deadline = trio.current_time() + keepalive
                batch = await audio_receive.receive()
                if timer.cancel_called:
                    return batch
            payload = self._convert(batch.payload) if self._convert is not None else batch.payload
            if self._on_sending is not None:
                self._on_sending(batch)
            if payload:
                self._timing = "audio"
                if send_timeout is not None:
                    timer.deadline = trio.current_time() + send_timeout
                elif keepalive is not None:
                    timer.deadline = math.inf
                await session.send_audio(payload)
            if self._on_sent is not None:
                self._on_sent(batch)
            else:
                self._stats.forward(batch)
            batch = None
            if timer.cancel_called:
                return None

    async def _bounded(self, what: str, operation: Callable[..., Awaitable[None]], *args: bytes) -> None:
        if self._send_timeout is None:
            await operation(*args)
            return
        try:
            with trio.fail_after(self._send_timeout):
                await operation(*args)
        except trio.TooSlowError:
            raise self._stalled(what) from None

    def _stalled(self, what: str) -> ProviderStalledError:
        return ProviderStalledError(self._provider, f"provider did not take {what} for {self._send_timeout:g} s")
