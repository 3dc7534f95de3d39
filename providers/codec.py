"""Pieces the vendor codecs share: the queue of wire messages a codec hands its session
(``Outbox``), and the events a vendor's close ends a session with (``close_events``)."""

from __future__ import annotations

from collections.abc import Callable, Container

from .errors import ProviderError
from .events import Finalized, ProviderClosed, ProviderEvent, ProviderFailed

__all__ = ["Outbox", "close_events"]


class Outbox:
    """Wire messages queued by a codec's commands, taken by ``data_to_send`` in order."""

    def __init__(self) -> None:
        self._outbox: list[str | bytes] = []

    def data_to_send(self) -> list[str | bytes]:
        out, self._outbox = self._outbox, []
        return out


def close_events(code: int, reason: str, *, ending: bool, finalized: bool, normal: Container[int],
                 error: Callable[[int, str], ProviderError]) -> list[ProviderEvent]:
    """What a close means to a vendor whose end sequence is ended by a normal close:
    ``Finalized`` when the session was ``ending`` and the close is ``normal`` (it
    completes the sequence); the vendor's typed ``error`` for any other close of a
    session not ``finalized`` yet, except 1006 (a dropped socket: no vendor verdict);
    always ``ProviderClosed`` last."""
    events: list[ProviderEvent] = []
    if ending and code in normal:
        events.append(Finalized())
    elif not finalized and code not in normal and code != 1006:
        events.append(ProviderFailed(error(code, reason)))
    events.append(ProviderClosed(code, reason))
    return events
