"""TwilioReader: the Twilio-facing edge of a call."""

from __future__ import annotations

import enum
from collections.abc import Callable

import trio

from providers.twilio import (
    Dtmf,
    Media,
    Start,
    Stop,
    TwilioLimits,
    TwilioStreamDecoder,
)

from .config import CallConfig
from .messages import AudioBatch, CallEvent, CallStarted, DtmfPressed, StreamStarted
from .ports import BatchingTextSource, TextSource
from .resampler import AudioOutput
from .stats import MULAW_BYTES_PER_MS, CallStats

MULAW_BYTES_PER_FRAME = 20 * MULAW_BYTES_PER_MS  # Twilio sends 20 ms per media message
#: seconds the media limits' deadline may lag behind the exact one before it is moved
#: (at most a tenth of ``media_idle_timeout``)
LIMITS_SLACK = 1.0

__all__ = ["TwilioReader", "EndedBy", "StreamEndedBeforeStartError"]


class EndedBy(enum.Enum):
    """Why TwilioReader stopped reading."""

    STOP = "stop"  # Twilio's stop
    DISCONNECT = "disconnect"  # the socket closed without stop
    SHUTDOWN = "shutdown"  # the gateway cancelled its read scope
    LIMIT = "limit"  # max_call_duration or media_idle_timeout (``limit_exceeded`` says which)


class StreamEndedBeforeStartError(Exception):
    """The socket closed before Twilio's ``start``: there was never a call."""


