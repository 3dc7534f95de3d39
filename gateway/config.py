"""Gateway settings, each declared once: type, default, flag, variable, help, validation.

Every field of ``Settings`` carries an ``Option`` (its attrs metadata).  From these
declarations come the flags of ``earpiece serve`` and ``earpiece demo``
(``add_setting_flags``), the reading of flags and ``EARPIECE_<FLAG>`` variables — a
flag beats its variable — with one-line ``ConfigError`` messages
(``Settings.from_sources``), and the per-call runtime configuration
(``Settings.call_config``: ``CallConfig`` with its ``TwilioLimits``).

A setting that feeds the call runtime takes its default from there (``actors.config``,
``providers.twilio``), so each default is written in exactly one place.

``TWILIO_AUTH_TOKEN`` and ``EARPIECE_API_TOKEN`` are environment only and held with
``repr=False``: never rendered.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
import cattrs

from actors.config import CallConfig, batch_ms_problem

__all__ = ["ConfigError", "Settings", "Option", "options", "add_setting_flags", "DEFAULT_PROVIDER"]


class ConfigError(Exception):
    """Bad configuration: the message is one line saying what to fix."""


#: The provider when none is named: offline Whisper, its model inside a PyPI wheel.
DEFAULT_PROVIDER = "whisper"

SERVE_AND_DEMO = ("serve", "demo")
SERVE = ("serve",)
_OFF = ("0", "0.0", "off")

# --- parsers: (flag, raw value given) -> value, or ConfigError naming the flag -----------


def _text(flag: str, raw: Any) -> str:
    return str(raw).strip()


def _whole(flag: str, raw: Any) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} must be a whole number, not {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{flag} must be positive, not {value}")
    return value


def _seconds(flag: str, raw: Any) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} must be a number of seconds, not {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{flag} must be a positive, finite number of seconds, not {raw!r}")
    return value


def _seconds_or_off(flag: str, raw: Any) -> float | None:
    return None if str(raw).strip() in _OFF else _seconds(flag, raw)


def _share(flag: str, raw: Any) -> float | None:
    """A share of one core in (0, 1]; 0 or off: no limit."""
    if str(raw).strip() in _OFF:
        return None
    try:
        value = float(str(raw))
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise ConfigError(f"{flag} must be a share of one core between 0 and 1, not {raw!r}")
    return value


def _port(flag: str, raw: Any) -> int:
    if str(raw).strip() == "0":
        return 0  # a free port chosen by the system (the demo and tests use it)
    port = _whole(flag, raw)
    if port > 65535:
        raise ConfigError(f"{flag} must be at most 65535, not {port}")
    return port


def _metrics_port(flag: str, raw: Any) -> int:
    value = int(raw) if str(raw).strip().isdigit() else 0
    if not 1 <= value <= 65535:
        raise ConfigError(f"{flag} must be a port number from 1 to 65535, not {raw!r}")
    return value


def _workers(flag: str, raw: Any) -> int:
    """``N`` or ``auto``: the number of cores this process may run on."""
    if str(raw).strip() == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    value = _whole(flag, raw)
    if value > 256:
        raise ConfigError(f"{flag} must be at most 256, not {value}")
    return value


def _batch_ms(flag: str, raw: Any) -> int:
    value = _whole(flag, raw)
    problem = batch_ms_problem(value)  # the call runtime's own rule
    if problem:
        raise ConfigError(f"{flag} {problem}")
    return value


def _names(flag: str, raw: Any) -> tuple[str, ...]:
    return tuple(name.strip() for name in str(raw).split(",") if name.strip())


def _sinks(flag: str, raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        from .sinks import split_sink_list  # a comma inside types= is not a new sink

        return split_sink_list(raw)
    return tuple(raw)  # repeated --sink


def _log_format(flag: str, raw: Any) -> str:
    if str(raw) not in ("text", "json"):
        raise ConfigError(f"{flag} must be text or json, not {str(raw)!r}")
    return str(raw)


def _public_url(flag: str, raw: Any) -> str:
    parts = urlsplit(str(raw))
    if parts.scheme not in ("https", "http", "wss", "ws") or not parts.netloc:
        shown = str(raw).rpartition("@")[2]  # never echo a user:password@
        raise ConfigError(f"{flag} must look like https://host[:port], not {shown!r}")
    if parts.username is not None or parts.query or parts.fragment:
        raise ConfigError(f"{flag} must be scheme://host[:port][/prefix], without user:password@, query or fragment")
    return str(raw).rstrip("/")


def _secret(flag: str, raw: Any) -> str:
    return str(raw)


# --- the declaration -----------------------------------------------------------------

_META = "earpiece.option"


@attrs.frozen
class Option:
    """How one setting is given and checked.

    ``flag``: the command-line flag (None: environment only); its argparse ``dest`` is
    the flag without dashes.  ``env``: the variable (``EARPIECE_<FLAG>`` unless named).  ``commands``: where the flag
    exists.  ``call``: the ``CallConfig`` field it feeds (``twilio_limits.NAME`` for a
    Twilio limit), whose default it shares.  ``shown``: the default as help shows it
    ("" hides it)."""

    parse: Callable[[str, Any], Any]
    help: str
    flag: str | None
    env: str
    commands: tuple[str, ...] = SERVE_AND_DEMO
    limit: bool = False
    call: str | None = None
    shown: str | None = None
    append: bool = False

    @property
    def dest(self) -> str | None:
        return self.flag.lstrip("-").replace("-", "_") if self.flag else None


def _call_default(path: str) -> Any:
    """The default of a ``CallConfig`` field, or of a field of its ``TwilioLimits``."""
    value: Any = CallConfig()
    for part in path.split("."):
        value = getattr(value, part)
    return value


def setting(parse: Callable[[str, Any], Any], help: str, *, default: Any = None, flag: str | None = "",
            env: str = "", commands: tuple[str, ...] = SERVE_AND_DEMO, limit: bool = False,
            call: str | None = None, shown: str | None = None, append: bool = False, secret: bool = False) -> Any:
    """An attrs field declaring one setting (``flag=""``: ``--field-name``; ``env=""``:
    ``EARPIECE_FIELD_NAME``; ``call``: its default is the call runtime's)."""
    option = Option(parse=parse, help=help, flag=flag, env=env, commands=commands, limit=limit, call=call,
                    shown=shown, append=append)
    value = _call_default(call) if call else default
    return attrs.field(default=value, repr=not secret, metadata={_META: option})


@attrs.frozen
class Settings:
    """What a gateway process runs with; built by ``from_sources`` (or directly, in tests)."""

    host: str = setting(_text, "bind address", default="127.0.0.1", commands=SERVE)
    port: int = setting(_port, "bind port; 0: any free port", default=8080, commands=SERVE)
    provider: str = setting(_text, "STT provider", default=DEFAULT_PROVIDER)
    fallback: tuple[str, ...] = setting(_names, "NAME[,NAME]: providers to fail over to, in order", default=())
    sinks: tuple[str, ...] = setting(
        _sinks, "stdout | jsonl:PATH | redis://HOST:PORT[/DB][?stream=S] | sqlite:PATH | webhook:URL | "
        "python:module:callable, each with ?types=… (repeatable; EARPIECE_SINKS: comma-separated)",
        default=("stdout",), flag="--sink", append=True)
    max_calls: int | None = setting(_whole, "refuse calls beyond N")
    public_url: str | None = setting(_public_url, "https://public.host the gateway is reached at")
    batch_ms: int = setting(_batch_ms, "audio batch towards the provider, ms", call="batch_ms")
    drain_timeout: float = setting(_seconds, "seconds to wait for the final transcript", call="drain_timeout")
    log_format: str = setting(_log_format, "text | json", default="text", shown="")
    max_message_bytes: int = setting(_whole, "largest WebSocket message; larger closes the socket with 1009",
                                     limit=True, call="twilio_limits.max_message_chars")
    max_payload_bytes: int = setting(_whole, "largest decoded audio payload of one media message", limit=True,
                                     call="twilio_limits.max_payload_bytes")
    max_custom_parameters: int = setting(_whole, "most customParameters in start", limit=True,
                                         call="twilio_limits.max_custom_parameters")
    max_custom_parameter_chars: int = setting(_whole, "longest name + value of one customParameter", limit=True,
                                              call="twilio_limits.max_custom_parameter_chars")
    max_call_duration: float = setting(_seconds, "seconds after which a call is ended", limit=True,
                                       call="max_call_duration")
    media_idle_timeout: float = setting(_seconds, "seconds without media that end a call", limit=True,
                                        call="media_idle_timeout")
    #: seconds the median live call may fall behind before new calls are refused; None: never
    max_lag: float | None = setting(_seconds_or_off, "also refuse new calls while the median call is this many "
                                    "seconds behind real time", shown="off")
    #: share of a core the event loop may use before new calls are refused; None: no limit (gateway/overload.py)
    max_busy: float | None = setting(_share, "refuse new calls while the event loop uses more than this share of "
                                     "a core; 0: never", default=0.9)
    certfile: str | None = setting(_text, "PEM certificate chain: serve HTTPS/WSS without a TLS proxy",
                                   commands=SERVE)
    keyfile: str | None = setting(_text, "PEM private key (unencrypted) for --certfile", commands=SERVE)
    #: Twilio's primary auth token; set means every Twilio request must be signed.
    twilio_auth_token: str | None = setting(_secret, "", flag=None, env="TWILIO_AUTH_TOKEN", secret=True)
    #: gateway processes on one port; --max-calls is per worker
    workers: int = setting(_workers, "gateway processes on the port, N or auto (cores); --max-calls is per "
                           "worker", default=1, commands=SERVE)
    drain_grace: float = setting(_seconds, "seconds live calls may go on after SIGTERM/SIGINT before they are "
                                 "ended", default=300.0, commands=SERVE)
    #: serve GET /metrics alone on 127.0.0.1:P as well
    metrics_port: int | None = setting(_metrics_port, "also serve GET /metrics alone on 127.0.0.1:P",
                                       commands=SERVE)
    #: Bearer token for the read routes (/metrics, /calls, /events, the dashboard)
    api_token: str | None = setting(_secret, "", flag=None, secret=True)
    #: seconds each sink gets at shutdown to deliver what it still holds
    sink_flush_timeout: float = setting(_seconds, "seconds each sink gets at shutdown to deliver what it holds",
                                        default=5.0)

    @property
    def provider_chain(self) -> tuple[str, ...]:
        """The primary provider, then the ``--fallback`` ones: each is created the same way."""
        return (self.provider, *self.fallback)

    @classmethod
    def from_sources(cls, flags: Mapping[str, object], env: Mapping[str, str]) -> Settings:
        """``flags`` holds parsed CLI values by ``dest`` (None or [] = not given); an
        unset or empty value leaves the default."""
        values: dict[str, Any] = {}
        for field, option in options():
            raw = flags.get(option.dest) if option.dest else None
            if raw is None or raw == []:
                raw = env.get(option.env)
            if raw is not None and str(raw).strip() != "":
                values[field.name] = option.parse(option.flag or option.env, raw)
        if bool(values.get("certfile")) != bool(values.get("keyfile")):
            raise ConfigError("--certfile and --keyfile go together: give both (PEM certificate chain and key)")
        return cls(**values)

    def call_config(self) -> CallConfig:
        """How each call runs: every setting declared with ``call=``."""
        nested: dict[str, Any] = {}
        for field, option in options():
            if option.call:
                *parents, leaf = option.call.split(".")
                target = nested
                for parent in parents:
                    target = target.setdefault(parent, {})
                target[leaf] = getattr(self, field.name)
        return _CALL_CONVERTER.structure(nested, CallConfig)


_CALL_CONVERTER = cattrs.Converter()


@functools.cache
def options() -> tuple[tuple[attrs.Attribute[Any], Option], ...]:
    """Every setting's field and declaration, in declaration order, its flag and
    variable named after the field where the declaration left them out."""
    named = []
    for field in attrs.fields(Settings):
        option = field.metadata[_META]
        flag = f"--{field.name.replace('_', '-')}" if option.flag == "" else option.flag
        named.append((field, attrs.evolve(option, flag=flag, env=option.env or f"EARPIECE_{field.name.upper()}")))
    return tuple(named)


def _shown(option: Option, default: Any) -> str:
    if option.shown is not None:
        return option.shown
    if default is None or default == ():
        return ""
    if isinstance(default, tuple):
        return ",".join(default)
    return f"{default:g}" if isinstance(default, float) else str(default)


def add_setting_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the flag of every setting ``command`` takes, its help ending in the default."""
    limits = parser.add_argument_group("limits (each also EARPIECE_<FLAG>)")
    for field, option in options():
        if option.flag is None or command not in option.commands:
            continue
        shown = _shown(option, field.default)
        help = f"{option.help} ({shown})" if shown else option.help
        (limits if option.limit else parser).add_argument(
            option.flag, dest=option.dest, help=help, action="append" if option.append else None)
