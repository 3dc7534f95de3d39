"""StreamingVad: speech probability per 32 ms window, fed audio as it arrives.

faster-whisper bundles Silero VAD (v6) as an ONNX model that takes a run of 512-sample
windows, each with the last 64 samples of the window before it, plus an LSTM state
(``h``, ``c``).  Its own helper starts every call from zero state; a call's audio comes
in 100 ms batches, so this keeps the state and the 64-sample context from one batch
to the next: the probabilities are those of the whole call decoded in one go.

Cheap enough to run on the caller's thread (bench/LOCAL_ACCURACY.md, Endpointing).
One per session; the ONNX session under it is shared (onnxruntime allows concurrent
``run``s).
"""

from __future__ import annotations

from typing import Final

import numpy as np

__all__ = ["StreamingVad", "WINDOW", "WINDOW_MS", "CONTEXT"]

WINDOW: Final = 512  # samples at 16 kHz
WINDOW_MS: Final = 32
CONTEXT: Final = 64
_STATE_SHAPE: Final = (1, 1, 128)


def _onnx_session() -> object:
    from faster_whisper.vad import get_vad_model

    return get_vad_model().session  # loaded once per process (cached by faster-whisper)


class StreamingVad:
    """``probabilities(windows)``: ``windows`` is float32 audio, a whole number of
    ``WINDOW``s; returns one speech probability (0..1) per window."""

    def __init__(self) -> None:
        self._session = _onnx_session()
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)

    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        if windows.size % WINDOW:
            raise ValueError(f"VAD input must be a whole number of {WINDOW}-sample windows, got {windows.size}")
        if not windows.size:
            return np.zeros(0, dtype=np.float32)
        batch = windows.reshape(-1, WINDOW)
        contexts = np.concatenate([self._context[None], batch[:-1, -CONTEXT:]])
        self._context = batch[-1, -CONTEXT:].copy()
        probs, self._h, self._c = self._session.run(  # type: ignore[attr-defined]
            None, {"input": np.concatenate([contexts, batch], axis=1), "h": self._h, "c": self._c})
        return np.asarray(probs, dtype=np.float32).reshape(-1)
