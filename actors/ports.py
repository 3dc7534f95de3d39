"""Seams between a call's actors and the world, as ``typing.Protocol``s that trio
objects already satisfy (a memory channel is a ``TextSource``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["TextSource", "BatchingTextSource", "Sink"]


class TextSource(Protocol):
    """Twilio's side of the call: ``receive`` returns the next text message and raises
    ``trio.EndOfChannel`` when the peer went away (with or without a close handshake).
    A non-text frame is reported by raising ``TwilioProtocolError``."""

    async def receive(self) -> str: ...


class BatchingTextSource(TextSource, Protocol):
    """A ``TextSource`` that can save wake-ups: ``expect(n)`` says the reader has no
    work until ``n`` more messages came (the rest of its batch), so the source may wait
    for them in one go (``gateway.stream_socket``).  A hint, never a promise: the source
    still returns what came if the stream goes quiet."""

    def expect(self, messages: int) -> None: ...


class Sink(Protocol):
    """Where rendered events go.  ``emit`` gets the event exactly as INTERFACE.md
    shapes it.  The gateway's one sink is ``gateway.sinks.SinkHub``, whose ``emit``
    never blocks (each destination has its own queue and task); a sink that blocked
    here would slow only the emitter, never the audio path."""

    async def emit(self, event: Mapping[str, Any]) -> None: ...
