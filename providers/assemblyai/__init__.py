"""AssemblyAI Universal Streaming v3 (``/v3/ws``): 8 kHz mu-law sent as Twilio sends it,
in 100 ms frames paced to real time."""

from ..base import MULAW_8K
from ..registry import ProviderSpec
from .client import AssemblyAIOptions, AssemblyAIProvider, PacedSession, RealTimePacer, create
from .protocol import AssemblyAICodec

__all__ = ["SPEC", "AssemblyAICodec", "AssemblyAIOptions", "AssemblyAIProvider", "PacedSession",
           "RealTimePacer", "create"]

SPEC = ProviderSpec(
    name="assemblyai",
    description="AssemblyAI Universal Streaming v3, mu-law 8 kHz as is, paced to real time",
    audio_format=MULAW_8K,
    factory=create,
    key_env="ASSEMBLYAI_API_KEY",
)
