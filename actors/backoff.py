"""Jittered exponential backoff: a pure schedule, no clock (the caller sleeps)."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """``delay(n)``: seconds to wait after the *n*-th consecutive failure (n >= 1).

    ``min(cap, base * 2**(n-1))`` shortened by a random fraction of at most ``jitter``
    of itself ("equal jitter" with ``jitter=0.5``), so that calls which lost their
    provider at the same moment do not reconnect in lockstep.  ``jitter=0`` makes the
    schedule exact: 0.1, 0.2, 0.4, 0.8, ... capped.
    """

    def __init__(self, base: float, cap: float, jitter: float = 0.5, rng: random.Random | None = None) -> None:
        if not 0 < base <= cap:
            raise ValueError("need 0 < base <= cap")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self.base = base
        self.cap = cap
        self.jitter = jitter
        # the module's shared generator unless a test passes its own: a call need not carry one
        self._random = rng.random if rng is not None else random.random

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay after failure number ``attempt``."""
        if attempt < 1:
            raise ValueError("attempt counts from 1")
        # 2**(attempt-1) overflows floats for absurd attempts; the cap is reached long before.
        return self.cap if attempt > 64 else min(self.cap, self.base * 2 ** (attempt - 1))

    def delay(self, attempt: int) -> float:
        ceiling = self.ceiling(attempt)
        if not self.jitter:
            return ceiling
        return ceiling * (1 - self.jitter * self._random())
