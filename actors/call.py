"""run_call(): one call, one nursery, five actors.

```
Twilio WS ─▶ TwilioReader ─mulaw─▶ Resampler ─audio─▶ ReplayBuffer ─▶ ProviderLeg(SttSender ▶ provider ▶ SttReceiver)
                                              (the buffer is the audio channel's receiving end)
                  │                                                                         │
                  └──────────────────────── events ─▶ TranscriptEmitter ◀───────────────────┘ ─▶ sinks
```

The Resampler converts the call's audio once when every provider of the chain takes the
same format; when they differ, the ReplayBuffer keeps mu-law and each session converts
(the rule and the converter: ``actors.convert``).  The provider leg is supervised
(reconnect, replay, failover, stall watchdog: see ``actors.provider_leg``); the
ReplayBuffer between it and the Resampler never waits on a session, so a provider
outage never slows the Twilio side.

Shutdown is channel closure: ``stop`` (or a dropped socket) makes TwilioReader return,
which closes the mu-law channel, which ends the Resampler, which closes its output (the
ReplayBuffer's input), which makes SttSender finalize once the buffer is sent; SttReceiver returns at ``Finalized``.  From the
moment Twilio is done (TwilioReader's ``on_done``), the rest has ``drain_timeout``
seconds, or the longer ``finalize_timeout`` a provider of the chain declares
(``providers.base.SlowAnswers``): a deadline on the inner nursery's cancel scope, which
run_call alone moves.  A provider session that deadline cuts still ends
gracefully (its end-of-stream message and a close handshake, shielded, at most
``providers.websocket.END_TIMEOUT`` more; audio it never took counts as dropped).
``call_ended`` is always the last event.

The code reads in that order: ``run_call`` opens the call, ``_Call.spawn`` starts the
actors and owns the drain deadline (armed when TwilioReader reports ``on_done``),
``_Call.ending`` turns how it stopped into a typed ``CallOutcome``, ``_Call.announce``
sends ``call_ended``.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable, Sequence
from functools import partial

import attrs
import trio

from providers.base import SttProvider
from providers.chain import ProviderChain
from providers.errors import ProviderError
from providers.twilio import TwilioProtocolError

from .channels import CallChannels, open_call_channels
from .config import CallConfig
from .convert import replay_format
from .messages import CallEnded, CallEvent, StreamStarted
from .ports import Sink, TextSource
from .provider_leg import ProviderLeg
from .replay import ReplayBuffer
from .resampler import Resampler
from .stats import CallStatistics, CallStats
from .transcript_emitter import TranscriptEmitter
from .twilio_reader import EndedBy, StreamEndedBeforeStartError, TwilioReader

__all__ = ["run_call", "CallOutcome", "EndReason"]

log = logging.getLogger("earpiece.call")


class EndReason(enum.StrEnum):
    """``CallOutcome.reason``; its value is ``call_ended``'s ``reason`` (``no-call``:
    the socket never started a call, so there is no ``call_ended``)."""

    STOP = "stop"
    DISCONNECT = "disconnect"
    SHUTDOWN = "shutdown"
    ERROR = "error"
    NO_CALL = "no-call"


@attrs.frozen
class CallOutcome:
    """How a call ended; the gateway turns it into a close code and a log line."""

    reason: EndReason
    detail: str
    close_code: int
    stream: StreamStarted | None
    statistics: CallStatistics


@attrs.frozen
class _Ending:
    reason: EndReason
    detail: str = ""
    close_code: int = 1000


#: How a call that raised nothing ended, by why TwilioReader stopped reading
#: (``EndedBy.LIMIT`` takes its detail from the reader).
_AFTER_READING = {
    EndedBy.STOP: _Ending(EndReason.STOP),
    EndedBy.DISCONNECT: _Ending(EndReason.DISCONNECT, "Twilio's socket closed without stop"),
    EndedBy.SHUTDOWN: _Ending(EndReason.SHUTDOWN, "the gateway is shutting down", 1001),
    EndedBy.LIMIT: _Ending(EndReason.ERROR, "a call limit", 1008),
}


async def run_call(
    source: TextSource,
    providers: ProviderChain | SttProvider,
    sinks: Sequence[Sink],
    *,
    config: CallConfig | None = None,
    reader_scope: trio.CancelScope | None = None,
    on_started: Callable[[StreamStarted, CallStats], None] | None = None,
    rng: random.Random | None = None,
) -> CallOutcome:
    """Run one Twilio stream to its end and return how it ended.

    ``providers``: the call's ``ProviderChain`` (the primary, then the providers to fail
    over to, in order); a provider alone is the chain of it.
    ``reader_scope``: cancelling it stops reading from Twilio (server shutdown); the
    call then drains like a hang-up and ends with reason ``shutdown``.  Malformed
    Twilio input ends this call (reason ``error``) and nothing else; a provider failure
    never ends it.  ``rng`` jitters the reconnect backoff (tests pass a seeded one).
    """
    call = _Call(ProviderChain.of(providers), config or CallConfig(), rng)
    channels = open_call_channels()
    async with trio.open_nursery() as outer:
        outer.start_soon(TranscriptEmitter(sinks).run, channels.events_receive)
        async with channels.events_send as events_send:
            ending = await call.spawn(source, channels, reader_scope or trio.CancelScope(), on_started)
            outcome = await call.announce(ending, events_send)
    return outcome


class _Call:
    """One call's parts, from spawning its actors to announcing its end."""

    def __init__(self, chain: ProviderChain, config: CallConfig, rng: random.Random | None) -> None:
        self.config = config
        self.chain = chain
        # Where the call's audio is converted (once in the Resampler, or per session).
        self.audio_format = replay_format(chain)
        # A provider that may take longer to finalize (a local decoder) gets that long.
        self.drain_timeout = max(config.drain_timeout, chain.finalize_timeout() or 0.0)
        self.rng = rng
        self.stats = CallStats()
        self._drain = _DrainDeadline(self.drain_timeout)
        self.reader = TwilioReader(config, self.stats, batch_ms=chain.primary.chunk_ms, on_done=self._drain.arm)
        self.stream: StreamStarted | None = None

    async def spawn(self, source: TextSource, channels: CallChannels, reader_scope: trio.CancelScope,
                    on_started: Callable[[StreamStarted, CallStats], None] | None) -> _Ending:
        """Run the call's actors (all but the emitter) until they are done or the drain
        deadline cuts them; returns how the call ended."""
        events_send = channels.events_send
        ending: _Ending | None = None
        try:
            async with trio.open_nursery() as inner:
                self._drain.scope = inner.cancel_scope
                self.stream = await inner.start(partial(
                    self.reader.run, source, channels.mulaw_send, events_send.clone(), read_scope=reader_scope))
                if on_started is not None:
                    on_started(self.stream, self.stats)
                label = f"[{self.stream.call_sid}]"
                replay = ReplayBuffer(self.config.replay_ms, self.stats, self.audio_format, label)
                leg = ProviderLeg(self.chain, self.stats, label, config=self.config, rng=self.rng)
                inner.start_soon(Resampler(self.audio_format).run, channels.mulaw_receive, replay)
                inner.start_soon(leg.run, replay, events_send.clone())
        except* StreamEndedBeforeStartError as group:
            ending = _Ending(EndReason.NO_CALL, str(_first(group)))
        except* TwilioProtocolError as group:
            ending = _Ending(EndReason.ERROR, str(_first(group)), 1008)
        except* ProviderError as group:  # only if a leg lets one escape
            ending = _Ending(EndReason.ERROR, str(_first(group)), 1011)
        return ending or self._after_reading(drain_cut=inner.cancel_scope.cancelled_caught)

    def _after_reading(self, *, drain_cut: bool) -> _Ending:
        ended_by = self.reader.ended_by or EndedBy.STOP
        ending = _AFTER_READING[ended_by]
        if ended_by is EndedBy.LIMIT and self.reader.limit_exceeded:
            ending = attrs.evolve(ending, detail=self.reader.limit_exceeded)
        if drain_cut:
            cut = f"final transcript not received within {self.drain_timeout:g} s"
            ending = attrs.evolve(ending, detail=f"{ending.detail}; {cut}" if ending.detail else cut)
        return ending

    async def announce(self, ending: _Ending, events_send: trio.MemorySendChannel[CallEvent]) -> CallOutcome:
        """``call_ended`` (when there was a call), the log line, the outcome."""
        statistics = self.stats.statistics()
        if self.stream is not None:
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
            await events_send.send(CallEnded(ending.reason.value, statistics.audio_ms, statistics.forwarded_ms,
                                             statistics.dropped_ms, ending.detail, extra))
        label = f"[{self.stream.call_sid}]" if self.stream else "[no call]"
        if ending.reason is EndReason.ERROR:
            log.warning("%s call ended with an error: %s", label, ending.detail)
        else:
            log.info("%s call ended (%s) audio=%dms forwarded=%dms dropped=%dms", label, ending.reason.value,
                     statistics.audio_ms, statistics.forwarded_ms, statistics.dropped_ms)
        return CallOutcome(ending.reason, ending.detail, ending.close_code, self.stream, statistics)


class _DrainDeadline:
    """Once Twilio is done with the call (TwilioReader's ``on_done``, called in its
    task: no task of the call waits for it), the actors' ``scope`` gets ``timeout``
    seconds to finish.  Its own object, so the reader holds no reference back to the
    call (an ended call leaves no reference cycle for the collector)."""

    __slots__ = ("scope", "timeout")

    def __init__(self, timeout: float) -> None:
        self.scope: trio.CancelScope | None = None
        self.timeout = timeout

    def arm(self) -> None:
        if self.scope is not None:
            self.scope.deadline = min(self.scope.deadline, trio.current_time() + self.timeout)


def _first(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
