"""Gateway settings: every flag has an ``EARPIECE_<FLAG>`` variable; a flag beats it.

Limits (all flags, all with ``EARPIECE_`` variables; defaults chosen for a phone line):

=============================== ========= =================================================
``--max-message-bytes``         65536     one WebSocket message (Hypercorn closes 1009)
``--max-payload-bytes``         8000      decoded audio in one ``media`` message (1 s)
``--max-custom-parameters``     64        entries in ``start.customParameters``
``--max-custom-parameter-chars`` 1000     ``len(name) + len(value)`` of one of them
``--max-call-duration``         14400     seconds a call may last (4 h)
``--media-idle-timeout``        30        seconds without ``media`` that end a call
=============================== ========= =================================================

``TWILIO_AUTH_TOKEN`` (environment only) turns on ``X-Twilio-Signature`` checks; it is
held with ``repr=False`` and never rendered.  ``EARPIECE_API_TOKEN`` (environment only)
guards the live read routes (``gateway/access.py``); held the same way.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs

__all__ = ["ConfigError", "Settings"]

# Defaults of the limits above.  A Twilio media message is ~400 bytes; Twilio's own
# <Parameter> limit is name + value under 500 characters.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_PAYLOAD_BYTES = 8000
MAX_CUSTOM_PARAMETERS = 64
MAX_CUSTOM_PARAMETER_CHARS = 1000
MAX_CALL_DURATION = 4 * 3600.0
MEDIA_IDLE_TIMEOUT = 30.0
MAX_BUSY = 0.9  # of one core; see gateway/overload.py


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
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive, finite number of seconds, not {raw!r}")
    return value


def _share(name: str, raw: str | float | None, default: float) -> float | None:
    """A share of one core in (0, 1]; 0 or off: no limit."""
    if raw is None or str(raw).strip() == "":
        return default
    if str(raw).strip() in ("0", "0.0", "off"):
        return None
    try:
        value = float(str(raw))
    except ValueError:
        raise ConfigError(f"{name} must be a share of one core between 0 and 1, not {raw!r}") from None
    if not 0 < value <= 1:
        raise ConfigError(f"{name} must be a share of one core between 0 and 1, not {raw!r}")
    return value


def _workers(raw: object) -> int:
    """``--workers N|auto``: auto is the number of cores this process may run on."""
    if raw is None or str(raw).strip() == "":
        return 1
    if str(raw).strip() == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    value = _positive_int("--workers", str(raw), 1) or 1
    if value > 256:
        raise ConfigError(f"--workers must be at most 256, not {value}")
    return value


def _metrics_port(raw: object) -> int | None:
    if raw is None or str(raw).strip() == "":
        return None
    value = _positive_int("--metrics-port", str(raw), None)
    if value is None or value > 65535:
        raise ConfigError(f"--metrics-port must be a port number from 1 to 65535, not {raw!r}")
    return value


#: The provider when none is named: offline Whisper, its model inside a PyPI wheel.
DEFAULT_PROVIDER = "whisper"


@attrs.frozen
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    provider: str = DEFAULT_PROVIDER
    fallback: tuple[str, ...] = ()
    sinks: tuple[str, ...] = ("stdout",)
    max_calls: int | None = None
    public_url: str | None = None
    batch_ms: int = 100
    drain_timeout: float = 2.0
    log_format: str = "text"
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    max_custom_parameters: int = MAX_CUSTOM_PARAMETERS
    max_custom_parameter_chars: int = MAX_CUSTOM_PARAMETER_CHARS
    max_call_duration: float = MAX_CALL_DURATION
    media_idle_timeout: float = MEDIA_IDLE_TIMEOUT
    #: seconds the median live call may fall behind before new calls are refused; None: never
    max_lag: float | None = None
    #: share of a core the event loop may use before new calls are refused; None: no limit
    max_busy: float | None = MAX_BUSY
    certfile: str | None = None
    keyfile: str | None = None
    #: Twilio's primary auth token; set means every Twilio request must be signed.
    twilio_auth_token: str | None = attrs.field(default=None, repr=False)
    #: gateway processes on one port (--workers N|auto); --max-calls is per worker
    workers: int = 1
    #: seconds live calls may go on after SIGTERM/SIGINT before they are ended (--drain-grace)
    drain_grace: float = 300.0
    #: serve GET /metrics alone on 127.0.0.1:P as well (--metrics-port)
    metrics_port: int | None = None
    #: EARPIECE_API_TOKEN (environment only): Bearer token for the read routes (/metrics, ...)
    api_token: str | None = attrs.field(default=None, repr=False)
    #: seconds each sink gets at shutdown to deliver what it still holds
    sink_flush_timeout: float = 5.0

    @classmethod
    def from_sources(cls, flags: Mapping[str, object], env: Mapping[str, str]) -> Settings:
        """``flags`` holds parsed CLI values (None = not given)."""

        def pick(name: str) -> object:
            value = flags.get(name)
            if value is not None and value != []:
                return value
            return env.get(f"EARPIECE_{name.upper()}")

        raw_port = pick("port")
        # 0 asks the system for a free port (the demo and tests use it)
        port = 0 if str(raw_port).strip() == "0" else _positive_int("--port", raw_port, 8080)
        if port is not None and port > 65535:
            raise ConfigError(f"--port must be at most 65535, not {port}")
        sinks_raw = flags.get("sink") or env.get("EARPIECE_SINKS")
        if isinstance(sinks_raw, str):
            from .sinks import split_sink_list  # a comma inside types= is not a new sink

            sinks = split_sink_list(sinks_raw)
        else:
            sinks = tuple(sinks_raw or ("stdout",))
        fallback_raw = pick("fallback")
        fallback = tuple(s.strip() for s in str(fallback_raw).split(",") if s.strip()) if fallback_raw else ()
        public_url = pick("public_url")
        if public_url:
            parts = urlsplit(str(public_url))
            if parts.scheme not in ("https", "http", "wss", "ws") or not parts.netloc:
                shown = str(public_url).rpartition("@")[2]  # never echo a user:password@
                raise ConfigError(f"--public-url must look like https://host[:port], not {shown!r}")
            if parts.username is not None or parts.query or parts.fragment:
                raise ConfigError("--public-url must be scheme://host[:port][/prefix], without user:password@, "
                                  "query or fragment")
        batch_ms = _positive_int("--batch-ms", pick("batch_ms"), 100) or 100
        if batch_ms % 20 or batch_ms > 1000:
            raise ConfigError(f"--batch-ms must be a multiple of 20 up to 1000, not {batch_ms}")
        log_format = str(pick("log_format") or "text")
        if log_format not in ("text", "json"):
            raise ConfigError(f"--log-format must be text or json, not {log_format!r}")
        certfile, keyfile = pick("certfile"), pick("keyfile")
        if bool(certfile) != bool(keyfile):
            raise ConfigError("--certfile and --keyfile go together: give both (PEM certificate chain and key)")

        def limit(name: str, default: int) -> int:
            return _positive_int(f"--{name.replace('_', '-')}", pick(name), default) or default

        def seconds(name: str, default: float) -> float:
            return _positive_float(f"--{name.replace('_', '-')}", pick(name), default)

        raw_lag = pick("max_lag")
        off = raw_lag is not None and str(raw_lag).strip() in ("0", "0.0", "off")
        max_busy = _share("--max-busy", pick("max_busy"), MAX_BUSY)
        return cls(
            host=str(pick("host") or "127.0.0.1"),
            port=port if port is not None else 8080,
            provider=str(pick("provider") or DEFAULT_PROVIDER),
            fallback=fallback,
            sinks=sinks,
            max_calls=_positive_int("--max-calls", pick("max_calls"), None),
            public_url=str(public_url).rstrip("/") if public_url else None,
            batch_ms=batch_ms,
            drain_timeout=_positive_float("--drain-timeout", pick("drain_timeout"), 2.0),
            log_format=log_format,
            max_message_bytes=limit("max_message_bytes", MAX_MESSAGE_BYTES),
            max_payload_bytes=limit("max_payload_bytes", MAX_PAYLOAD_BYTES),
            max_custom_parameters=limit("max_custom_parameters", MAX_CUSTOM_PARAMETERS),
            max_custom_parameter_chars=limit("max_custom_parameter_chars", MAX_CUSTOM_PARAMETER_CHARS),
            max_call_duration=seconds("max_call_duration", MAX_CALL_DURATION),
            media_idle_timeout=seconds("media_idle_timeout", MEDIA_IDLE_TIMEOUT),
            max_lag=None if off or raw_lag is None else seconds("max_lag", 1.0),
            max_busy=max_busy,
            certfile=str(certfile) if certfile else None,
            keyfile=str(keyfile) if keyfile else None,
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            workers=_workers(pick("workers")),
            drain_grace=seconds("drain_grace", 300.0),
            metrics_port=_metrics_port(pick("metrics_port")),
            api_token=env.get("EARPIECE_API_TOKEN") or None,
            sink_flush_timeout=seconds("sink_flush_timeout", 5.0),
        )
