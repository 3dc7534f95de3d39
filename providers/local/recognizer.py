"""Recognizer: 16 kHz pcm16 in, transcript events out.  Synchronous and blocking.

A PocketSphinx ``Decoder`` behind a voice-activity gate (``SpeechGate`` over
pocketsphinx's ``Vad``).  One utterance per stretch of speech:

    silent ──speech starts──▶ start_utt, decode the 300 ms pre-roll
    speaking ──each batch──▶ decode it; PartialTranscript if the hypothesis changed
    speaking ──silence_ms of silence──▶ end_utt; FinalTranscript(text, start, end)
    speaking ──max_utterance_ms──▶ end_utt, final, start_utt (no pause needed)
    flush() ──▶ end the current utterance now (its final), then silent

Only the speech and its pre-roll reach the decoder, so silence costs no search.
Times are milliseconds of audio fed so far.  No trio, no clock, no logging.  It takes
real CPU (``bench/LOCAL_ACCURACY.md``) and PocketSphinx holds the GIL throughout, so
the session runs it in a worker process (``worker.py``).  Not thread-safe.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Final

import pocketsphinx

from ..events import FinalTranscript, PartialTranscript
from .gate import SpeechEnded, SpeechGate, SpeechStarted
from .settings import FRAME_MS, SAMPLE_RATE, VAD_MODES, LocalSettings

__all__ = ["Recognizer", "PREROLL_MS", "START_WINDOW_MS"]

#: Audio kept while silent and decoded when speech starts, so a word's onset (which
#: the VAD hears late) and a little leading silence reach the decoder.
PREROLL_MS: Final = 300

#: The window ``LocalSettings.start_ms`` of speech must fall in to open an utterance.
START_WINDOW_MS: Final = 200

TranscriptEvent = PartialTranscript | FinalTranscript


class Recognizer:
    """Decodes one session's audio.  Creating it loads the models (~0.5 s of CPU).

    ``decoder_overrides``: extra pocketsphinx ``Config`` keywords (the bench's knobs).
    """

    def __init__(self, settings: LocalSettings, decoder_overrides: Mapping[str, object] | None = None) -> None:
        self._max_utterance_frames = settings.max_utterance_ms // FRAME_MS
        options = {**settings.decoder_options(), **(decoder_overrides or {})}
        self._decoder: pocketsphinx.Decoder | None = pocketsphinx.Decoder(**options)
        self._vad = pocketsphinx.Vad(VAD_MODES[settings.vad_mode], SAMPLE_RATE, FRAME_MS / 1000)
        self._frame_bytes = self._vad.frame_bytes
        self._gate = SpeechGate(
            start_frames=max(1, settings.start_ms // FRAME_MS),
            start_window=START_WINDOW_MS // FRAME_MS,
            end_window=max(1, settings.silence_ms // FRAME_MS),
        )
        self._preroll: deque[bytes] = deque(maxlen=PREROLL_MS // FRAME_MS)
        self._partial_frame = b""  # less than one frame, waiting for the rest
        self._utterance_start: int | None = None  # frame index, while an utterance is open
        self._last_text = ""

    @property
    def fed_ms(self) -> int:
        """Audio consumed so far (whole frames)."""
        return self._gate.frame * FRAME_MS

    def feed(self, pcm: bytes) -> list[TranscriptEvent]:
        """Decode a batch: finals for utterances that ended in it, then at most one
        partial for the utterance still open (only when its text changed)."""
        decoder = self._live_decoder()
        events: list[TranscriptEvent] = []
        data = self._partial_frame + pcm
        usable = len(data) - len(data) % self._frame_bytes
        self._partial_frame = data[usable:]
        to_decode = bytearray()
        for offset in range(0, usable, self._frame_bytes):
            frame = data[offset:offset + self._frame_bytes]
            was_speaking = self._gate.speaking
            change = self._gate.update(self._vad.is_speech(frame))
            if was_speaking:
                to_decode += frame
            else:
                self._preroll.append(frame)
            if isinstance(change, SpeechStarted):
                decoder.start_utt()
                self._utterance_start = change.frame
                self._last_text = ""
                to_decode += b"".join(self._preroll)
                self._preroll.clear()
            elif isinstance(change, SpeechEnded):
                self._end_utterance(to_decode, change.frame, events)
                to_decode = bytearray()
            elif self._utterance_start is not None and (
                self._gate.frame - self._utterance_start >= self._max_utterance_frames
            ):
                self._end_utterance(to_decode, self._gate.frame, events)
                to_decode = bytearray()
                decoder.start_utt()
                self._utterance_start = self._gate.frame
                self._last_text = ""
        if self._utterance_start is not None:
            if to_decode:
                decoder.process_raw(bytes(to_decode))
            text = _text(decoder)
            if text and text != self._last_text:
                self._last_text = text
                events.append(PartialTranscript(text, self._utterance_start * FRAME_MS, self.fed_ms))
        return events

    def flush(self) -> list[FinalTranscript]:
        """End the open utterance now (finalize): its final, if it has words."""
        events: list[TranscriptEvent] = []
        if self._utterance_start is not None:
            self._end_utterance(b"", self._gate.frame, events)
        self._gate.reset()
        self._preroll.clear()
        return [event for event in events if isinstance(event, FinalTranscript)]

    def close(self) -> None:
        """Free the decoder; an open utterance is dropped.  Idempotent."""
        self._decoder = None
        self._utterance_start = None

    def _end_utterance(self, to_decode: bytes | bytearray, end_frame: int, events: list[TranscriptEvent]) -> None:
        decoder = self._live_decoder()
        assert self._utterance_start is not None
        if to_decode:
            decoder.process_raw(bytes(to_decode))
        decoder.end_utt()
        text = _text(decoder)
        start_ms = self._utterance_start * FRAME_MS
        self._utterance_start = None
        self._last_text = ""
        if text:
            events.append(FinalTranscript(text, start_ms, max(start_ms, end_frame * FRAME_MS)))

    def _live_decoder(self) -> pocketsphinx.Decoder:
        if self._decoder is None:
            raise RuntimeError("Recognizer used after close()")
        return self._decoder


def _text(decoder: pocketsphinx.Decoder) -> str:
    hypothesis = decoder.hyp()
    return " ".join(hypothesis.hypstr.split()) if hypothesis is not None else ""
