"""Per-call runtime settings, with the defaults a phone line wants."""

from __future__ import annotations

import attrs

__all__ = ["CallConfig"]


@attrs.frozen
class CallConfig:
    """``batch_ms``: audio past TwilioReader travels in batches of this length
    (a provider's own ``chunk_ms`` wins).  ``edge_buffer_ms``: audio TwilioReader
    holds when the pipeline behind it is full; beyond it the oldest is dropped and
    counted.  ``drain_timeout``: after Twilio's ``stop`` (or a dropped socket), how long
    the call may take to deliver its last audio and final transcript."""

    batch_ms: int = 100
    edge_buffer_ms: int = 10_000
    drain_timeout: float = 2.0

    def __attrs_post_init__(self) -> None:
        if not 20 <= self.batch_ms <= 1000 or self.batch_ms % 20:
            raise ValueError(f"batch_ms must be a multiple of 20 between 20 and 1000, not {self.batch_ms}")
        if self.edge_buffer_ms < self.batch_ms:
            raise ValueError("edge_buffer_ms must hold at least one batch")
        if self.drain_timeout <= 0:
            raise ValueError("drain_timeout must be positive")