class TwilioReader:
    """Turns Twilio's Media Streams messages into call audio and call events.

    Consumes: text messages from a ``TextSource``
    (``connected → start → (media | dtmf | mark)* → stop``); tells a
    ``BatchingTextSource`` how many media messages complete the current batch.
    Produces: ``CallStarted`` and ``DtmfPressed`` on ``events_send``; mu-law
    ``AudioBatch``es of ``batch_ms`` on ``mulaw_send`` (the channel to the Resampler).
    Reports: ``StreamStarted`` through ``task_status`` when ``start`` arrives.
    Reports: ``on_done()`` once Twilio is done with the call (the batches it still
    holds are handed on after that); ``ended_by`` says why.
    Closes: ``mulaw_send`` and ``events_send`` when it returns, after ``stop``, when
    the peer went away, on shutdown or at a call limit.
    Raises: ``TwilioProtocolError`` on malformed input; ``StreamEndedBeforeStartError``.

    Twilio cannot be slowed down, so reading never waits on the pipeline: batches the
    pipeline cannot take yet wait in a bounded edge buffer (``edge_buffer_ms``); past
    it the oldest batch is dropped and counted in ``stats.edge_dropped_ms``.
    """

    def __init__(self, config: CallConfig, stats: CallStats, *, batch_ms: int | None = None,
                 limits: TwilioLimits | None = None, on_done: Callable[[], None] | None = None) -> None:
        self._config = config
        self._stats = stats
        self._batch_bytes = (batch_ms or config.batch_ms) * MULAW_BYTES_PER_MS
        self._batch_frames = max(1, self._batch_bytes // MULAW_BYTES_PER_FRAME)  # what a BatchingTextSource waits for
        self.decoder = TwilioStreamDecoder(limits or config.twilio_limits)
        self.ended_by: EndedBy | None = None  # set once reading ended
        self.limit_exceeded: str | None = None  # with EndedBy.LIMIT: which limit, for humans
        self._on_done = on_done  # a callback, not an event: nobody has to wait in a task for it
        self._expect: Callable[[int], None] | None = None  # a BatchingTextSource's hint
        self._last_media_at = 0.0
        # Batches the pipeline could not take yet; empty but for a stalled pipeline, so a
        # list (56 bytes) rather than a deque (its first block alone is 520).
        self._pending: list[AudioBatch] = []
        self._parts: list[bytes] = []  # media payloads of the batch being gathered
        self._pending_ms = 0

    async def run(
        self,
        source: TextSource,
        mulaw_send: AudioOutput,
        events_send: trio.MemorySendChannel[CallEvent],
        *,
        read_scope: trio.CancelScope | None = None,
        task_status: trio.TaskStatus[StreamStarted] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """``read_scope``: the gateway's, which cancels it to stop reading (server
        shutdown; ``ended_by`` becomes ``SHUTDOWN``); entered here only around reading
        media, so the call then drains as after a hang-up."""
        read_scope = read_scope or trio.CancelScope()
        self._expect = source.expect if isinstance(source, BatchingTextSource) else None
        call_deadline = trio.current_time() + self._config.max_call_duration
        async with mulaw_send, events_send:
            stream = await self._read_until_start(source, call_deadline)
            await events_send.send(CallStarted(stream))
            task_status.started(stream)
            try:
                with read_scope:
                    await self._read_media_within_limits(source, mulaw_send, events_send, call_deadline)
                if read_scope.cancelled_caught:
                    self.ended_by = EndedBy.SHUTDOWN
                    self._flush_parts(mulaw_send)
            finally:
                self._sync_stats()
            if self._on_done is not None:
                self._on_done()  # from now on the call drains (run_call's deadline)
            while self._pending:
                batch = self._pending[0]
                await mulaw_send.send(batch)
                self._pending.pop(0)

    async def _read_until_start(self, source: TextSource, call_deadline: float) -> StreamStarted:
        idle = self._config.media_idle_timeout
        with trio.move_on_at(min(call_deadline, trio.current_time() + idle)):
            return await self._receive_start(source)
        raise StreamEndedBeforeStartError(f"no start from Twilio within {idle:g} s (media_idle_timeout)")

    async def _receive_start(self, source: TextSource) -> StreamStarted:
        while True:
            try:
                text = await source.receive()
            except trio.EndOfChannel:
                raise StreamEndedBeforeStartError("the socket closed before Twilio's start") from None
            event = self.decoder.receive(text)
            if isinstance(event, Start):
                return StreamStarted(
                    call_sid=event.call_sid,
                    stream_sid=event.stream_sid,
                    account_sid=event.account_sid,
                    custom_parameters=dict(event.custom_parameters),
                    tracks=tuple(event.tracks),
                    media_format=f"{event.media_format.encoding};rate={event.media_format.sample_rate}",
                )

    async def _read_media_within_limits(
        self,
        source: TextSource,
        mulaw_send: AudioOutput,
        events_send: trio.MemorySendChannel[CallEvent],
        call_deadline: float,
    ) -> None:
        """``_read_media`` until it returns, or until the call reaches ``call_deadline``
        or goes ``media_idle_timeout`` without media (then ``ended_by`` is ``LIMIT``).

        One cancel scope does the timing: reading records the clock per media and moves
        the scope's deadline at most once per ``LIMITS_SLACK`` (a tenth of the idle
        timeout at most); when it fires early because media came
        after the last move, reading resumes under the exact deadline (a receive is
        cancel-safe, and ``_read_media`` keeps its state in ``self``)."""
        idle = self._config.media_idle_timeout
        self._last_media_at = trio.current_time()
        while True:
            with trio.CancelScope(deadline=min(call_deadline, self._last_media_at + idle)) as limits:
                await self._read_media(source, mulaw_send, events_send, limits, call_deadline)
                return
            now = trio.current_time()
            if now >= call_deadline:
                exceeded = f"the call reached max_call_duration ({self._config.max_call_duration:g} s)"
            elif now >= self._last_media_at + idle:
                exceeded = f"no media from Twilio for {idle:g} s (media_idle_timeout)"
            else:
                continue
            self.ended_by, self.limit_exceeded = EndedBy.LIMIT, exceeded
            self._flush_parts(mulaw_send)
            return

    async def _read_media(
        self,
        source: TextSource,
        mulaw_send: AudioOutput,
        events_send: trio.MemorySendChannel[CallEvent],
        limits: trio.CancelScope,
        call_deadline: float,
    ) -> None:
        stats = self._stats
        batch_bytes = self._batch_bytes
        idle = self._config.media_idle_timeout
        receive = source.receive
        decode = self.decoder.receive
        current_time = trio.current_time
        parts = self._parts
        part_bytes = sum(map(len, parts))  # resumed after an early limits deadline
        expect = self._expect  # a BatchingTextSource may wait for the rest of a batch in one wake-up
        if expect is not None:
            expect(self._batch_frames)
        while True:
            try:
                text = await receive()
            except trio.EndOfChannel:
                self.ended_by = EndedBy.DISCONNECT
                break
            event = decode(text)
            if type(event) is Media:
                if event.track != "inbound":
                    continue
                payload = event.payload
                parts.append(payload)
                part_bytes += len(payload)
                stats.audio_bytes += len(payload)
                stats.media_frames += 1
                self._last_media_at = current_time()
                if part_bytes >= batch_bytes:
                    self._batch_read(mulaw_send, limits, call_deadline)
                    part_bytes = 0
            elif type(event) is Stop:
                self.ended_by = EndedBy.STOP
                break
            elif type(event) is Dtmf:
                # exact deadline first: an early one must never cancel this send
                limits.deadline = min(call_deadline, self._last_media_at + idle)
                await events_send.send(DtmfPressed(event.digit, stats.audio_ms))
        self._flush_parts(mulaw_send)

    def _batch_read(self, mulaw_send: AudioOutput, limits: trio.CancelScope, call_deadline: float) -> None:
        """A whole batch is read: send it on, move the limits' deadline, ask for the next."""
        self._flush_parts(mulaw_send)
        # Moved at most once per slack: a moved deadline costs a few µs and a new entry in
        # trio's deadline heap, and one up to slack early only ever fires after
        # ``idle - slack`` without media (then reading resumes under the exact one, see
        # _read_media_within_limits).
        idle = self._config.media_idle_timeout
        exact = min(call_deadline, self._last_media_at + idle)
        if exact - limits.deadline >= min(LIMITS_SLACK, idle / 10):
            limits.deadline = exact
        if self._expect is not None:
            self._expect(self._batch_frames)

    def _flush_parts(self, mulaw_send: AudioOutput) -> None:
        if self._parts:
            self._offer(mulaw_send, b"".join(self._parts))
            self._parts.clear()

    def _offer(self, mulaw_send: AudioOutput, payload: bytes) -> None:
        """Queue one batch without ever waiting (the edge overflow policy)."""
        duration_ms = len(payload) // MULAW_BYTES_PER_MS
        end_ms = self._stats.audio_ms
        start_ms = end_ms - duration_ms
        self._stats.arrivals.arrived(end_ms, self._last_media_at)
        pending = self._pending
        pending.append(AudioBatch(start_ms, duration_ms, payload))
        self._pending_ms += duration_ms
        while pending:
            try:
                mulaw_send.send_nowait(pending[0])
            except trio.WouldBlock:
                break
            self._pending_ms -= pending.pop(0).duration_ms
        while self._pending_ms > self._config.edge_buffer_ms:
            dropped = pending.pop(0)
            self._pending_ms -= dropped.duration_ms
            self._stats.edge_dropped_ms += dropped.duration_ms

    def _sync_stats(self) -> None:
        decoder_stats = self.decoder.statistics()
        self._stats.sequence_gaps = decoder_stats.sequence_gaps
        self._stats.duplicates = decoder_stats.duplicates
        self._stats.unknown_events = decoder_stats.unknown_events
