"""ReplayBuffer: call audio between the Resampler and the provider sessions.

```
Resampler ─send─▶ ReplayBuffer ─▶ [ sent, uncommitted │ in flight │ unsent ] ─▶ session
                                        ▲ trimmed by commits             ▲ next_batch / mark_sent
```

The buffer is what lets a provider leg go down without slowing Twilio and without
losing words: audio is always taken in (``send`` never waits on a session), kept on the
call's audio clock from the last committed transcript on, and handed to sessions in
order.  A new session first gets the sent-but-uncommitted tail again (``rewind``), then
the rest.  It is bounded by ``capacity_ms``: past it the oldest audio goes, sent audio
first (it reached a provider; only a later replay loses it), then unsent audio (counted:
it never reaches a provider).

Memory: held audio is what a call costs beyond its fixed tasks and channels (30 s of
8 kHz mu-law is 234 KiB), so the queues keep one object per batch, its payload bytes as
they came (no copy), and the call-clock span of every batch in one ``array`` of machine
ints (``_BatchQueue``) instead of an ``AudioBatch`` and its ints per 100 ms; the
``AudioBatch`` a session gets is made when it asks for it (``bench/call_memory.py``).

``SessionClock`` maps one session's audio clock (ms since its first byte) onto the
call's, through the gaps an overflow leaves.
"""

from __future__ import annotations

import logging
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import trio

from providers.base import AudioFormat

from .messages import AudioBatch
from .stats import CallStats

__all__ = ["ReplayBuffer", "SessionClock"]

log = logging.getLogger("earpiece.replay")


