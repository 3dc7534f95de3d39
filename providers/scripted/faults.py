"""Faults a ``ScriptedProvider`` session can be scripted to show.

Each fault is one frozen value; a session plays those its provider's script gives its
attempt number (0 = the first ``open_session`` of the provider, refused ones included).
``after_ms`` counts audio *this session* received; the batch that crosses it is taken,
then the fault happens.

=========================  ============================================================
``RefuseHandshake(503)``   ``open_session`` raises what the WebSocket shell raises for
                           that HTTP status (401 → ``ProviderAuthError``, 503 →
                           ``ProviderConnectionError``, ...)
``Close(1011, after_ms)``  the connection ends: ``receive`` gives ``ProviderClosed``,
                           later sends raise the close code's typed error
``Garbage(after_ms)``      an unparsable message: ``receive`` raises
                           ``ProviderProtocolError`` (what a codec raises)
``ErrorMessage(fatal)``    the vendor's error message: ``ProviderFailed`` with a fatal
                           or a retryable error
``Stall(after_ms)``        never answers again; ``stop_reading=True``: nor takes audio
                           (``send_audio``/``finalize`` block for ever)
``SlowConsumer(0.5)``      takes audio at ``rate`` times real time (sleeps in trio time)
=========================  ============================================================
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

import attrs

__all__ = [
    "Close",
    "RefuseHandshake",
    "Garbage",
    "ErrorMessage",
    "Stall",
    "SlowConsumer",
    "Fault",
    "FaultScript",
    "random_faults",
    "RECOVERABLE_KINDS",
]


@attrs.frozen
class RefuseHandshake:
    status: int = 503


@attrs.frozen
class Close:
    code: int = 1011
    after_ms: int = 0
    reason: str = ""


@attrs.frozen
class Garbage:
    after_ms: int = 0
    message: str = "<html>502 Bad Gateway</html>"


@attrs.frozen
class ErrorMessage:
    fatal: bool = False
    after_ms: int = 0
    vendor_type: str = "scripted_error"
    detail: str = "the scripted vendor reported an error"


@attrs.frozen
class Stall:
    after_ms: int = 0
    stop_reading: bool = False


@attrs.frozen
class SlowConsumer:
    rate: float = 0.5

    def __attrs_post_init__(self) -> None:
        if not 0 < self.rate:
            raise ValueError("rate must be positive")


Fault = RefuseHandshake | Close | Garbage | ErrorMessage | Stall | SlowConsumer

#: attempt number -> the faults of that session
FaultScript = Mapping[int, Sequence[Fault]] | Callable[[int], Sequence[Fault]]

#: Faults a supervised leg recovers from without losing audio.
RECOVERABLE_KINDS = ("close", "drop", "refuse", "garbage", "error", "stall", "deaf")


def random_faults(rate: float, seed: int, kinds: Sequence[str] = RECOVERABLE_KINDS,
                  after_ms: tuple[int, int] = (300, 8000)) -> Callable[[int], Sequence[Fault]]:
    """A script giving each session, with probability ``rate``, one fault of ``kinds``
    (``close`` 1011, ``drop`` 1006, ``refuse`` 503, ``garbage``, ``error`` retryable,
    ``fatal`` error, ``stall`` silent, ``deaf`` not reading, ``slow`` half speed)
    at a random point in ``after_ms``.  Deterministic per (seed, attempt)."""
    unknown = set(kinds) - {*RECOVERABLE_KINDS, "fatal", "slow"}
    if unknown:
        raise ValueError(f"unknown fault kinds: {', '.join(sorted(unknown))}")

    def script(attempt: int) -> Sequence[Fault]:
        rnd = random.Random(seed * 1_000_003 + attempt)
        if rnd.random() >= rate:
            return ()
        kind = rnd.choice(list(kinds))
        at = rnd.randrange(*after_ms)
        return (_make(kind, at),)

    return script


def _make(kind: str, at: int) -> Fault:
    match kind:
        case "close":
            return Close(1011, at, "internal error")
        case "drop":
            return Close(1006, at)
        case "refuse":
            return RefuseHandshake(503)
        case "garbage":
            return Garbage(at)
        case "error":
            return ErrorMessage(False, at, "rate_limited", "slow down")
        case "fatal":
            return ErrorMessage(True, at, "quota_exceeded", "no credits left")
        case "stall":
            return Stall(at)
        case "deaf":
            return Stall(at, stop_reading=True)
        case _:
            return SlowConsumer(0.5)
