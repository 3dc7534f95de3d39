"""``openai``: OpenAI Realtime API transcription sessions (``/v1/realtime?intent=transcription``)."""

from __future__ import annotations

from ..base import MULAW_8K
from ..registry import ProviderSpec
from .client import OpenAIOptions, OpenAIProvider, create
from .protocol import ERROR_CODES, OpenAICodec

__all__ = ["SPEC", "OpenAICodec", "OpenAIOptions", "OpenAIProvider", "ERROR_CODES", "create"]

SPEC = ProviderSpec(
    name="openai",
    description="OpenAI Realtime transcription: audio/pcmu 8 kHz as is, gpt-4o-transcribe, server VAD",
    audio_format=MULAW_8K,
    factory=create,
    key_env="OPENAI_API_KEY",
)
