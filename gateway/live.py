"""The live hub: every call's recent events, fanned out to Server-Sent Events readers.

```
TranscriptEmitter ─▶ publish(event) ─┬─▶ ring of that call (last RING_EVENTS events)
   (or the sink runtime: write)      └─▶ each subscriber's bounded queue ─▶ SSE response
```

``publish`` is synchronous and never waits: it renders the event once (the SSE frame,
whose ``data:`` is the event's JSON exactly as the JSONL sink writes it), appends it to
the call's ring and offers it to every subscriber that wants it.  A subscriber whose
queue is full loses queued partial transcripts first (oldest first, counted); when only
committed transcripts and call events are left and it is still full, it is disconnected
(counted, logged) and may come back with ``Last-Event-ID``.  Nothing a reader does can
delay a call or another reader.

A call's ring holds its last ``RING_EVENTS`` events, except superseded partial
transcripts: a partial stays only while it is its call's newest transcript (a committed
transcript or a newer partial removes it), since what it said is in what superseded it.
So a resume gets every committed transcript and other event still held, and the current
partial; a long call's ring holds commits, not the partials between them (bench/RESULTS.md,
"Live hub memory").

A call's ring lives while the call does and ``ENDED_RETENTION`` seconds after its
``call_ended`` (at most ``MAX_ENDED_CALLS`` ended calls and ``MAX_ENDED_BYTES`` of their
frames are held, oldest dropped first); then it is dropped.
Events without a ``call_sid`` (a stream that ended before Twilio's ``start``) carry no
transcript and no resumable id: they are not published here.

The hub is also a ``SinkWriter`` (``gateway.sinks.base``): ``write(events)`` publishes a
batch, ``aclose()`` ends every subscription; ``feed`` is the ``Sink`` (``emit``) form a
call's TranscriptEmitter takes.  Times come from trio's clock.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import attrs
import orjson
import trio

from .logs import printable

__all__ = ["LiveHub", "LiveEntry", "Subscription", "HubFeed", "LiveStatistics", "EventId", "parse_event_id",
           "sse_stream", "RING_EVENTS", "SUBSCRIBER_QUEUE", "ENDED_RETENTION", "HEARTBEAT"]

log = logging.getLogger("earpiece.live")

RING_EVENTS = 512  # per call: what Last-Event-ID can resume from
SUBSCRIBER_QUEUE = 256  # events waiting for one reader before it loses partials
ENDED_RETENTION = 60.0  # seconds an ended call's ring stays for late readers and resumes
MAX_ENDED_CALLS = 1000  # ended calls held at once, whatever their age
MAX_ENDED_BYTES = 32 * 1024 * 1024  # SSE frames of ended calls held at once, whatever their age
SEND_BATCH = 256  # events per write to a reader's connection
HEARTBEAT = 15.0  # seconds between keep-alive comments on a quiet stream (proxies close idle ones)
MAX_SID_CHARS = 64


@attrs.frozen
class EventId:
    """``<call_sid>:<seq>``, the SSE ``id`` of one event."""

    call_sid: str
    seq: int

    def __str__(self) -> str:
        return f"{self.call_sid}:{self.seq}"


def parse_event_id(raw: str | None) -> EventId | None:
    """``CA…:7`` → ``EventId``; None for anything else (a bad id resumes nothing)."""
    if not raw:
        return None
    sid, sep, seq = raw.strip().rpartition(":")
    if not sep or not valid_sid(sid) or not seq.isdigit() or len(seq) > 12:
        return None
    return EventId(sid, int(seq))


def valid_sid(sid: str) -> bool:
    return 0 < len(sid) <= MAX_SID_CHARS and sid.isascii() and sid.isalnum()


@attrs.frozen(slots=True)
class LiveEntry:
    """One published event: its place (``order`` across every call) and its SSE frame."""

    order: int
    call_sid: str
    seq: int
    type: str
    partial: bool
    frame: bytes


def render_frame(event: Mapping[str, Any], call_sid: str, seq: int) -> bytes:
    # orjson never writes a raw newline, so the JSON is one ``data:`` line.
    return b"id: %s:%d\nevent: %s\ndata: %s\n\n" % (
        call_sid.encode(), seq, str(event.get("type", "")).encode(), orjson.dumps(event))


@attrs.define
class CallRing:
    """A call's recent events and what the dashboard's list shows about it."""

    call_sid: str
    entries: deque[LiveEntry]
    size: int = 0  # bytes of the frames held
    started_at: str | None = None  # the call_started event's emitted_at
    provider: str | None = None
    provider_state: str = "connecting"
    ended_at: float | None = None  # trio time of call_ended
    appended: int = 0  # entries ever appended
    partial_at: int | None = None  # ``appended`` just after the held newest partial went in

    def supersede_partial(self) -> None:
        """Remove the held partial transcript (a newer transcript is coming).  Only that
        entry is ever removed from inside the ring, so its distance from the right end is
        the number of entries appended after it; left of the ring, it is already gone."""
        if self.partial_at is None:
            return
        index = len(self.entries) - 1 - (self.appended - self.partial_at)
        self.partial_at = None
        if index >= 0:
            self.size -= len(self.entries[index].frame)
            del self.entries[index]  # near the right end: a short rotation

    def note(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "call_started":
            self.started_at = event.get("emitted_at")
        elif kind == "transcript":
            self.provider = event.get("provider") or self.provider
            if self.provider_state in ("connecting", "reconnecting"):
                self.provider_state = "connected"
        elif kind == "provider_error":
            self.provider = event.get("provider") or self.provider
            self.provider_state = "failed" if event.get("fatal") else "reconnecting"
        elif kind == "provider_reconnected":
            self.provider, self.provider_state = event.get("provider") or self.provider, "connected"
        elif kind == "provider_failover":
            self.provider, self.provider_state = event.get("provider") or self.provider, "failed over"


@attrs.frozen
class LiveStatistics:
    events_published: int
    subscribers: int
    subscribers_dropped: int  # disconnected for not keeping up
    partials_dropped: int  # partial transcripts slow readers lost
    live_calls: int
    ended_calls: int  # rings held after call_ended
    held_bytes: int  # SSE frames held in every ring


class Subscription:
    """One reader's queue.  ``call_sid`` None: every call.  Filled by the hub (sync),
    emptied by ``next_batch``; ``closed_because`` says why it ended (None while open)."""

    def __init__(self, call_sid: str | None, capacity: int, label: str) -> None:
        self.call_sid = call_sid
        self.capacity = capacity
        self.label = label
        self.partials_dropped = 0
        self.closed_because: str | None = None
        self._queue: deque[LiveEntry] = deque()
        self._wakeup = trio.Event()

    def offer(self, entry: LiveEntry) -> bool:
        """Queue ``entry``; False when the queue is full of events that must not be lost."""
        if self.closed_because is not None:
            return True
        queue = self._queue
        if len(queue) >= self.capacity:
            victim = next((i for i, queued in enumerate(queue) if queued.partial), None)
            if victim is None:
                if not entry.partial:
                    return False
                self._lost_partial()  # the newest partial goes; a later one will replace it
                return True
            del queue[victim]
            self._lost_partial()
        queue.append(entry)
        self._wakeup.set()
        return True

    def _lost_partial(self) -> None:
        if not self.partials_dropped:
            log.warning("live reader %s is falling behind: dropping partial transcripts", self.label)
        self.partials_dropped += 1

    def close(self, why: str) -> None:
        if self.closed_because is None:
            self.closed_because = why
        self._wakeup.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def next_batch(self) -> list[LiveEntry]:
        """Every queued entry, waiting for one if none is; [] once closed and empty."""
        while not self._queue:
            if self.closed_because is not None:
                return []
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        batch = list(self._queue)
        self._queue.clear()
        return batch


class HubFeed:
    """The ``Sink`` form of the hub (``emit``), for a call's TranscriptEmitter."""

    def __init__(self, hub: LiveHub) -> None:
        self._hub = hub

    async def emit(self, event: Mapping[str, Any]) -> None:
        self._hub.publish(event)

    async def aclose(self) -> None:
        return None


