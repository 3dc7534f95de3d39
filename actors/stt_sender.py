"""SttSender: call audio into one provider session."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import trio

from providers.errors import ProviderStalledError

from .messages import AudioBatch
from .session_link import SessionLink

__all__ = ["SttSender"]


class SttSender:
    """Takes batches from ``link.next_batch`` and sends each with ``link.send`` (which
    does what the call needs around the send); when the audio ends (the caller hung up)
    sends what a converter held back (``link.flush``), asks for the final transcript
    (``link.finalize``) and returns.  Sends a keepalive after ``keepalive_interval``
    seconds without audio (None: never).  Does not close its source: the audio
    outlives a session.

    Raises: what the link's session raises (a ``ProviderError``), and
    ``ProviderStalledError`` when a send, keepalive or the end takes longer than
    ``send_timeout`` seconds (a provider that stopped reading; every session type, not
    only WebSocket ones).
    """

    def __init__(self, keepalive_interval: float | None = None, *, send_timeout: float | None = None) -> None:
        self._keepalive_interval = keepalive_interval
        self._send_timeout = send_timeout
        self._provider = "provider"
        self._timing: str | None = None  # what the timer of run() is timing: None = the wait for audio

    async def run(self, link: SessionLink) -> None:
        self._provider = link.provider
        held: AudioBatch | None = None  # received as the timer went off, not sent yet
        while True:
            with trio.CancelScope() as timer:
                first, held = held, None
                try:
                    held = await self._stream(link, timer, first)
                except trio.EndOfChannel:
                    break
            if not timer.cancelled_caught:
                continue  # it went off just as an operation completed: nothing lost, a fresh timer
            if self._timing is not None:
                raise self._stalled(self._timing)
            if self._keepalive_interval is not None:
                await self._bounded("a keepalive", link.keepalive)
        await self._bounded("audio", link.flush)
        await self._bounded("the end of the audio", link.finalize)

    async def _stream(self, link: SessionLink, timer: trio.CancelScope, batch: AudioBatch | None) -> AudioBatch | None:
        """Receive and send batches until ``timer`` goes off.  One scope serves every
        batch, its deadline moved from operation to operation (a scope per wait cost
        more than the rest of this loop): the keepalive interval while waiting for
        audio, ``send_timeout`` while the session takes a batch.  ``self._timing`` says
        which was running.  A scope that went off stays cancelled, so when it goes off
        just as an operation completed this returns, with the batch received but not
        sent yet.

        Without a keepalive the last send's deadline is left armed while waiting for
        audio (one deadline move per batch, not two): after ``send_timeout`` of silence
        it goes off, the wait is cancelled (receiving is cancel-safe) and run() takes a
        fresh timer, with no deadline until the next send."""
        keepalive, send_timeout = self._keepalive_interval, self._send_timeout
        next_batch, send = link.next_batch, link.send
        while True:
            if batch is None:
                self._timing = None
                if keepalive is not None:
                    timer.deadline = trio.current_time() + keepalive
                batch = await next_batch()
                if timer.cancel_called:
                    return batch
            self._timing = "audio"
            if send_timeout is not None:
                timer.deadline = trio.current_time() + send_timeout
            elif keepalive is not None:
                timer.deadline = math.inf
            await send(batch)
            batch = None
            if timer.cancel_called:
                return None

    async def _bounded(self, what: str, operation: Callable[[], Awaitable[None]]) -> None:
        if self._send_timeout is None:
            await operation()
            return
        try:
            with trio.fail_after(self._send_timeout):
                await operation()
        except trio.TooSlowError:
            raise self._stalled(what) from None

    def _stalled(self, what: str) -> ProviderStalledError:
        return ProviderStalledError(self._provider, f"provider did not take {what} for {self._send_timeout:g} s")
