"""Segmenter: a call's audio in, utterances out.  No I/O, no clock, no threads.

Speech probability per 32 ms window (``StreamingVad``) drives a ``SpeechGate`` with a
short start edge (96 ms of speech within 192 ms opens an utterance) and a long end
edge (``silence_ms`` with at most 10% speech closes it)::

    silent ──speech──▶ open (with the 320 ms before it: onsets the VAD hears late)
    open ──every partial_ms of audio──▶ PartialDue (not while paused: nothing new to show)
    open ──320 ms of silence──▶ Paused: the audio the commit will hold if the pause lasts
    open ──silence_ms of silence──▶ UtteranceEnded (audio up to 320 ms after the last speech)
    open ──max_utterance_ms──▶ UtteranceEnded at the quietest window of the last second;
                               the rest stays open as the next utterance
    flush() ──▶ UtteranceEnded for what is open, then silent

Times are ms of session audio (16 kHz samples / 16); spans of successive utterances
never overlap.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

import attrs
import numpy as np

from ..local.gate import SpeechEnded, SpeechGate, SpeechStarted
from .vad import WINDOW, WINDOW_MS

__all__ = ["Segmenter", "UtteranceEnded", "PartialDue", "Paused", "SPEECH_THRESHOLD"]

#: Silero's speech probability above which a window counts as speech.
SPEECH_THRESHOLD: Final = 0.5
START_FRAMES: Final = 3
START_WINDOW: Final = 6
PREROLL_WINDOWS: Final = 10
#: Audio kept after the last speech window (320 ms): Silero closes a little early on soft
#: endings, and Whisper hears a last word better with silence after it (bench/LOCAL_ACCURACY.md).
TRAILING_WINDOWS: Final = 10
#: A forced cut goes at the quietest window of this many last windows (~1 s).
CUT_SEARCH_WINDOWS: Final = 31


@attrs.frozen(eq=False)
class UtteranceEnded:
    """An utterance to commit: its audio (float32, 16 kHz) and span; ``utterance`` is
    its number in the session."""

    utterance: int
    audio: np.ndarray
    start_ms: int
    end_ms: int


@attrs.frozen(eq=False)
class Paused:
    """The open utterance has been silent for the silence kept after speech: if the
    pause lasts ``silence_ms``, it ends with exactly this audio and span (so its commit
    can be decoded now, while the endpointing still waits)."""

    utterance: int
    audio: np.ndarray
    start_ms: int
    end_ms: int


@attrs.frozen
class PartialDue:
    """Another ``partial_ms`` of the open utterance arrived: time for a live caption."""

    utterance: int


class Segmenter:
    """``vad(windows) -> probabilities``: one per 512-sample window, stateful across calls."""

    def __init__(self, vad: Callable[[np.ndarray], np.ndarray], *, silence_ms: int, max_utterance_ms: int,
                 partial_ms: int) -> None:
        self._vad = vad
        self._gate = SpeechGate(start_frames=START_FRAMES, start_window=START_WINDOW,
                                end_window=max(1, silence_ms // WINDOW_MS))
        self._max_windows = max_utterance_ms // WINDOW_MS
        self._partial_windows = partial_ms // WINDOW_MS if partial_ms else 0
        self._tail = np.zeros(0, dtype=np.float32)  # less than a window, waiting for the rest
        self._preroll: deque[np.ndarray] = deque(maxlen=PREROLL_WINDOWS)
        self._windows: list[np.ndarray] = []  # the open utterance
        self._probs: list[float] = []
        self._start = 0  # window index where the open utterance starts
        self._next_partial = 0
        self._open = False
        self._silent = 0  # windows of silence at the end of the open utterance
        self.utterance = 0  # number of the open (or next) utterance
        self.fed_windows = 0

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def open_ms(self) -> int:
        """Length of the open utterance."""
        return len(self._windows) * WINDOW_MS if self._open else 0

    @property
    def paused(self) -> bool:
        """The open utterance ends in at least the silence kept after speech."""
        return self._open and self._silent >= TRAILING_WINDOWS

    @property
    def start_ms(self) -> int:
        return self._start * WINDOW_MS

    @property
    def fed_ms(self) -> int:
        return self.fed_windows * WINDOW_MS

    def current_audio(self) -> np.ndarray:
        """The open utterance so far (empty when none is open)."""
        return np.concatenate(self._windows) if self._open and self._windows else np.zeros(0, dtype=np.float32)

    def feed(self, samples: np.ndarray) -> list[UtteranceEnded | Paused | PartialDue]:
        data = np.concatenate([self._tail, samples]) if self._tail.size else samples
        usable = data.size - data.size % WINDOW
        self._tail = data[usable:].copy()
        if not usable:
            return []
        probs = self._vad(data[:usable])
        events: list[UtteranceEnded | Paused | PartialDue] = []
        for i, prob in enumerate(probs):
            self._window(data[i * WINDOW:(i + 1) * WINDOW], float(prob), events)
        return events

    def flush(self) -> UtteranceEnded | None:
        """End the open utterance now (hang-up): its audio, with the unwindowed tail."""
        ended = None
        if self._open:
            if self._tail.size:
                self._windows.append(self._tail)
            ended = self._end(len(self._windows), self.fed_ms + self._tail.size * 1000 // 16000)
        self._tail = np.zeros(0, dtype=np.float32)
        self._gate.reset()
        self._preroll.clear()
        return ended

    def _window(self, window: np.ndarray, prob: float, events: list[UtteranceEnded | Paused | PartialDue]) -> None:
        was_open = self._open
        speech = prob >= SPEECH_THRESHOLD
        self._silent = 0 if speech else self._silent + 1
        change = self._gate.update(speech)
        self.fed_windows += 1
        if was_open:
            self._windows.append(window)
            self._probs.append(prob)
        else:
            self._preroll.append(window)
        if isinstance(change, SpeechStarted):
            self._open = True
            self._windows = list(self._preroll)
            self._probs = [1.0] * len(self._windows)  # never cut inside the pre-roll
            self._start = self.fed_windows - len(self._preroll)
            self._next_partial = len(self._windows) + self._partial_windows
            self._preroll.clear()
        elif isinstance(change, SpeechEnded):
            keep = min(len(self._windows), change.frame + TRAILING_WINDOWS - self._start)
            events.append(self._end(keep, (self._start + keep) * WINDOW_MS))
        elif self._open and len(self._windows) >= self._max_windows:
            events.append(self._cut())
        elif self._open and self._silent == TRAILING_WINDOWS:
            events.append(Paused(self.utterance, np.concatenate(self._windows), self.start_ms,
                                 (self._start + len(self._windows)) * WINDOW_MS))
        if self._open and self._partial_windows and len(self._windows) >= self._next_partial:
            self._next_partial = len(self._windows) + self._partial_windows
            if not self.paused:
                events.append(PartialDue(self.utterance))

    def _end(self, keep: int, end_ms: int) -> UtteranceEnded:
        """Close the open utterance after ``keep`` windows; the rest becomes pre-roll."""
        audio = np.concatenate(self._windows[:keep]) if keep else np.zeros(0, dtype=np.float32)
        ended = UtteranceEnded(self.utterance, audio, self.start_ms, max(self.start_ms, end_ms))
        for window in self._windows[keep:]:
            self._preroll.append(window)
        self._windows, self._probs, self._open = [], [], False
        self.utterance += 1
        return ended

    def _cut(self) -> UtteranceEnded:
        """Speech with no pause: commit up to the quietest recent window, keep the rest open."""
        search = self._probs[-CUT_SEARCH_WINDOWS:]
        at = len(self._probs) - len(search) + int(np.argmin(search)) + 1  # cut after the quietest window
        rest, rest_probs = self._windows[at:], self._probs[at:]
        ended = UtteranceEnded(self.utterance, np.concatenate(self._windows[:at]), self.start_ms,
                               (self._start + at) * WINDOW_MS)
        self.utterance += 1
        self._windows, self._probs = rest, rest_probs
        self._start += at
        self._next_partial = len(self._windows) + self._partial_windows
        return ended
