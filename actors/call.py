"""run_call(): one call, one nursery, five actors.

```
Twilio WS ─▶ TwilioReader ─mulaw─▶ Resampler ─audio─▶ ProviderLeg(SttSender ▶ provider ▶ SttReceiver)
                  │                                                  │
                  └────────────── events ─▶ TranscriptEmitter ◀──────┘ ─▶ sinks
```

Shutdown is channel closure: ``stop`` (or a dropped socket) makes TwilioReader return,
which closes the mu-law channel, which ends the Resampler, which closes the audio
channel, which makes SttSender finalize; SttReceiver returns at ``Finalized``.  From the
moment TwilioReader returns, the rest has ``drain_timeout`` seconds (a deadline on the
inner nursery's cancel scope).  ``call_ended`` is always the last event.
"""

from __future__ import annotations

import logging
from functools import partial
from collections.abc import Callable, Sequence

import attrs
import trio

from providers.base import SttProvider
from providers.errors import ProviderError
from providers.twilio import TwilioProtocolError

from .channels import open_call_channels
from .config import CallConfig
from .messages import CallEnded, StreamStarted
from .ports import Sink, TextSource
from .resampler import Resampler
from .stats import CallStatistics, CallStats
from .supervision import ProviderLeg
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
) -> CallOutcome:
    """Run one Twilio stream to its end and return how it ended.

    ``reader_scope``: cancelling it stops reading from Twilio (server shutdown); the
    call then drains like a hang-up and ends with reason ``shutdown``.  Malformed
    Twilio input ends this call (reason ``error``) and nothing else.
    """
    config = config or CallConfig()
    reader_scope = reader_scope or trio.CancelScope()
    stats = CallStats()
    channels = open_call_channels()
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
                        reader.run, source, channels.mulaw_send, events_send.clone(),
                        drain_scope=inner.cancel_scope, read_scope=reader_scope))
                    label = f"[{stream.call_sid}]"
                    if on_started is not None:
                        on_started(stream, stats)
                    leg = ProviderLeg(provider, stats, label)
                    inner.start_soon(Resampler(provider.audio_format).run, channels.mulaw_receive,
                                     channels.audio_send)
                    inner.start_soon(leg.run, channels.audio_receive, events_send.clone())
            except* StreamEndedBeforeStartError:
                reason, detail, close_code = "no-call", "the socket closed before Twilio's start", 1000
            except* TwilioProtocolError as group:
                reason, detail, close_code = "error", str(_first(group)), 1008
            except* ProviderError as group:  # only if a leg lets one escape
                reason, detail, close_code = "error", str(_first(group)), 1011

            if reason == "stop":
                if reader.ended_by == "shutdown":
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
