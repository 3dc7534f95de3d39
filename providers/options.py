"""Vendor settings from environment-style mappings, each bad value a one-line fix.

Every reader takes the provider name (for the error), the mapping and the variable
name; an unset or empty variable means the default.  Errors are
``ProviderConfigError``s that say what to set, e.g.
``ELEVENLABS_VAD_THRESHOLD must be a number from 0.1 to 0.9, not 'high'``.
API keys are validated without ever being echoed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from urllib.parse import urlsplit

from .base import MULAW_8K, AudioFormat
from .errors import ProviderConfigError

__all__ = [
    "api_key",
    "base_url",
    "choice",
    "number",
    "integer",
    "boolean",
    "terms",
    "language",
    "identifier",
    "audio_format",
]

_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_LANGUAGE = re.compile(r"[a-z]{2,3}")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _raw(env: Mapping[str, str], key: str) -> str | None:
    value = env.get(key)
    if value is None:
        return None
    value = value.strip()
    return value or None


def api_key(provider: str, env: Mapping[str, str], key: str) -> str:
    """The key, checked for presence and for characters a header cannot carry."""
    value = env.get(key, "").strip()
    if not value:
        raise ProviderConfigError(provider, f"{key} is not set; export it or choose another provider")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) > 0x7E for ch in value):
        raise ProviderConfigError(provider, f"{key} contains spaces or non-ASCII characters; set it to the key alone")
    return value


def base_url(provider: str, env: Mapping[str, str], key: str, default: str) -> str:
    """``scheme://host[:port][/prefix]`` with no trailing slash; ``http(s)`` means ``ws(s)``."""
    raw = _raw(env, key)
    if raw is None:
        return default
    fix = f"{key} must look like wss://host[:port] (ws:// for a local test server), not {raw[:80]!r}"
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ProviderConfigError(provider, fix) from None
    scheme = {"wss": "wss", "https": "wss", "ws": "ws", "http": "ws"}.get(parts.scheme.lower())
    if scheme is None or not parts.hostname or parts.query or parts.fragment or parts.username or parts.password:
        raise ProviderConfigError(provider, fix)
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def choice(provider: str, env: Mapping[str, str], key: str, choices: Collection[str], default: str) -> str:
    raw = _raw(env, key)
    if raw is None:
        return default
    if raw.lower() not in choices:
        raise ProviderConfigError(provider, f"{key} must be one of {', '.join(choices)}, not {raw[:40]!r}")
    return raw.lower()


def number(provider: str, env: Mapping[str, str], key: str, low: float, high: float,
           default: float | None = None) -> float | None:
    raw = _raw(env, key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # NaN fails too
        raise ProviderConfigError(provider, f"{key} must be a number from {low:g} to {high:g}, not {raw[:40]!r}")
    return value


def text(env: Mapping[str, str], key: str) -> str | None:
    """``key``'s value without surrounding blanks; None when unset or blank."""
    return _raw(env, key)


def integer(provider: str, env: Mapping[str, str], key: str, low: int, high: int,
            default: int | None = None, *, what: str = "a whole number") -> int | None:
    raw = _raw(env, key)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and low <= int(raw) <= high):
        raise ProviderConfigError(provider, f"{key} must be {what} from {low} to {high}, not {raw[:40]!r}")
    return int(raw)


def boolean(provider: str, env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = _raw(env, key)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ProviderConfigError(provider, f"{key} must be true or false, not {raw[:40]!r}")


def terms(provider: str, env: Mapping[str, str], key: str, *, max_terms: int, max_length: int) -> tuple[str, ...]:
    """A comma-separated list of words or phrases (empty items dropped)."""
    raw = _raw(env, key)
    if raw is None:
        return ()
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    if len(items) > max_terms:
        raise ProviderConfigError(provider, f"{key} takes at most {max_terms} comma-separated terms, not {len(items)}")
    for item in items:
        if len(item) > max_length:
            raise ProviderConfigError(provider, f"{key}: each term must be at most {max_length} characters, "
                                                f"not {item[:40]!r}")
    return items


def language(provider: str, env: Mapping[str, str], key: str) -> str | None:
    """An ISO 639-1 or 639-3 code (``en``, ``fra``), or ``None``."""
    raw = _raw(env, key)
    if raw is None:
        return None
    if not _LANGUAGE.fullmatch(raw.lower()):
        raise ProviderConfigError(provider, f"{key} must be an ISO 639 language code such as 'en', not {raw[:40]!r}")
    return raw.lower()


def identifier(provider: str, env: Mapping[str, str], key: str, default: str) -> str:
    """A model name or similar token (letters, digits, ``._:-``)."""
    raw = _raw(env, key)
    if raw is None:
        return default
    if not _IDENTIFIER.fullmatch(raw):
        raise ProviderConfigError(provider, f"{key} must be a model name such as {default!r}, not {raw[:40]!r}")
    return raw


def audio_format(provider: str, env: Mapping[str, str], key: str, pcm16_rates: Collection[int]) -> AudioFormat:
    """``mulaw`` (8 kHz, the default: Twilio's audio as is) or ``pcm16:RATE``."""
    raw = _raw(env, key)
    if raw is None or raw.lower() == "mulaw":
        return MULAW_8K
    head, _, rate = raw.lower().partition(":")
    if head == "pcm16" and rate.isascii() and rate.isdigit() and int(rate) in pcm16_rates:
        return AudioFormat("pcm16", int(rate))
    rates = "|".join(str(r) for r in sorted(pcm16_rates))
    raise ProviderConfigError(provider, f"{key} must be 'mulaw' or 'pcm16:{{{rates}}}', not {raw[:40]!r}")
