"""``elevenlabs``: ElevenLabs Scribe v2 Realtime (``/v1/speech-to-text/realtime``)."""

from __future__ import annotations

from ..base import MULAW_8K
from ..registry import ProviderSpec
from .client import ElevenLabsOptions, ElevenLabsProvider, create
from .protocol import ERROR_TYPES, ElevenLabsCodec

__all__ = ["SPEC", "ElevenLabsCodec", "ElevenLabsOptions", "ElevenLabsProvider", "ERROR_TYPES", "create"]

SPEC = ProviderSpec(
    name="elevenlabs",
    description="ElevenLabs Scribe v2 Realtime: mu-law 8 kHz as is, server VAD commits, word timestamps",
    audio_format=MULAW_8K,
    factory=create,
    key_env="ELEVENLABS_API_KEY",
)
