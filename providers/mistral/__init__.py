"""``mistral``: Mistral Voxtral realtime transcription (``/v1/audio/transcriptions/realtime``)."""

from __future__ import annotations

from ..base import MULAW_8K
from ..registry import ProviderSpec
from .client import MistralOptions, MistralProvider, create
from .protocol import ERROR_CODES, MistralCodec

__all__ = ["SPEC", "MistralCodec", "MistralOptions", "MistralProvider", "ERROR_CODES", "create"]

SPEC = ProviderSpec(
    name="mistral",
    description="Mistral Voxtral realtime: pcm_mulaw 8 kHz as is, configured by session.update",
    audio_format=MULAW_8K,
    factory=create,
    key_env="MISTRAL_API_KEY",
)
