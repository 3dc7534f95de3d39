"""Per-call runtime settings, with the defaults a phone line wants."""

from __future__ import annotations

import attrs

from providers.twilio import TwilioLimits

__all__ = ["CallConfig", "batch_ms_problem"]


def batch_ms_problem(batch_ms: int) -> str | None:
    """Why ``batch_ms`` cannot be a batch length (whole 20 ms Twilio frames, at most
    1 s), or None; the gateway's ``--batch-ms`` check says the same."""
    if 20 <= batch_ms <= 1000 and not batch_ms % 20:
        return None
    return f"must be a multiple of 20 between 20 and 1000, not {batch_ms}"


@attrs.frozen
class CallConfig:
    """How one call runs.

    Audio path:

    * ``batch_ms``: audio past TwilioReader travels in batches of this length (a
      provider's own ``chunk_ms`` wins).
    * ``edge_buffer_ms``: audio TwilioReader holds when the pipeline behind it is full;
      beyond it the oldest is dropped and counted.
    * ``drain_timeout``: after Twilio's ``stop`` (or a dropped socket), how long the call
      may take to deliver its last audio and final transcript (seconds).  A provider
      that declares a longer ``finalize_timeout`` (``providers.base.SlowAnswers``) gets
      that; so do ``stall_timeout`` and ``send_timeout`` below with ``answer_timeout``.

    Provider resilience (see ``actors.supervision``; the providers failed over to are
    the call's ``providers.chain.ProviderChain``):

    * ``replay_ms``: call audio kept for replay, from the last committed transcript on
      (sent but uncommitted, plus not yet sent).  It bounds memory, the audio a provider
      outage can cost nothing, and the lag of a provider slower than real time.
    * ``max_attempts``: consecutive failed sessions of one provider before failing over.
      The count restarts once a session proves healthy.
    * ``backoff_base`` / ``backoff_cap`` / ``backoff_jitter``: the wait before attempt
      *n* + 1 is ``min(cap, base * 2**(n-1))``, shortened by up to ``jitter`` of itself.
      After every provider spent its attempts, each is probed once per ``backoff_cap``.
    * ``stall_timeout``: a session that was sent this many seconds of speech and said
      nothing for this many seconds is stalled (``ProviderStalledError``).
    * ``send_timeout``: a session that takes longer than this to accept one batch (or
      the finalize/keepalive command) is stalled too.
    * ``healthy_ms``: a session that accepted this much audio while answering has proved
      healthy; its provider's attempt count starts over.

    Limits on the Twilio side (TwilioReader):

    * ``twilio_limits``: bounds on one Twilio message (payload bytes, customParameters
      count and size, message length); exceeding one ends the call (reason ``error``).
    * ``max_call_duration``: seconds from the socket's opening after which the call
      ends (reason ``error``, close 1008), drained like a hang-up.
    * ``media_idle_timeout``: seconds without a ``media`` message (before ``start``: without
      ``start``) after which the call ends the same way.
    """

    batch_ms: int = 100
    edge_buffer_ms: int = 10_000
    drain_timeout: float = 2.0
    replay_ms: int = 30_000
    max_attempts: int = 5
    backoff_base: float = 0.1
    backoff_cap: float = 5.0
    backoff_jitter: float = 0.5
    stall_timeout: float = 10.0
    send_timeout: float = 5.0
    healthy_ms: int = 5_000
    twilio_limits: TwilioLimits = TwilioLimits()
    max_call_duration: float = 4 * 3600.0
    media_idle_timeout: float = 30.0

    def __attrs_post_init__(self) -> None:
        problem = batch_ms_problem(self.batch_ms)
        if problem:
            raise ValueError(f"batch_ms {problem}")
        if self.edge_buffer_ms < self.batch_ms:
            raise ValueError("edge_buffer_ms must hold at least one batch")
        if self.drain_timeout <= 0:
            raise ValueError("drain_timeout must be positive")
        if self.replay_ms < self.batch_ms:
            raise ValueError("replay_ms must hold at least one batch")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < self.backoff_base <= self.backoff_cap:
            raise ValueError("backoff needs 0 < backoff_base <= backoff_cap")
        if not 0 <= self.backoff_jitter < 1:
            raise ValueError("backoff_jitter must be in [0, 1)")
        if self.stall_timeout <= 0 or self.send_timeout <= 0:
            raise ValueError("stall_timeout and send_timeout must be positive")
        if self.healthy_ms <= 0:
            raise ValueError("healthy_ms must be positive")
        if self.max_call_duration <= 0 or self.media_idle_timeout <= 0:
            raise ValueError("max_call_duration and media_idle_timeout must be positive")
