"""A call's audio accounting.  Counters only: nothing reads them to decide control flow."""

from __future__ import annotations

import attrs

__all__ = ["CallStats", "CallStatistics"]

MULAW_BYTES_PER_MS = 8


@attrs.frozen
class CallStatistics:
    audio_ms: int
    forwarded_ms: int
    dropped_ms: int
    edge_dropped_ms: int
    media_frames: int
    sequence_gaps: int
    duplicates: int
    unknown_events: int


@attrs.define
class CallStats:
    """Mutable counters shared by one call's actors (single trio thread, no locks)."""

    audio_bytes: int = 0  # mu-law bytes received from Twilio
    forwarded_ms: int = 0  # audio a provider session accepted
    edge_dropped_ms: int = 0  # dropped at the Twilio edge because the pipeline was full
    media_frames: int = 0
    sequence_gaps: int = 0
    duplicates: int = 0
    unknown_events: int = 0

    @property
    def audio_ms(self) -> int:
        return self.audio_bytes // MULAW_BYTES_PER_MS

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
        )
