"""OpenAI provider: URL, auth header and options around ``OpenAICodec``.

``wss://api.openai.com/v1/realtime?intent=transcription`` (no ``model`` in the URL: that
would open a conversation session) with ``Authorization: Bearer <key>``; the session is
configured by the codec's ``session.update`` (``audio/pcmu`` by default).

| variable | default | meaning |
|---|---|---|
| ``OPENAI_API_KEY`` | (required) | API key, sent as a bearer token |
| ``OPENAI_BASE_URL`` | ``wss://api.openai.com`` | ``scheme://host[:port]``; the path is appended |
| ``OPENAI_MODEL`` | ``gpt-4o-transcribe`` | ``transcription.model`` |
| ``OPENAI_LANGUAGE`` | (auto) | ``transcription.language`` (ISO 639-1) |
| ``OPENAI_PROMPT`` | (none) | ``transcription.prompt``: vocabulary and context hints |
| ``OPENAI_TURN_DETECTION`` | ``server_vad`` (``none`` for models that take no VAD) | ``server_vad``, ``semantic_vad`` or ``none`` (one commit at hang-up) |
| ``OPENAI_VAD_THRESHOLD`` | (server: 0.5) | 0-1, ``server_vad`` only |
| ``OPENAI_VAD_PREFIX_PADDING_MS`` | (server: 300) | 0-5000, ``server_vad`` only |
| ``OPENAI_VAD_SILENCE_MS`` | (server: 500) | ``silence_duration_ms``, 0-10000, ``server_vad`` only |
| ``OPENAI_VAD_EAGERNESS`` | (server: auto) | ``low``/``medium``/``high``/``auto``, ``semantic_vad`` only |
| ``OPENAI_NOISE_REDUCTION`` | (off) | ``near_field`` or ``far_field`` |
| ``OPENAI_FORMAT`` | ``mulaw`` | ``mulaw`` (Twilio's audio as is, ``audio/pcmu``) or ``pcm16:24000`` |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .. import options as opt
from ..errors import ProviderConfigError
from ..hosted import HostedProvider
from .protocol import OpenAICodec

__all__ = ["OpenAIOptions", "OpenAIProvider", "create", "DEFAULT_BASE_URL", "DEFAULT_MODEL", "PATH"]

NAME = "openai"
DEFAULT_BASE_URL = "wss://api.openai.com"
PATH = "/v1/realtime"
QUERY = "intent=transcription"
DEFAULT_MODEL = "gpt-4o-transcribe"
#: Streaming models that take no server VAD: the client commits.
NO_VAD_MODELS = ("gpt-live-transcribe", "gpt-realtime-whisper")
NO_PROMPT_MODELS = ("gpt-realtime-whisper",)
MAX_PROMPT = 2000


@attrs.frozen
class OpenAIOptions:
    model: str = DEFAULT_MODEL
    language: str | None = None
    prompt: str | None = None
    turn_detection: str = "server_vad"  # server_vad | semantic_vad | none
    vad_threshold: float | None = None
    vad_prefix_padding_ms: int | None = None
    vad_silence_ms: int | None = None
    vad_eagerness: str | None = None
    noise_reduction: str | None = None

    def audio_input(self) -> dict[str, Any]:
        """``session.audio.input`` besides ``format`` (unset options are left to the server)."""
        transcription: dict[str, Any] = {"model": self.model}
        if self.language is not None:
            transcription["language"] = self.language
        if self.prompt is not None:
            transcription["prompt"] = self.prompt
        turn: dict[str, Any] | None = None
        if self.turn_detection != "none":
            turn = {"type": self.turn_detection}
            for key, value in (("threshold", self.vad_threshold), ("prefix_padding_ms", self.vad_prefix_padding_ms),
                               ("silence_duration_ms", self.vad_silence_ms), ("eagerness", self.vad_eagerness)):
                if value is not None:
                    turn[key] = value
        fields: dict[str, Any] = {"transcription": transcription, "turn_detection": turn}
        if self.noise_reduction is not None:
            fields["noise_reduction"] = {"type": self.noise_reduction}
        return fields


@attrs.frozen(kw_only=True)
class OpenAIProvider(HostedProvider):
    """``SttProvider`` for OpenAI Realtime transcription.  The key is kept out of ``repr``."""

    base_url: str = DEFAULT_BASE_URL
    options: OpenAIOptions = OpenAIOptions()
    name: str = NAME

    @property
    def url(self) -> str:
        return f"{self.base_url}{PATH}?{QUERY}"

    def codec(self) -> OpenAICodec:
        return OpenAICodec(self.audio_format, audio_input=self.options.audio_input())


def _prompt(env: Mapping[str, str]) -> str | None:
    raw = env.get("OPENAI_PROMPT", "").strip()
    if not raw:
        return None
    if len(raw) > MAX_PROMPT or any(ord(ch) < 0x20 and ch not in "\t\n" for ch in raw):
        raise ProviderConfigError(NAME, f"OPENAI_PROMPT must be plain text of at most {MAX_PROMPT} characters")
    return raw


def create(env: Mapping[str, str]) -> OpenAIProvider:
    """Configure from ``OPENAI_*`` variables; ``ProviderConfigError`` says what to fix."""
    key = opt.api_key(NAME, env, "OPENAI_API_KEY")
    model = opt.identifier(NAME, env, "OPENAI_MODEL", DEFAULT_MODEL)
    no_vad = model.startswith(NO_VAD_MODELS)
    turn = opt.choice(NAME, env, "OPENAI_TURN_DETECTION", ("server_vad", "semantic_vad", "none"),
                      "none" if no_vad else "server_vad")
    if no_vad and turn != "none":
        raise ProviderConfigError(NAME, f"{model} takes no server VAD; set OPENAI_TURN_DETECTION=none or unset it")
    server_vad = {
        "OPENAI_VAD_THRESHOLD": opt.number(NAME, env, "OPENAI_VAD_THRESHOLD", 0.0, 1.0),
        "OPENAI_VAD_PREFIX_PADDING_MS": opt.integer(NAME, env, "OPENAI_VAD_PREFIX_PADDING_MS", 0, 5000),
        "OPENAI_VAD_SILENCE_MS": opt.integer(NAME, env, "OPENAI_VAD_SILENCE_MS", 0, 10000),
    }
    eagerness = opt.choice(NAME, env, "OPENAI_VAD_EAGERNESS", ("low", "medium", "high", "auto"), "")
    for variable, value in server_vad.items():
        if value is not None and turn != "server_vad":
            raise ProviderConfigError(NAME, f"{variable} applies only with OPENAI_TURN_DETECTION=server_vad; "
                                            "unset one of them")
    if eagerness and turn != "semantic_vad":
        raise ProviderConfigError(NAME, "OPENAI_VAD_EAGERNESS applies only with OPENAI_TURN_DETECTION=semantic_vad; "
                                        "unset one of them")
    prompt = _prompt(env)
    if prompt is not None and model.startswith(NO_PROMPT_MODELS):
        raise ProviderConfigError(NAME, f"{model} takes no prompt; unset OPENAI_PROMPT")
    noise = opt.choice(NAME, env, "OPENAI_NOISE_REDUCTION", ("near_field", "far_field", "none"), "none")
    options = OpenAIOptions(
        model=model,
        language=opt.language(NAME, env, "OPENAI_LANGUAGE"),
        prompt=prompt,
        turn_detection=turn,
        vad_threshold=server_vad["OPENAI_VAD_THRESHOLD"],
        vad_prefix_padding_ms=server_vad["OPENAI_VAD_PREFIX_PADDING_MS"],
        vad_silence_ms=server_vad["OPENAI_VAD_SILENCE_MS"],
        vad_eagerness=eagerness or None,
        noise_reduction=None if noise == "none" else noise,
    )
    return OpenAIProvider(
        api_key=key,
        base_url=opt.base_url(NAME, env, "OPENAI_BASE_URL", DEFAULT_BASE_URL),
        options=options,
        audio_format=opt.audio_format(NAME, env, "OPENAI_FORMAT", (24000,)),
    )
