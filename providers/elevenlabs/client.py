"""ElevenLabs provider: URL, auth header and options around ``ElevenLabsCodec``.

``wss://api.elevenlabs.io/v1/speech-to-text/realtime?model_id=…&audio_format=ulaw_8000
&commit_strategy=vad&include_timestamps=true[&language_code=…][&keyterms=…]*``, with the
key in the ``xi-api-key`` header (never in the URL).

| variable | default | meaning |
|---|---|---|
| ``ELEVENLABS_API_KEY`` | (required) | API key, sent as ``xi-api-key`` |
| ``ELEVENLABS_BASE_URL`` | ``wss://api.elevenlabs.io`` | ``scheme://host[:port]``; the path is appended |
| ``ELEVENLABS_MODEL`` | ``scribe_v2_realtime`` | ``model_id`` |
| ``ELEVENLABS_LANGUAGE`` | (auto) | ``language_code``, ISO 639-1/3 |
| ``ELEVENLABS_COMMIT_STRATEGY`` | ``vad`` | ``vad`` (server segments at silences) or ``manual`` (one commit at hang-up; the server auto-commits every 90 s) |
| ``ELEVENLABS_VAD_SILENCE_THRESHOLD_SECS`` | (server: 1.5) | 0.3-3.0, VAD only |
| ``ELEVENLABS_VAD_THRESHOLD`` | (server: 0.4) | 0.1-0.9, VAD only |
| ``ELEVENLABS_MIN_SPEECH_DURATION_MS`` | (server: 100) | 50-2000, VAD only |
| ``ELEVENLABS_MIN_SILENCE_DURATION_MS`` | (server: 100) | 50-2000, VAD only |
| ``ELEVENLABS_INCLUDE_TIMESTAMPS`` | ``true`` | word times → exact committed spans |
| ``ELEVENLABS_KEYTERMS`` | (none) | comma-separated bias terms, at most 50 of at most 20 characters |
| ``ELEVENLABS_FORMAT`` | ``mulaw`` | ``mulaw`` (Twilio's audio as is) or ``pcm16:RATE`` (8000, 16000, 22050, 24000, 44100, 48000) |
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

import attrs

from .. import options as opt
from ..base import AudioFormat
from ..errors import ProviderConfigError
from ..hosted import HostedProvider
from .protocol import ElevenLabsCodec, vendor_audio_format

__all__ = ["ElevenLabsOptions", "ElevenLabsProvider", "create", "DEFAULT_BASE_URL", "PATH"]

NAME = "elevenlabs"
DEFAULT_BASE_URL = "wss://api.elevenlabs.io"
PATH = "/v1/speech-to-text/realtime"
DEFAULT_MODEL = "scribe_v2_realtime"
PCM16_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
MAX_KEYTERMS, MAX_KEYTERM_LENGTH = 50, 20


@attrs.frozen
class ElevenLabsOptions:
    """What goes in the query string (besides ``audio_format``)."""

    model: str = DEFAULT_MODEL
    language: str | None = None
    commit_strategy: str = "vad"
    vad_silence_threshold_secs: float | None = None
    vad_threshold: float | None = None
    min_speech_duration_ms: int | None = None
    min_silence_duration_ms: int | None = None
    include_timestamps: bool = True
    keyterms: tuple[str, ...] = ()

    def query(self, audio_format: AudioFormat) -> list[tuple[str, str]]:
        params = [("model_id", self.model), ("audio_format", vendor_audio_format(audio_format)),
                  ("commit_strategy", self.commit_strategy),
                  ("include_timestamps", "true" if self.include_timestamps else "false")]
        optional = [("language_code", self.language),
                    ("vad_silence_threshold_secs", self.vad_silence_threshold_secs),
                    ("vad_threshold", self.vad_threshold),
                    ("min_speech_duration_ms", self.min_speech_duration_ms),
                    ("min_silence_duration_ms", self.min_silence_duration_ms)]
        params += [(key, f"{value:g}" if isinstance(value, float) else str(value))
                   for key, value in optional if value is not None]
        params += [("keyterms", term) for term in self.keyterms]
        return params


@attrs.frozen(kw_only=True)
class ElevenLabsProvider(HostedProvider):
    """``SttProvider`` for ElevenLabs Scribe v2 Realtime.  The key is kept out of ``repr``."""

    base_url: str = DEFAULT_BASE_URL
    options: ElevenLabsOptions = ElevenLabsOptions()
    name: str = NAME

    @property
    def url(self) -> str:
        return f"{self.base_url}{PATH}?{urlencode(self.options.query(self.audio_format))}"

    def headers(self) -> list[tuple[str, str]]:
        return [("xi-api-key", self.api_key)]

    def codec(self) -> ElevenLabsCodec:
        return ElevenLabsCodec(self.audio_format, include_timestamps=self.options.include_timestamps)


def create(env: Mapping[str, str]) -> ElevenLabsProvider:
    """Configure from ``ELEVENLABS_*`` variables; ``ProviderConfigError`` says what to fix."""
    key = opt.api_key(NAME, env, "ELEVENLABS_API_KEY")
    strategy = opt.choice(NAME, env, "ELEVENLABS_COMMIT_STRATEGY", ("vad", "manual"), "vad")
    vad = dict(
        vad_silence_threshold_secs=opt.number(NAME, env, "ELEVENLABS_VAD_SILENCE_THRESHOLD_SECS", 0.3, 3.0),
        vad_threshold=opt.number(NAME, env, "ELEVENLABS_VAD_THRESHOLD", 0.1, 0.9),
        min_speech_duration_ms=opt.integer(NAME, env, "ELEVENLABS_MIN_SPEECH_DURATION_MS", 50, 2000),
        min_silence_duration_ms=opt.integer(NAME, env, "ELEVENLABS_MIN_SILENCE_DURATION_MS", 50, 2000),
    )
    if strategy != "vad":
        for field, value in vad.items():
            if value is not None:
                raise ProviderConfigError(NAME, f"ELEVENLABS_{field.upper()} applies only with "
                                                "ELEVENLABS_COMMIT_STRATEGY=vad; unset one of them")
    options = ElevenLabsOptions(
        model=opt.identifier(NAME, env, "ELEVENLABS_MODEL", DEFAULT_MODEL),
        language=opt.language(NAME, env, "ELEVENLABS_LANGUAGE"),
        commit_strategy=strategy,
        include_timestamps=opt.boolean(NAME, env, "ELEVENLABS_INCLUDE_TIMESTAMPS", True),
        keyterms=opt.terms(NAME, env, "ELEVENLABS_KEYTERMS", max_terms=MAX_KEYTERMS,
                           max_length=MAX_KEYTERM_LENGTH),
        **vad,
    )
    return ElevenLabsProvider(
        api_key=key,
        base_url=opt.base_url(NAME, env, "ELEVENLABS_BASE_URL", DEFAULT_BASE_URL),
        options=options,
        audio_format=opt.audio_format(NAME, env, "ELEVENLABS_FORMAT", PCM16_RATES),
    )
