"""run_call(): one call, one nursery, five actors.

```
Twilio WS ─▶ TwilioReader ─mulaw─▶ Resampler ─audio─▶ ReplayBuffer ─▶ ProviderLeg(SttSender ▶ provider ▶ SttReceiver)
                                              (the buffer is the audio channel's receiving end)
                  │                                                                         │
                  └──────────────────────── events ─▶ TranscriptEmitter ◀───────────────────┘ ─▶ sinks
```

The provider leg is supervised (reconnect, replay, failover, stall watchdog: see
``actors.provider_leg``); the ReplayBuffer between it and the Resampler never waits on a
session, so a provider outage never slows the Twilio side.

When every provider of the chain takes Twilio's 8 kHz mu-law (every cloud vendor does)
there is no Resampler: TwilioReader writes its batches into the ReplayBuffer itself.

Shutdown is channel closure: ``stop`` (or a dropped socket) makes TwilioReader return,
which closes the mu-law channel, which ends the Resampler, which closes its output (the
ReplayBuffer's input; without a Resampler the reader closes it), which makes SttSender finalize once the buffer is sent; SttReceiver returns at ``Finalized``.  From the
moment TwilioReader returns, the rest has ``drain_timeout`` seconds (a deadline on the
inner nursery's cancel scope).  A provider session that deadline cuts still ends
gracefully (its end-of-stream message and a close handshake, shielded, at most
``providers.websocket.END_TIMEOUT`` more; audio it never took counts as dropped).
``call_ended`` is always the last event.
"""

from __future__ import annotations

import logging
import random
from functools import partial
from collections.abc import Callable, Sequence

import attrs
import trio

from providers.base import MULAW_8K, SttProvider
from providers.errors import ProviderError
from providers.twilio import TwilioProtocolError

from .channels import open_call_channels
from .config import CallConfig
from .messages import CallEnded, StreamStarted
from .ports import Sink, TextSource
from .provider_leg import ProviderLeg
from .replay import ReplayBuffer
from .resampler import Resampler
from .stats import CallStatistics, CallStats
from .transcript_emitter import TranscriptEmitter
from .twilio_reader import StreamEndedBeforeStartError, TwilioReader

__all__ = ["run_call", "CallOutcome"]

log = logging.getLogger("earpiece.call")


@attrs.frozen
class CallOutcome:
    """How a call ended; the gateway turns it into a close code and a log line."""

    reason: str  # stop | disconnect | shutdown | error | no-call
    detail: str
    close_code: int
    stream: StreamStarted | None
    statistics: CallStatistics


async def run_call(
    source: TextSource,
    provider: SttProvider,
    sinks: Sequence[Sink],
    *,
    config: CallConfig | None = None,
    reader_scope: trio.CancelScope | None = None,
    on_started: Callable[[StreamStarted, CallStats], None] | None = None,
    rng: random.Random | None = None,
) -> CallOutcome:
    """Run one Twilio stream to its end and return how it ended.

    ``provider`` is the primary; ``config.fallbacks`` the providers to fail over to.
    ``reader_scope``: cancelling it stops reading from Twilio (server shutdown); the
    call then drains like a hang-up and ends with reason ``shutdown``.  Malformed
    Twilio input ends this call (reason ``error``) and nothing else; a provider failure
    never ends it.  ``rng`` jitters the reconnect backoff (tests pass a seeded one).
    """
    config = config or CallConfig()
    chain = [provider, *config.fallbacks]
    # One format for the whole chain: convert once, in the Resampler.  Mixed formats:
    # buffer the call's mu-law and let each session convert for its provider.
    formats = {p.audio_format for p in chain}
    audio_format = provider.audio_format if len(formats) == 1 else MULAW_8K
    reader_scope = reader_scope or trio.CancelScope()
    stats = CallStats()
    # Provider format = Twilio's: the reader writes straight into the replay buffer
    # (no Resampler task, no mu-law channel, one task switch fewer per batch).
    passthrough = audio_format == MULAW_8K
    channels = open_call_channels(mulaw=not passthrough)
    replay = ReplayBuffer(config.replay_ms, stats, audio_format)
    reader = TwilioReader(config, stats, batch_ms=provider.chunk_ms)
    emitter = TranscriptEmitter(sinks)
    stream: StreamStarted | None = None
    reason, detail, close_code = "stop", "", 1000

    async with trio.open_nursery() as outer:
        outer.start_soon(emitter.run, channels.events_receive)
        async with channels.events_send as events_send:
            try:
                async with trio.open_nursery() as inner:

                    stream = await inner.start(partial(
                        reader.run, source, replay if passthrough else channels.mulaw_send, events_send.clone(),
                        drain_scope=inner.cancel_scope, read_scope=reader_scope))
                    label = f"[{stream.call_sid}]"
                    if on_started is not None:
                        on_started(stream, stats)
                    replay.label = label
                    leg = ProviderLeg(chain, stats, label, config=config, rng=rng)
                    if not passthrough:
                        inner.start_soon(Resampler(audio_format).run, channels.mulaw_receive, replay)
                    inner.start_soon(leg.run, replay, events_send.clone())
            except* StreamEndedBeforeStartError as group:
                reason, detail, close_code = "no-call", str(_first(group)), 1000
            except* TwilioProtocolError as group:
                reason, detail, close_code = "error", str(_first(group)), 1008
            except* ProviderError as group:  # only if a leg lets one escape
                reason, detail, close_code = "error", str(_first(group)), 1011

            if reason == "stop":
                if reader.ended_by == "limit":  # max_call_duration or media_idle_timeout
                    reason, detail, close_code = "error", reader.limit_exceeded or "a call limit", 1008
                elif reader.ended_by == "shutdown":
                    reason, detail, close_code = "shutdown", "the gateway is shutting down", 1001
                elif reader.ended_by == "disconnect":
                    reason, detail = "disconnect", "Twilio's socket closed without stop"
                if inner.cancel_scope.cancelled_caught:
                    detail = (detail + "; " if detail else "") + (
                        f"final transcript not received within {config.drain_timeout:g} s")

            statistics = stats.statistics()
            if stream is not None:
                extra = {
                    "media_frames": statistics.media_frames,
                    "sequence_gaps": statistics.sequence_gaps,
                    "duplicates": statistics.duplicates,
                    "unknown_events": statistics.unknown_events,
                    "replayed_ms": statistics.replayed_ms,
                    "reconnects": statistics.reconnects,
                    "failovers": statistics.failovers,
                    "provider_errors": statistics.provider_errors,
                }
                await events_send.send(CallEnded(reason, statistics.audio_ms, statistics.forwarded_ms,
                                                 statistics.dropped_ms, detail, extra))
    label = f"[{stream.call_sid}]" if stream else "[no call]"
    if reason == "error":
        log.warning("%s call ended with an error: %s", label, detail)
    else:
        log.info("%s call ended (%s) audio=%dms forwarded=%dms dropped=%dms", label, reason,
                 statistics.audio_ms, statistics.forwarded_ms, statistics.dropped_ms)
    return CallOutcome(reason, detail, close_code, stream, statistics)


def _first(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
