"""WhisperProvider: the configured ``whisper`` provider; every session shares one model."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager

import attrs

from ..base import AudioFormat
from .model import SharedModel, load_model
from .queue import DecodeQueue
from .session import WhisperSession, open_whisper_session
from .settings import AUDIO_FORMAT, PROVIDER, WhisperSettings

__all__ = ["AUDIO_FORMAT", "WhisperProvider", "create", "shared_queue"]

_session_numbers = itertools.count(1)
_queues: dict[int, DecodeQueue] = {}
_queues_lock = threading.Lock()


def shared_queue(model: SharedModel) -> DecodeQueue:
    """The process's decode queue for ``model`` (one per model: its workers are the slots)."""
    with _queues_lock:
        queue = _queues.get(id(model))
        if queue is None:
            queue = _queues[id(model)] = DecodeQueue(model.info.workers)
        return queue


@attrs.frozen
class WhisperProvider:
    """Offline Whisper (faster-whisper, CTranslate2).  Needs no account and no network
    with the bundled model; costs in bench/LOCAL_ACCURACY.md."""

    settings: WhisperSettings
    model: SharedModel = attrs.field(repr=False)
    queue: DecodeQueue = attrs.field(repr=False)
    name: str = PROVIDER
    audio_format: AudioFormat = AUDIO_FORMAT
    chunk_ms: int | None = None
    keepalive_interval: float | None = None

    def open_session(self) -> AbstractAsyncContextManager[WhisperSession]:
        return open_whisper_session(self.model, self.queue, self.settings, f"{PROVIDER}-{next(_session_numbers)}")


def create(env: Mapping[str, str]) -> WhisperProvider:
    """The registry factory: ``WHISPER_*`` settings, and the model loaded (once per
    process; about a second the first time), so a model that cannot load stops the
    gateway at start with ``ProviderConfigError``, not at the first call."""
    settings = WhisperSettings.from_env(env)
    model = load_model(settings)
    return WhisperProvider(settings, model, shared_queue(model))
