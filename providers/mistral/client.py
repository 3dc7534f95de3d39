"""Mistral provider: URL, auth header and options around ``MistralCodec``.

``wss://api.mistral.ai/v1/audio/transcriptions/realtime?model=…`` with
``Authorization: Bearer <key>``; the rest of the configuration is the codec's
``session.update`` (audio format ``pcm_mulaw``/8000 by default).

| variable | default | meaning |
|---|---|---|
| ``MISTRAL_API_KEY`` | (required) | API key, sent as a bearer token |
| ``MISTRAL_BASE_URL`` | ``wss://api.mistral.ai`` | ``scheme://host[:port]`` (``wss://api.eu.mistral.ai`` ...); the path is appended |
| ``MISTRAL_MODEL`` | ``voxtral-mini-transcribe-realtime-2602`` | the GA realtime model; ``voxtral-mini-transcribe-realtime-3`` is the preview |
| ``MISTRAL_STREAMING_DELAY_MS`` | (server default) | ``target_streaming_delay_ms``, 80-2400: lower is faster, higher more accurate |
| ``MISTRAL_LANGUAGE`` | (auto) | ``language`` (ISO 639); not accepted by the 2602 model |
| ``MISTRAL_KEYTERMS`` | (none) | ``context_bias``: comma-separated terms; not accepted by the 2602 model |
| ``MISTRAL_FORMAT`` | ``mulaw`` | ``mulaw`` (Twilio's audio as is) or ``pcm16:RATE`` (8000, 16000, 24000, 48000) |

The 2602 model has no server-side endpointing: the codec commits once, at hang-up, so a
call's committed transcript arrives at its end (partials grow meanwhile).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import attrs

from .. import options as opt
from ..errors import ProviderConfigError
from ..hosted import HostedProvider
from .protocol import MistralCodec

__all__ = ["MistralOptions", "MistralProvider", "create", "DEFAULT_BASE_URL", "DEFAULT_MODEL", "PATH"]

NAME = "mistral"
DEFAULT_BASE_URL = "wss://api.mistral.ai"
PATH = "/v1/audio/transcriptions/realtime"
DEFAULT_MODEL = "voxtral-mini-transcribe-realtime-2602"
PCM16_RATES = (8000, 16000, 24000, 48000)
MAX_TERMS, MAX_TERM_LENGTH = 100, 100


@attrs.frozen
class MistralOptions:
    model: str = DEFAULT_MODEL
    streaming_delay_ms: int | None = None
    language: str | None = None
    keyterms: tuple[str, ...] = ()

    def session(self) -> dict[str, Any]:
        """``session.update`` fields besides the audio format (unset ones are left out)."""
        fields: dict[str, Any] = {}
        if self.streaming_delay_ms is not None:
            fields["target_streaming_delay_ms"] = self.streaming_delay_ms
        if self.language is not None:
            fields["language"] = self.language
        if self.keyterms:
            fields["context_bias"] = list(self.keyterms)
        return fields


@attrs.frozen(kw_only=True)
class MistralProvider(HostedProvider):
    """``SttProvider`` for Voxtral realtime.  The key is kept out of ``repr``."""

    base_url: str = DEFAULT_BASE_URL
    options: MistralOptions = MistralOptions()
    name: str = NAME

    @property
    def url(self) -> str:
        return f"{self.base_url}{PATH}?{urlencode({'model': self.options.model})}"

    def codec(self) -> MistralCodec:
        return MistralCodec(self.audio_format, session=self.options.session())


def create(env: Mapping[str, str]) -> MistralProvider:
    """Configure from ``MISTRAL_*`` variables; ``ProviderConfigError`` says what to fix."""
    key = opt.api_key(NAME, env, "MISTRAL_API_KEY")
    options = MistralOptions(
        model=opt.identifier(NAME, env, "MISTRAL_MODEL", DEFAULT_MODEL),
        streaming_delay_ms=opt.integer(NAME, env, "MISTRAL_STREAMING_DELAY_MS", 80, 2400),
        language=opt.language(NAME, env, "MISTRAL_LANGUAGE"),
        keyterms=opt.terms(NAME, env, "MISTRAL_KEYTERMS", max_terms=MAX_TERMS, max_length=MAX_TERM_LENGTH),
    )
    if options.model.endswith("-2602"):
        for variable, value in (("MISTRAL_LANGUAGE", options.language), ("MISTRAL_KEYTERMS", options.keyterms)):
            if value:
                raise ProviderConfigError(NAME, f"{variable} needs a Voxtral 3 model; set "
                                                "MISTRAL_MODEL=voxtral-mini-transcribe-realtime-3 or unset it")
    return MistralProvider(
        api_key=key,
        base_url=opt.base_url(NAME, env, "MISTRAL_BASE_URL", DEFAULT_BASE_URL),
        options=options,
        audio_format=opt.audio_format(NAME, env, "MISTRAL_FORMAT", PCM16_RATES),
    )