class ReplayBuffer:
    """Takes the call's audio as the end of a channel (``send``/``send_nowait``; closing
    it ends the audio); sessions read with ``next_batch`` /
    ``mark_sent``; transcripts ``commit``; the leg ``rewind``s for a new session and
    ``discard``s when no provider is left.  Single trio thread, no locks.

    ``committed_end_ms``: call-clock end of the last committed transcript, shared by
    every session of the call (a session's ``ReplayLink`` drops commits that end at or
    before it, so SttReceiver never emits the same span twice).
    """

    def __init__(self, capacity_ms: int, stats: CallStats, audio_format: AudioFormat, label: str = "") -> None:
        self.capacity_ms = capacity_ms
        self.audio_format = audio_format
        self.committed_end_ms = 0
        self.peak_ms = 0
        self._stats = stats
        self._label = label
        self._sent = _BatchQueue()
        self._in_flight: AudioBatch | None = None
        self._unsent = _BatchQueue()
        self._ms = 0  # everything held: sent + in flight + unsent
        self._unsent_ms = 0
        self._input_ended = False
        self.input_closed = trio.Event()  # the caller hung up: no more audio will come
        self.input_closed_at = 0.0  # trio time it was set
        self._on_input_closed: Callable[[], None] | None = None
        self._discarding = False
        self._overflowing = False
        self._changed = trio.Event()

    # --- the audio side -------------------------------------------------------------

    # The audio side is the send end of a channel that never blocks (never waits on a
    # session): the Resampler writes into the buffer directly, with no task and no
    # channel of its own in between, and closing it is the end of the call's audio.

    def send_nowait(self, batch: AudioBatch) -> None:
        self.append(batch)

    async def send(self, batch: AudioBatch) -> None:
        self.append(batch)
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.end_input()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> ReplayBuffer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.end_input()

    def end_input(self) -> None:
        """No more audio will come (the caller hung up)."""
        if self._input_ended:
            return
        self._input_ended = True
        self.input_closed_at = trio.current_time()
        self.input_closed.set()
        if self._on_input_closed is not None:
            self._on_input_closed()
        self._wake()

    def call_when_input_closed(self, callback: Callable[[], None] | None) -> None:
        """``callback()`` when the caller hangs up (``end_input``), at once if that
        happened already; one callback at a time, None removes it.  The session's
        watchdog learns of the hang-up this way, without a task waiting on
        ``input_closed``."""
        self._on_input_closed = callback
        if callback is not None and self._input_ended:
            callback()

    def append(self, batch: AudioBatch) -> None:
        if self._discarding:
            return
        self._unsent.append(batch)
        self._ms += batch.duration_ms
        self._unsent_ms += batch.duration_ms
        self._evict_overflow()
        if self._ms > self.peak_ms:
            self.peak_ms = self._stats.replay_peak_ms = self._ms
        if self._overflowing and self._ms * 2 <= self.capacity_ms:
            self._overflowing = False  # the episode is over; log the next one again
        self._wake()

    def _evict_overflow(self) -> None:
        while self._ms > self.capacity_ms:
            if self._sent:
                self._ms -= self._sent.popleft().duration_ms
                continue
            if len(self._unsent) <= 1:
                return  # never evict the audio just taken in
            batch = self._unsent.popleft()
            self._ms -= batch.duration_ms
            self._unsent_ms -= batch.duration_ms
            # a replayed batch reached a provider before: only the rest is lost
            lost = batch.end_ms - max(batch.start_ms, self._stats.forwarded_until_ms)
            self._stats.replay_overflow_ms += max(0, lost)
            if not self._overflowing:
                self._overflowing = True
                log.warning("%s replay buffer full (%d ms): dropping the oldest unsent audio", self._label,
                            self.capacity_ms)

    # --- the session side -----------------------------------------------------------

    @property
    def held_ms(self) -> int:
        return self._ms

    @property
    def unsent_ms(self) -> int:
        return self._unsent_ms + (self._in_flight.duration_ms if self._in_flight else 0)

    @property
    def input_ended(self) -> bool:
        return self._input_ended

    def replay_start_ms(self) -> int:
        """Where on the call clock the next session's audio starts."""
        head = self._sent[0] if self._sent else self._in_flight or (self._unsent[0] if self._unsent else None)
        return head.start_ms if head is not None else max(self.committed_end_ms, self._stats.forwarded_until_ms)

    def rewind(self) -> int:
        """Start over for a new session: what was sent (and not committed) goes out
        again first.  Returns the ms that will be replayed."""
        replay = list(self._sent)
        if self._in_flight is not None:
            replay.append(self._in_flight)
            self._in_flight = None
        self._sent.clear()
        self._unsent.extendleft(reversed(replay))
        replayed = sum(b.duration_ms for b in replay)
        self._unsent_ms += replayed
        return replayed

    async def next_batch(self) -> AudioBatch:
        """The next batch to send (it is "in flight" until ``mark_sent``).
        Raises ``trio.EndOfChannel`` when the call's audio ended and all was sent."""
        if self._in_flight is not None:
            raise RuntimeError("next_batch() before mark_sent() of the previous batch")
        while not self._unsent:
            if self._input_ended or self._discarding:
                raise trio.EndOfChannel
            await self._wait()
        batch = self._unsent.popleft()
        self._unsent_ms -= batch.duration_ms
        self._in_flight = batch
        return batch

    def mark_sent(self, batch: AudioBatch) -> None:
        """The session accepted ``batch``: count it forwarded, keep it until committed."""
        if self._in_flight is not batch:
            raise RuntimeError("mark_sent() of a batch that is not in flight")
        self._in_flight = None
        if batch.end_ms <= self._stats.forwarded_until_ms:
            self._stats.replayed_ms += batch.duration_ms
        self._stats.forward(batch)
        if self._discarding:
            self._ms -= batch.duration_ms
            return
        self._sent.append(batch)
        self.commit(self.committed_end_ms)  # a late replay batch may be committed already

    def commit(self, end_ms: int) -> None:
        """A transcript committed the call's audio up to ``end_ms``: sent audio up to
        there will never be replayed."""
        self.committed_end_ms = max(self.committed_end_ms, end_ms)
        end_ms = self.committed_end_ms
        sent = self._sent
        while sent and sent[0].end_ms <= end_ms:
            self._ms -= sent.popleft().duration_ms
        if sent and sent[0].start_ms < end_ms:
            head = sent.popleft()
            rest = self._split(head, end_ms)
            self._ms -= head.duration_ms - rest.duration_ms
            sent.appendleft(rest)

    def _split(self, batch: AudioBatch, at_ms: int) -> AudioBatch:
        """The part of ``batch`` from ``at_ms`` on (whole samples)."""
        fmt = self.audio_format
        width = 1 if fmt.encoding == "mulaw" else 2
        samples = (at_ms - batch.start_ms) * fmt.sample_rate // 1000
        return AudioBatch(at_ms, batch.end_ms - at_ms, batch.payload[samples * width:])

    def discard(self) -> None:
        """No provider is left: drop everything held and all audio still to come."""
        self._discarding = True
        self._sent.clear()
        self._unsent.clear()
        self._ms = self._in_flight.duration_ms if self._in_flight else 0
        self._unsent_ms = 0
        self._wake()

    # --- waking the sender ----------------------------------------------------------

    def _wake(self) -> None:
        self._changed.set()

    async def _wait(self) -> None:
        if self._changed.is_set():
            self._changed = trio.Event()
        await self._changed.wait()


