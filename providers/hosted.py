"""What the hosted vendors reached with one API key over one WebSocket per session
(ElevenLabs, Mistral, OpenAI) have in common as ``SttProvider``s: the key (kept out of
``repr``), the audio format, the batch and keepalive settings, and the session: a
WebSocket to the vendor's ``url`` with its ``headers``, driving a fresh ``codec()``."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import attrs

from .base import MULAW_8K, AudioFormat, SttCodec, SttSession
from .websocket import open_websocket_session

__all__ = ["HostedProvider"]


@attrs.frozen(kw_only=True)
class HostedProvider:
    """Base of a vendor's provider, which adds ``name`` (a field with the vendor's
    default), ``url`` (a property), ``codec()``, and ``headers()`` when its key is not
    a bearer token."""

    api_key: str = attrs.field(repr=False)
    audio_format: AudioFormat = MULAW_8K
    chunk_ms: int | None = None
    keepalive_interval: float | None = None

    def codec(self) -> SttCodec:
        raise NotImplementedError

    def headers(self) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {self.api_key}")]

    def open_session(self) -> AbstractAsyncContextManager[SttSession]:
        return open_websocket_session(self.name, self.codec(), self.url, self.headers())
