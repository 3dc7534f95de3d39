"""Is there speech in a batch?  A cheap level gate (not a VAD), pure and clock-free.

The stall watchdog (``actors.watchdog``) counts only audio that carries speech: a muted
caller with a vendor that says nothing in silence is not a stalled session.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from providers.base import AudioFormat

from .dsp import MULAW_DECODE_TABLE

__all__ = ["SPEECH_LEVEL", "SPEECH_SHARE", "is_speech"]

#: Below this amplitude (about -40 dBFS) a sample is line noise, not speech.
SPEECH_LEVEL: Final = 330
#: A batch is speech when at least 1 sample in SPEECH_SHARE is above SPEECH_LEVEL.
SPEECH_SHARE: Final = 10
_QUIET_MULAW: Final = bytes(code for code in range(256) if abs(int(MULAW_DECODE_TABLE[code])) < SPEECH_LEVEL)


def is_speech(payload: bytes, audio_format: AudioFormat) -> bool:
    """Does ``payload`` (in ``audio_format``) carry more than line noise?"""
    if not payload:
        return False
    if audio_format.encoding == "mulaw":
        loud = len(payload.translate(None, _QUIET_MULAW))  # the quiet samples deleted
        return loud * SPEECH_SHARE >= len(payload)
    samples = np.frombuffer(payload[: len(payload) // 2 * 2], dtype="<i2")
    if not samples.size:
        return False
    loud = int(np.count_nonzero((samples >= SPEECH_LEVEL) | (samples <= -SPEECH_LEVEL)))
    return loud * SPEECH_SHARE >= samples.size
