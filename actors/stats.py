"""A call's audio accounting.  Counters only: nothing reads them to decide control flow."""

from __future__ import annotations

import attrs

from .messages import AudioBatch

__all__ = ["CallStats", "CallStatistics", "MULAW_BYTES_PER_MS"]

MULAW_BYTES_PER_MS = 8


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