class LiveHub:
    """See the module docstring.  ``name`` is its sink name (``live``)."""

    name = "live"

    def __init__(self, *, ring_events: int = RING_EVENTS, subscriber_queue: int = SUBSCRIBER_QUEUE,
                 ended_retention: float = ENDED_RETENTION, max_ended_calls: int = MAX_ENDED_CALLS,
                 max_ended_bytes: int = MAX_ENDED_BYTES) -> None:
        self.ring_events = ring_events
        self.subscriber_queue = subscriber_queue
        self.ended_retention = ended_retention
        self.max_ended_calls = max_ended_calls
        self.max_ended_bytes = max_ended_bytes
        self._ended_bytes = 0
        self.feed = HubFeed(self)
        self._rings: dict[str, CallRing] = {}
        self._ended: dict[str, tuple[float, int]] = {}  # call_sid → (trio time it ended, bytes), oldest first
        self._everyone: set[Subscription] = set()
        self._of_call: dict[str, set[Subscription]] = {}
        self._order = itertools.count(1)
        self._closed = False
        self.events_published = 0
        self.subscribers_dropped = 0
        self.partials_dropped_by_gone = 0  # partials lost by readers no longer subscribed

    # --- feeding ----------------------------------------------------------------------

    def publish(self, event: Mapping[str, Any]) -> None:
        """Hold ``event`` and offer it to its readers.  Never waits, never raises for a
        reader's sake."""
        call_sid = event.get("call_sid")
        seq = event.get("seq")
        if not isinstance(call_sid, str) or not valid_sid(call_sid) or not isinstance(seq, int):
            return
        now = trio.current_time()
        self._expire(now)
        kind = str(event.get("type", ""))
        entry = LiveEntry(next(self._order), call_sid, seq, kind,
                          kind == "transcript" and event.get("kind") == "partial",
                          render_frame(event, call_sid, seq))
        ring = self._rings.get(call_sid)
        if ring is not None and kind == "call_started" and ring.ended_at is not None:
            self._forget_ended(call_sid)  # a new stream of the same call: its seq starts again
            ring = None
        if ring is None:
            ring = self._rings[call_sid] = CallRing(call_sid, deque(maxlen=self.ring_events))
        entries = ring.entries
        if kind == "transcript":
            ring.supersede_partial()
        if len(entries) == entries.maxlen:
            ring.size -= len(entries[0].frame)
        entries.append(entry)
        ring.appended += 1
        if entry.partial:
            ring.partial_at = ring.appended
        ring.size += len(entry.frame)
        ring.note(event)
        if kind == "call_ended" and call_sid not in self._ended:
            ring.ended_at = now
            self._ended[call_sid] = (now, ring.size)
            self._ended_bytes += ring.size
        self.events_published += 1
        for group in (self._everyone, self._of_call.get(call_sid, ())):
            for subscription in list(group):
                if not subscription.offer(entry):
                    self._drop(subscription)

    async def write(self, events: Sequence[Mapping[str, Any]]) -> None:
        """``SinkWriter.write``: publish a batch in order."""
        for event in events:
            self.publish(event)
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """``SinkWriter.aclose``: end every subscription (streams finish what they hold)."""
        self.close()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        self._closed = True
        for subscription in [*self._everyone, *(s for group in self._of_call.values() for s in group)]:
            subscription.close("the gateway is shutting down")
            self._forget(subscription)

    def _expire(self, now: float) -> None:
        ended = self._ended
        while ended:
            call_sid, (at, _) = next(iter(ended.items()))
            if (now - at < self.ended_retention and len(ended) <= self.max_ended_calls
                    and self._ended_bytes <= self.max_ended_bytes):
                break
            self._forget_ended(call_sid)

    def _forget_ended(self, call_sid: str) -> None:
        _, size = self._ended.pop(call_sid)
        self._ended_bytes -= size
        del self._rings[call_sid]

    # --- reading ----------------------------------------------------------------------

    def subscribe(self, *, call_sid: str | None = None, after: EventId | None = None, replay: bool = False,
                  label: str = "?") -> tuple[list[LiveEntry], Subscription]:
        """A new reader: the held events it should see first (``after`` an id it saw, or
        everything held with ``replay``, else none) and its live queue.  Atomic: nothing
        is published between the two, so the reader sees no gap and no repeat."""
        self._expire(trio.current_time())
        subscription = Subscription(call_sid, self.subscriber_queue, label)
        backlog = self.backlog(call_sid=call_sid, after=after, replay=replay)
        if self._closed:
            subscription.close("the gateway is shutting down")
        elif call_sid is None:
            self._everyone.add(subscription)
        else:
            self._of_call.setdefault(call_sid, set()).add(subscription)
        return backlog, subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.close("reader gone")
        self._forget(subscription)

    def _forget(self, subscription: Subscription) -> None:
        if subscription.call_sid is None:
            self._everyone.discard(subscription)
        else:
            group = self._of_call.get(subscription.call_sid)
            if group is not None:
                group.discard(subscription)
                if not group:
                    del self._of_call[subscription.call_sid]
        self.partials_dropped_by_gone += subscription.partials_dropped
        subscription.partials_dropped = 0

    def _drop(self, subscription: Subscription) -> None:
        self.subscribers_dropped += 1
        log.warning("live reader %s disconnected: it fell %d events behind with no partial transcript left "
                    "to drop (it may resume with Last-Event-ID)", subscription.label, subscription.queued)
        subscription.close("too slow")
        self._forget(subscription)

    def _held(self, call_sid: str | None, after_order: int) -> list[LiveEntry]:
        """Held entries of one call (or every call), published after ``after_order``."""
        if call_sid is not None:
            ring = self._rings.get(call_sid)
            return [e for e in ring.entries if e.order > after_order] if ring else []
        merged = [e for ring in self._rings.values() for e in ring.entries if e.order > after_order]
        merged.sort(key=lambda e: e.order)
        return merged

    def backlog(self, *, call_sid: str | None = None, after: EventId | None = None,
                replay: bool = False) -> list[LiveEntry]:
        """The held events a new reader sees first (see ``subscribe``)."""
        if after is not None:
            return self._after(call_sid, after)
        return self._held(call_sid, 0) if replay else []

    def _after(self, call_sid: str | None, after: EventId) -> list[LiveEntry]:
        """What follows ``after``.  One call: its held events with a greater seq.  Every
        call: the events published after it; when it is no longer held, from its call's
        held event before it (a superseded partial was removed from between the two), or
        from its call's next held event when it is older than the ring, or (call gone)
        everything held: at-least-once, never a gap the hub could have filled."""
        if call_sid is not None:
            if after.call_sid != call_sid:
                return self._held(call_sid, 0)
            ring = self._rings.get(call_sid)
            return [e for e in ring.entries if e.seq > after.seq] if ring else []
        ring = self._rings.get(after.call_sid)
        if ring is not None:
            before: LiveEntry | None = None
            for entry in ring.entries:
                if entry.seq == after.seq:
                    return self._held(None, entry.order)
                if entry.seq > after.seq:
                    return self._held(None, entry.order - 1 if before is None else before.order)
                before = entry
            if ring.entries and ring.entries[-1].seq < after.seq:
                return self._held(None, ring.entries[-1].order)
        return self._held(None, 0)

    def ended(self, call_sid: str) -> bool:
        ring = self._rings.get(call_sid)
        return ring is not None and ring.ended_at is not None

    def ring_of(self, call_sid: str) -> CallRing | None:
        return self._rings.get(call_sid)

    def statistics(self) -> LiveStatistics:
        subscribers = [*self._everyone, *(s for group in self._of_call.values() for s in group)]
        return LiveStatistics(
            events_published=self.events_published,
            subscribers=len(subscribers),
            subscribers_dropped=self.subscribers_dropped,
            partials_dropped=self.partials_dropped_by_gone + sum(s.partials_dropped for s in subscribers),
            live_calls=sum(1 for ring in self._rings.values() if ring.ended_at is None),
            ended_calls=len(self._ended),
            held_bytes=sum(ring.size for ring in self._rings.values()),
        )


