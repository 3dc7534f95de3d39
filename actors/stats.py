"""A call's audio accounting.  Counters only: nothing reads them to decide control flow."""

from __future__ import annotations

from array import array

import attrs

from .messages import AudioBatch

__all__ = ["ArrivalClock", "CallStats", "CallStatistics", "MULAW_BYTES_PER_MS"]

MULAW_BYTES_PER_MS = 8
ARRIVALS_KEPT = 64  # batches (6.4 s at 100 ms): transcripts come back well within it


class ArrivalClock:
    """When the call's audio reached us: the trio time each received batch was read,
    against the call-clock ms it ended at, for the last ``ARRIVALS_KEPT`` batches (a
    fixed ring of two arrays, one entry per batch, none per frame: small and fixed per call).

    ``time_of(ms)`` answers "when did the call's audio clock pass ``ms``": the read time
    of the first kept batch ending at or after it.  Older than the ring: extrapolated
    back from the oldest kept batch at real-time pace (Twilio sends in real time)."""

    __slots__ = ("_end_ms", "_at", "_next", "_count")

    def __init__(self) -> None:
        self._end_ms = array("q", bytes(8 * ARRIVALS_KEPT))
        self._at = array("d", bytes(8 * ARRIVALS_KEPT))
        self._next = 0
        self._count = 0

    def arrived(self, end_ms: int, at: float) -> None:
        self._end_ms[self._next] = end_ms
        self._at[self._next] = at
        self._next = (self._next + 1) % ARRIVALS_KEPT
        self._count = min(self._count + 1, ARRIVALS_KEPT)

    def time_of(self, ms: int) -> float | None:
        """None before any audio arrived."""
        if not self._count:
            return None
        newest = (self._next - 1) % ARRIVALS_KEPT
        if ms >= self._end_ms[newest]:
            return self._at[newest]
        found = newest
        for back in range(1, self._count):  # newest to oldest: recent audio is what is asked for
            index = (newest - back) % ARRIVALS_KEPT
            if self._end_ms[index] < ms:
                return self._at[found]
            found = index
        return self._at[found] - (self._end_ms[found] - ms) / 1000


@attrs.frozen
class CallStatistics:
    """A snapshot.  ``dropped_ms = audio_ms - forwarded_ms``: call audio that never
    reached any provider (edge overflow, replay-buffer overflow, every provider down,
    or still unsent when the drain deadline hit)."""

    audio_ms: int
    forwarded_ms: int
    dropped_ms: int
    edge_dropped_ms: int
    media_frames: int
    sequence_gaps: int
    duplicates: int
    unknown_events: int
    replayed_ms: int = 0
    replay_overflow_ms: int = 0
    replay_peak_ms: int = 0
    reconnects: int = 0
    failovers: int = 0
    provider_errors: int = 0


@attrs.define
class CallStats:
    """Mutable counters shared by one call's actors (single trio thread, no locks)."""

    audio_bytes: int = 0  # mu-law bytes received from Twilio
    forwarded_ms: int = 0  # call audio some provider session accepted, each ms once
    edge_dropped_ms: int = 0  # dropped at the Twilio edge because the pipeline was full
    media_frames: int = 0
    sequence_gaps: int = 0
    duplicates: int = 0
    unknown_events: int = 0
    replayed_ms: int = 0  # audio sent again to a new session (already forwarded once)
    replay_overflow_ms: int = 0  # unsent audio evicted from the full replay buffer
    replay_peak_ms: int = 0  # the most audio the replay buffer held at once
    reconnects: int = 0
    failovers: int = 0
    provider_errors: int = 0
    forwarded_until_ms: int = 0  # call-clock high-water mark of forwarded audio
    arrivals: ArrivalClock = attrs.field(factory=ArrivalClock)  # when audio was read (delay metrics)

    @property
    def audio_ms(self) -> int:
        return self.audio_bytes // MULAW_BYTES_PER_MS

    def forward(self, batch: AudioBatch) -> None:
        """A session accepted ``batch``: count the part of it no session accepted before.

        Sessions get call audio in call-clock order (a replay rewinds, an overflow skips
        ahead), so everything before the high-water mark has been counted already."""
        start = max(batch.start_ms, self.forwarded_until_ms)
        if batch.end_ms > start:
            self.forwarded_ms += batch.end_ms - start
            self.forwarded_until_ms = batch.end_ms

    def statistics(self) -> CallStatistics:
        return CallStatistics(
            audio_ms=self.audio_ms,
            forwarded_ms=self.forwarded_ms,
            dropped_ms=max(0, self.audio_ms - self.forwarded_ms),
            edge_dropped_ms=self.edge_dropped_ms,
            media_frames=self.media_frames,
            sequence_gaps=self.sequence_gaps,
            duplicates=self.duplicates,
            unknown_events=self.unknown_events,
            replayed_ms=self.replayed_ms,
            replay_overflow_ms=self.replay_overflow_ms,
            replay_peak_ms=self.replay_peak_ms,
            reconnects=self.reconnects,
            failovers=self.failovers,
            provider_errors=self.provider_errors,
        )
