"""Deepgram provider: configuration from the environment, URL, auth, sessions.

``wss://api.deepgram.com/v1/listen?model=nova-3&encoding=mulaw&sample_rate=8000&...``
with ``Authorization: Token <DEEPGRAM_API_KEY>``.  ``DEEPGRAM_MODEL=flux-...`` selects
Flux on ``/v2/listen`` (see ``flux.py``).

| variable | default | query |
|---|---|---|
| ``DEEPGRAM_BASE_URL`` | ``wss://api.deepgram.com`` | ``ws://`` accepted |
| ``DEEPGRAM_MODEL`` | ``nova-3`` | ``model`` |
| ``DEEPGRAM_LANGUAGE`` | ``en`` (v1 only) | ``language`` |
| ``DEEPGRAM_ENCODING`` | ``mulaw`` (8 kHz, as Twilio sends it) or ``linear16`` | ``encoding`` |
| ``DEEPGRAM_SAMPLE_RATE`` | 8000 for mulaw, 16000 for linear16 | ``sample_rate`` |
| ``DEEPGRAM_ENDPOINTING`` | ``300`` ms, or ``false`` (v1) | ``endpointing`` |
| ``DEEPGRAM_UTTERANCE_END_MS`` | ``1000``, or ``false`` (v1) | ``utterance_end_ms`` |
| ``DEEPGRAM_SMART_FORMAT`` | ``true`` (v1) | ``smart_format`` |
| ``DEEPGRAM_KEYTERMS`` | none; comma-separated (nova-3, flux) | ``keyterm`` (repeated) |
| ``DEEPGRAM_EOT_THRESHOLD`` | vendor default (flux) | ``eot_threshold`` |
| ``DEEPGRAM_EOT_TIMEOUT_MS`` | vendor default (flux) | ``eot_timeout_ms`` |

Always sent: ``interim_results=true`` (partials), ``channels=1`` (v1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from urllib.parse import urlencode, urlsplit

import attrs

from .. import options as opt
from ..base import MULAW_8K, AudioFormat, SttCodec, SttSession
from ..errors import ProviderConfigError
from ..websocket import open_websocket_session
from .flux import FluxCodec
from .protocol import PROVIDER, DeepgramCodec

__all__ = ["DeepgramOptions", "DeepgramProvider", "create", "DEFAULT_BASE_URL"]

DEFAULT_BASE_URL = "wss://api.deepgram.com"
V1_PATH = "/v1/listen"
V2_PATH = "/v2/listen"
DEFAULT_MODEL = "nova-3"
NOVA_CHUNK_MS = 100  # Deepgram: 20-250 ms per send
FLUX_CHUNK_MS = 80  # Flux: 80 ms strongly recommended
KEEPALIVE_INTERVAL = 4.0  # Deepgram closes after 10 s without audio or KeepAlive (NET-0001)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _fail(detail: str) -> ProviderConfigError:
    return ProviderConfigError(PROVIDER, detail)


@attrs.frozen
class DeepgramOptions:
    """What goes into the query string.  ``endpointing``/``utterance_end_ms`` None = false."""

    model: str = DEFAULT_MODEL
    language: str | None = "en"
    encoding: str = "mulaw"
    sample_rate: int = 8000
    endpointing: int | None = 300
    utterance_end_ms: int | None = 1000
    smart_format: bool = True
    keyterms: tuple[str, ...] = ()
    eot_threshold: float | None = None
    eot_timeout_ms: int | None = None

    @property
    def flux(self) -> bool:
        return self.model.startswith("flux-")

    @property
    def audio_format(self) -> AudioFormat:
        return MULAW_8K if self.encoding == "mulaw" else AudioFormat("pcm16", self.sample_rate)

    def query(self) -> list[tuple[str, str]]:
        pairs = [("model", self.model), ("encoding", self.encoding), ("sample_rate", str(self.sample_rate))]
        if self.flux:
            if self.eot_threshold is not None:
                pairs.append(("eot_threshold", f"{self.eot_threshold:g}"))
            if self.eot_timeout_ms is not None:
                pairs.append(("eot_timeout_ms", str(self.eot_timeout_ms)))
        else:
            pairs.append(("channels", "1"))
            if self.language:
                pairs.append(("language", self.language))
            pairs.append(("interim_results", "true"))
            pairs.append(("endpointing", "false" if self.endpointing is None else str(self.endpointing)))
            if self.utterance_end_ms is not None:
                pairs.append(("utterance_end_ms", str(self.utterance_end_ms)))
            pairs.append(("smart_format", "true" if self.smart_format else "false"))
        pairs += [("keyterm", term) for term in self.keyterms]
        return pairs


@attrs.define
class DeepgramProvider:
    """A configured Deepgram provider; one WebSocket session per call."""

    api_key: str = attrs.field(repr=False)
    options: DeepgramOptions = attrs.field(factory=DeepgramOptions)
    base_url: str = DEFAULT_BASE_URL
    name: str = PROVIDER

    @property
    def audio_format(self) -> AudioFormat:
        return self.options.audio_format

    @property
    def chunk_ms(self) -> int:
        return FLUX_CHUNK_MS if self.options.flux else NOVA_CHUNK_MS

    @property
    def keepalive_interval(self) -> float | None:
        # Flux documents no KeepAlive; Twilio streams audio continuously anyway.
        return None if self.options.flux else KEEPALIVE_INTERVAL

    @property
    def url(self) -> str:
        path = V2_PATH if self.options.flux else V1_PATH
        return f"{self.base_url}{path}?{urlencode(self.options.query())}"

    def headers(self) -> list[tuple[str, str]]:
        return [("Authorization", f"Token {self.api_key}")]

    def make_codec(self) -> SttCodec:
        if self.options.flux:
            return FluxCodec(self.audio_format)
        return DeepgramCodec(self.audio_format)

    def open_session(self) -> AbstractAsyncContextManager[SttSession]:
        return open_websocket_session(self.name, self.make_codec(), self.url, self.headers())


# ----------------------------------------------------------------------- environment


def base_url(env: Mapping[str, str], key: str, default: str, provider: str) -> str:
    """``scheme://host[:port]``, scheme ws or wss (http/https mean the same); the
    documented path is appended, so a path here is a mistake."""
    raw = (env.get(key) or "").strip() or default
    parts = urlsplit(raw)
    scheme = {"wss": "wss", "https": "wss", "ws": "ws", "http": "ws"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProviderConfigError(provider, f"{key} must look like wss://host[:port], not {raw[:80]!r}")
    return f"{scheme}://{parts.netloc}"


def api_key(env: Mapping[str, str], key: str, provider: str) -> str:
    value = (env.get(key) or "").strip()
    if not value:
        raise ProviderConfigError(provider, f"{key} is not set; export it or choose another provider")
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise ProviderConfigError(provider, f"{key} contains spaces or control characters; copy the key again")
    return value


def _name(env: Mapping[str, str], key: str, default: str | None) -> str | None:
    raw = (env.get(key) or "").strip()
    if not raw:
        return default
    if not _NAME.match(raw):
        raise _fail(f"{key} must be a name like {default or 'en'!r}, not {raw!r}")
    return raw



def _int(env: Mapping[str, str], key: str, default: int | None, lo: int, hi: int,
         *, unit: str = "ms", can_disable: bool = False) -> int | None:
    raw = (env.get(key) or "").strip().lower()
    if not raw:
        return default
    if can_disable and raw in ("false", "no", "off"):
        return None
    off = " or false" if can_disable else ""
    try:
        value = int(raw)
    except ValueError:
        raise _fail(f"{key} must be a whole number of {unit}{off}, not {raw!r}") from None
    if not lo <= value <= hi:
        raise _fail(f"{key} must be between {lo} and {hi} {unit}{off}, not {value}")
    return value


def _keyterms(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    raw = env.get(key) or ""
    terms = tuple(t.strip() for t in raw.split(",") if t.strip())
    for term in terms:
        if len(term) > 100 or not term.isprintable():
            raise _fail(f"{key}: each comma-separated term must be printable and at most 100 characters")
    return terms


def options_from_env(env: Mapping[str, str]) -> DeepgramOptions:
    model = _name(env, "DEEPGRAM_MODEL", DEFAULT_MODEL) or DEFAULT_MODEL
    flux = model.startswith("flux-")
    encoding = (env.get("DEEPGRAM_ENCODING") or "mulaw").strip().lower()
    if encoding not in ("mulaw", "linear16"):
        raise _fail(f"DEEPGRAM_ENCODING must be mulaw (Twilio's audio, no conversion) or linear16, not {encoding!r}")
    if encoding == "mulaw":
        rate = _int(env, "DEEPGRAM_SAMPLE_RATE", 8000, 8000, 8000, unit="Hz")
    else:
        allowed = (8000, 16000, 24000, 44100, 48000) if flux else None
        rate = _int(env, "DEEPGRAM_SAMPLE_RATE", 16000, 8000, 48000, unit="Hz")
        if allowed and rate not in allowed:
            raise _fail(f"DEEPGRAM_SAMPLE_RATE for flux must be one of {', '.join(map(str, allowed))}")
    assert rate is not None
    keyterms = _keyterms(env, "DEEPGRAM_KEYTERMS")
    if keyterms and not (flux or model.startswith("nova-3")):
        raise _fail("DEEPGRAM_KEYTERMS needs a nova-3 or flux model; unset it or set DEEPGRAM_MODEL=nova-3")
    threshold_raw = (env.get("DEEPGRAM_EOT_THRESHOLD") or "").strip()
    threshold: float | None = None
    if threshold_raw:
        try:
            threshold = float(threshold_raw)
        except ValueError:
            threshold = -1.0
        if not 0.5 <= threshold <= 1.0:
            raise _fail(f"DEEPGRAM_EOT_THRESHOLD must be a number from 0.5 to 1.0, not {threshold_raw!r}")
    return DeepgramOptions(
        model=model,
        language=_name(env, "DEEPGRAM_LANGUAGE", "en"),
        encoding=encoding,
        sample_rate=rate,
        endpointing=_int(env, "DEEPGRAM_ENDPOINTING", 300, 0, 60_000, can_disable=True),
        utterance_end_ms=_int(env, "DEEPGRAM_UTTERANCE_END_MS", 1000, 1, 60_000, can_disable=True),
        smart_format=opt.boolean(PROVIDER, env, "DEEPGRAM_SMART_FORMAT", True),
        keyterms=keyterms,
        eot_threshold=threshold,
        eot_timeout_ms=_int(env, "DEEPGRAM_EOT_TIMEOUT_MS", None, 500, 60_000),
    )


def create(env: Mapping[str, str]) -> DeepgramProvider:
    """The registry's factory: raises ``ProviderConfigError`` (one line, never the key)."""
    return DeepgramProvider(
        api_key=api_key(env, "DEEPGRAM_API_KEY", PROVIDER),
        options=options_from_env(env),
        base_url=base_url(env, "DEEPGRAM_BASE_URL", DEFAULT_BASE_URL, PROVIDER),
    )