async def sse_stream(hub: LiveHub, *, call_sid: str | None = None, after: EventId | None = None,
                     replay: bool = False, label: str = "?", heartbeat: float = HEARTBEAT
                     ) -> AsyncIterator[bytes]:
    """The body of one SSE response: the backlog ``subscribe`` gives, then live events,
    with a comment every ``heartbeat`` seconds of quiet.  A one-call stream ends after
    that call's ``call_ended``; any stream ends when the hub drops or closes its
    subscription.  It subscribes when first iterated, and however it ends (a reader
    that went away closes the generator) the subscription is released."""
    backlog, subscription = hub.subscribe(call_sid=call_sid, after=after, replay=replay, label=label)
    try:
        # ``retry``: how long EventSource waits before reconnecting (ms)
        yield b"retry: 2000\n: earpiece live events\n\n"
        pending = backlog
        while True:
            # a long backlog goes out in pieces, each send a checkpoint for the calls
            for start in range(0, len(pending), SEND_BATCH):
                yield b"".join(entry.frame for entry in pending[start:start + SEND_BATCH])
            if subscription.call_sid is not None and any(e.type == "call_ended" for e in pending):
                return
            with trio.move_on_after(heartbeat) as quiet:
                pending = await subscription.next_batch()
            if quiet.cancelled_caught:
                pending = []
                yield b": keep-alive\n\n"
            elif not pending:  # closed and empty
                why = subscription.closed_because or "closed"
                yield f": stream closed: {printable(why)}\n\n".encode()
                return
    finally:
        hub.unsubscribe(subscription)
