"""Gateway settings: every flag has an ``EARPIECE_<FLAG>`` variable; a flag beats it."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs

__all__ = ["ConfigError", "Settings"]


class ConfigError(Exception):
    """Bad configuration: the message is one line saying what to fix."""


def _positive_int(name: str, raw: str | int | None, default: int | None) -> int | None:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, not {value}")
    return value


def _positive_float(name: str, raw: str | float | None, default: float) -> float:
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, not {value:g}")
    return value


@attrs.frozen
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    provider: str = "local"
    fallback: tuple[str, ...] = ()
    sinks: tuple[str, ...] = ("stdout",)
    max_calls: int | None = None
    public_url: str | None = None
    batch_ms: int = 100
    drain_timeout: float = 2.0
    log_format: str = "text"

    @classmethod
    def from_sources(cls, flags: Mapping[str, object], env: Mapping[str, str]) -> Settings:
        """``flags`` holds parsed CLI values (None = not given)."""

        def pick(name: str) -> object:
            value = flags.get(name)
            if value is not None and value != []:
                return value
            return env.get(f"EARPIECE_{name.upper()}")

        port = _positive_int("--port", pick("port"), 8080)
        if port is not None and port > 65535:
            raise ConfigError(f"--port must be at most 65535, not {port}")
        sinks_raw = flags.get("sink") or env.get("EARPIECE_SINKS")
        if isinstance(sinks_raw, str):
            sinks = tuple(s.strip() for s in sinks_raw.split(",") if s.strip())
        else:
            sinks = tuple(sinks_raw or ("stdout",))
        fallback_raw = pick("fallback")
        fallback = tuple(s.strip() for s in str(fallback_raw).split(",") if s.strip()) if fallback_raw else ()
        public_url = pick("public_url")
        if public_url:
            parts = urlsplit(str(public_url))
            if parts.scheme not in ("https", "http", "wss", "ws") or not parts.netloc:
                raise ConfigError(f"--public-url must look like https://host[:port], not {public_url!r}")
        batch_ms = _positive_int("--batch-ms", pick("batch_ms"), 100) or 100
        if batch_ms % 20 or batch_ms > 1000:
            raise ConfigError(f"--batch-ms must be a multiple of 20 up to 1000, not {batch_ms}")
        log_format = str(pick("log_format") or "text")
        if log_format not in ("text", "json"):
            raise ConfigError(f"--log-format must be text or json, not {log_format!r}")
        return cls(
            host=str(pick("host") or "127.0.0.1"),
            port=port if port is not None else 8080,
            provider=str(pick("provider") or "local"),
            fallback=fallback,
            sinks=sinks,
            max_calls=_positive_int("--max-calls", pick("max_calls"), None),
            public_url=str(public_url).rstrip("/") if public_url else None,
            batch_ms=batch_ms,
            drain_timeout=_positive_float("--drain-timeout", pick("drain_timeout"), 2.0),
            log_format=log_format,
        )
