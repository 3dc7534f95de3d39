"""LocalProvider: the configured ``local`` provider; one recognizer thread per session."""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Final

import attrs

from ..base import AudioFormat
from ..errors import ProviderConfigError
from .session import LocalSession, open_local_session
from .settings import PROVIDER, SAMPLE_RATE, LocalSettings

__all__ = ["AUDIO_FORMAT", "LocalProvider", "create"]

#: What ``send_audio`` takes: the gateway upsamples Twilio's 8 kHz mu-law (soxr).
AUDIO_FORMAT: Final = AudioFormat("pcm16", SAMPLE_RATE)

_session_numbers = itertools.count(1)


@attrs.frozen
class LocalProvider:
    """Offline PocketSphinx.  Needs no account and no network; costs ~0.5-0.7 of a CPU
    core per live call (bench/LOCAL_ACCURACY.md)."""

    settings: LocalSettings = attrs.field(factory=LocalSettings)
    name: str = PROVIDER
    audio_format: AudioFormat = AUDIO_FORMAT
    chunk_ms: int | None = None
    keepalive_interval: float | None = None

    def open_session(self) -> AbstractAsyncContextManager[LocalSession]:
        return open_local_session(self.settings, f"{PROVIDER}-{next(_session_numbers)}")


def create(env: Mapping[str, str]) -> LocalProvider:
    """The registry factory: ``LOCAL_*`` settings (``ProviderConfigError`` on a bad one,
    or when PocketSphinx is not installed)."""
    settings = LocalSettings.from_env(env)
    if importlib.util.find_spec("pocketsphinx") is None:
        raise ProviderConfigError(PROVIDER, "pocketsphinx is not installed; pip install 'pocketsphinx>=5'")
    return LocalProvider(settings)
