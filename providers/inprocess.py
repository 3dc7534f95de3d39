"""What the recognizers that run on this machine (``local``, ``whisper``) share: how
their sessions report their end, in the same shape a WebSocket provider's do."""

from __future__ import annotations

from typing import Final

import trio

from .events import ProviderClosed, ProviderEvent

__all__ = ["FAILED_CLOSE_CODE", "next_event"]

#: the close code a session reports after its recognizer failed (as a server error would)
FAILED_CLOSE_CODE: Final = 1011


async def next_event(events: trio.MemoryReceiveChannel[ProviderEvent], failed: bool, what: str) -> ProviderEvent:
    """The next event, in order; once the session has ended, ``ProviderClosed`` every
    time (1000, or ``FAILED_CLOSE_CODE`` with "``what`` failed" after a failure)."""
    try:
        return await events.receive()
    except (trio.EndOfChannel, trio.ClosedResourceError):
        return ProviderClosed(FAILED_CLOSE_CODE, f"{what} failed") if failed else ProviderClosed(1000)
