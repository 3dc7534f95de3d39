"""Deepgram realtime STT: live streaming v1 (``/v1/listen``, Nova) and Flux
(``/v2/listen``, ``DEEPGRAM_MODEL=flux-...``), 8 kHz mu-law sent as Twilio sends it."""

from ..base import MULAW_8K
from ..registry import ProviderSpec
from .client import DeepgramOptions, DeepgramProvider, create
from .flux import FluxCodec
from .protocol import DeepgramCodec

__all__ = ["SPEC", "DeepgramCodec", "FluxCodec", "DeepgramOptions", "DeepgramProvider", "create"]

SPEC = ProviderSpec(
    name="deepgram",
    description="Deepgram live streaming (nova-3; flux-* on /v2/listen), mu-law 8 kHz as is",
    audio_format=MULAW_8K,
    factory=create,
    key_env="DEEPGRAM_API_KEY",
)