class _BatchQueue:
    """A FIFO of ``AudioBatch``es, the part of ``deque`` the buffer uses, stored compactly:
    the payloads (each kept as it came: no copy) in a deque, ``start_ms``/``duration_ms``
    of every batch in one flat ``array('q')``.  An ``AudioBatch`` is rebuilt on the way out
    (``popleft``, ``[i]``, iteration).  Per batch held: the payload object and 24 bytes,
    instead of the payload, an ``AudioBatch`` (64 bytes) and an ``int`` (32)."""

    __slots__ = ("_payloads", "_spans", "_first")

    _COMPACT = 64  # spans popped from the front before they are deleted (amortised O(1))

    def __init__(self, batches: Iterable[AudioBatch] = ()) -> None:
        self._payloads: deque[bytes] = deque()
        self._spans = array("q")  # start_ms, duration_ms of each batch; the first _first popped
        self._first = 0
        for batch in batches:
            self.append(batch)

    def __len__(self) -> int:
        return len(self._payloads)

    def __bool__(self) -> bool:
        return bool(self._payloads)

    def __getitem__(self, index: int) -> AudioBatch:
        if index < 0:
            index += len(self._payloads)
        payload = self._payloads[index]  # raises IndexError like a deque
        at = 2 * (self._first + index)
        return AudioBatch(self._spans[at], self._spans[at + 1], payload)

    def __iter__(self) -> Iterator[AudioBatch]:
        spans, at = self._spans, 2 * self._first
        for i, payload in enumerate(self._payloads):
            yield AudioBatch(spans[at + 2 * i], spans[at + 2 * i + 1], payload)

    def append(self, batch: AudioBatch) -> None:
        self._payloads.append(batch.payload)
        self._spans.append(batch.start_ms)
        self._spans.append(batch.duration_ms)

    def appendleft(self, batch: AudioBatch) -> None:
        self._payloads.appendleft(batch.payload)
        if self._first:
            self._first -= 1
            self._spans[2 * self._first] = batch.start_ms
            self._spans[2 * self._first + 1] = batch.duration_ms
        else:
            self._spans[0:0] = array("q", (batch.start_ms, batch.duration_ms))

    def extendleft(self, batches: Iterable[AudioBatch]) -> None:
        """Like ``deque.extendleft``: each batch goes in front, so the order reverses."""
        front = list(batches)
        front.reverse()
        if not front:
            return
        rest = list(self)
        self.clear()
        for batch in front + rest:
            self.append(batch)

    def popleft(self) -> AudioBatch:
        payload = self._payloads.popleft()  # raises IndexError like a deque
        spans, at = self._spans, 2 * self._first
        batch = AudioBatch(spans[at], spans[at + 1], payload)
        if self._payloads:
            self._first += 1
            if self._first >= self._COMPACT:
                del spans[: 2 * self._first]
                self._first = 0
        else:
            self.clear()
        return batch

    def clear(self) -> None:
        self._payloads.clear()
        del self._spans[:]
        self._first = 0


class SessionClock:
    """Session ms → call ms for one provider session.

    The sender records each batch it sent (``sent``); a batch that does not continue the
    previous one (the replay buffer skipped audio) starts a new segment.  ``to_call``
    maps a vendor time; ``end=True`` maps a time at a segment boundary to the end of the
    earlier segment (an end belongs to the audio before it).
    """

    def __init__(self, offset_ms: int = 0) -> None:
        self.offset_ms = offset_ms
        self.sent_ms = 0  # session audio sent so far, in ms
        self._session_starts: list[int] = []
        self._call_starts: list[int] = []
        self._next_call_ms: int | None = None

    def sent(self, batch: AudioBatch) -> None:
        if batch.start_ms != self._next_call_ms:
            self._session_starts.append(self.sent_ms)
            self._call_starts.append(batch.start_ms)
        self.sent_ms += batch.duration_ms
        self._next_call_ms = batch.end_ms

    def to_call(self, session_ms: int, *, end: bool = False) -> int:
        starts = self._session_starts
        if not starts:
            return self.offset_ms + session_ms
        i = (bisect_left(starts, session_ms) if end else bisect_right(starts, session_ms)) - 1
        i = max(i, 0)
        return self._call_starts[i] + session_ms - starts[i]
