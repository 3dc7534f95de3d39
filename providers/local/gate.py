"""SpeechGate: per-frame voice activity in, utterance boundaries out.  Pure.

pocketsphinx's own ``Endpointer`` uses one window for both edges, so a window long
enough to bridge a pause inside a sentence (~600 ms) also needs ~540 ms of speech to
open an utterance, and a short "yes" is never heard.  The gate keeps the two edges
apart: a short start window, a long end window.

    silent ──(start_frames of the last start_window are speech)──▶ speaking
    speaking ──(at most 10% of the last end_window are speech)──▶ silent

Times are frame indices; the caller turns them into milliseconds.
"""

from __future__ import annotations

from collections import deque

import attrs

__all__ = ["SpeechGate", "SpeechStarted", "SpeechEnded"]

#: At most this fraction of the end window may be speech for the utterance to end
#: (a click or a breath inside a pause does not keep it open).
END_SPEECH_RATIO = 0.1


@attrs.frozen
class SpeechStarted:
    """Speech opened at ``frame``: the first speech frame of the start window."""

    frame: int


@attrs.frozen
class SpeechEnded:
    """Speech closed; ``frame`` is one past the last speech frame."""

    frame: int


class SpeechGate:
    """Feed one VAD decision per frame to ``update``; it returns a transition or None."""

    def __init__(self, *, start_frames: int, start_window: int, end_window: int) -> None:
        if not 1 <= start_frames <= start_window:
            raise ValueError(f"need 1 <= start_frames <= start_window, got {start_frames}, {start_window}")
        if end_window < 1:
            raise ValueError(f"end_window must be at least 1 frame, got {end_window}")
        self.start_frames = start_frames
        self.end_window = end_window
        self.max_speech_in_pause = int(end_window * END_SPEECH_RATIO)
        self.speaking = False
        self.frame = 0  # frames seen so far
        self._recent: deque[bool] = deque(maxlen=max(start_window, end_window))
        self._start_window = start_window
        self._last_speech = 0  # one past the last speech frame

    def update(self, is_speech: bool) -> SpeechStarted | SpeechEnded | None:
        self._recent.append(is_speech)
        self.frame += 1
        if is_speech:
            self._last_speech = self.frame
        if not self.speaking:
            window = list(self._recent)[-self._start_window:]
            if sum(window) >= self.start_frames:
                self.speaking = True
                first = len(window) - window.index(True)  # frames back to the first speech frame
                return SpeechStarted(self.frame - first)
            return None
        if len(self._recent) >= self.end_window:
            window = list(self._recent)[-self.end_window:]
            if sum(window) <= self.max_speech_in_pause:
                self.speaking = False
                self._recent.clear()
                return SpeechEnded(self._last_speech)
        return None

    def reset(self) -> None:
        """Forget the current utterance (after a forced end): the next speech opens a new one."""
        self.speaking = False
        self._recent.clear()
