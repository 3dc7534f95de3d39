"""``earpiece``: serve | demo | call | providers.

Bad configuration exits with status 2 and one line on stderr saying what to fix.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path

import trio

from providers.base import SttProvider
from providers.errors import ProviderConfigError
from providers.registry import available_providers, create_provider

from .config import ConfigError, Settings
from .sinks import SinkSpecError, parse_sink_spec

__all__ = ["main", "build_parser", "configure"]

log = logging.getLogger("earpiece")


def sample_call_path() -> Path:
    return Path(str(files("gateway").joinpath("samples/sample_call.wav")))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="earpiece", description="Twilio Media Streams → realtime transcripts")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    _gateway_flags(serve)
    serve.add_argument("--host", help="bind address (127.0.0.1)")
    serve.add_argument("--port", help="bind port (8080)")

    demo = sub.add_parser("demo", help="transcribe a sample call offline, end to end")
    demo.add_argument("wav", nargs="?", help="any PCM WAV (default: the bundled sample call)")
    demo.add_argument("--fast", action="store_true", help="stream faster than real time")
    _gateway_flags(demo)

    call = sub.add_parser("call", help="stream one simulated Twilio call from a WAV")
    call.add_argument("wav")
    call.add_argument("--url", required=True, help="ws://HOST:PORT/twilio/stream")
    call.add_argument("--fast", action="store_true")
    call.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                      help="customParameters entry (repeatable)")

    sub.add_parser("providers", help="list providers, their audio format and credentials")
    return parser


def _gateway_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provider", help="STT provider (local)")
    parser.add_argument("--fallback", help="NAME[,NAME]: providers to fail over to")
    parser.add_argument("--sink", action="append", help="stdout | jsonl:PATH (repeatable)")
    parser.add_argument("--max-calls", dest="max_calls", help="refuse calls beyond N")
    parser.add_argument("--public-url", dest="public_url", help="https://public.host the gateway is reached at")
    parser.add_argument("--batch-ms", dest="batch_ms", help="audio batch towards the provider (100)")
    parser.add_argument("--drain-timeout", dest="drain_timeout", help="seconds to wait for the final transcript (2)")
    parser.add_argument("--log-format", dest="log_format", help="text | json")


def configure(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Settings, SttProvider]:
    """Validate everything a gateway needs before it starts (ConfigError on any problem)."""
    settings = Settings.from_sources(vars(args), env)
    for spec in settings.sinks:
        parse_sink_spec(spec)
    try:
        provider = create_provider(settings.provider, env)
        for name in settings.fallback:
            create_provider(name, env)
    except ProviderConfigError as exc:
        raise ConfigError(str(exc)) from None
    return settings, provider


def _setup_logging(level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _cmd_serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .app import Gateway
    from .serve import check_port_free, serve_gateway
    from .sinks import open_sinks

    settings, provider = configure(args, env)
    check_port_free(settings.host, settings.port)
    _setup_logging(logging.INFO)
    if not env.get("TWILIO_AUTH_TOKEN") and not _is_loopback(settings.host):
        log.warning("TWILIO_AUTH_TOKEN is not set and %s is not loopback: ANYONE who finds this URL can "
                    "stream audio into it. Set TWILIO_AUTH_TOKEN to require Twilio signatures.", settings.host)

    async def main() -> None:
        async with open_sinks(settings.sinks) as sinks:
            gateway = Gateway(settings, provider, sinks)
            log.info("earpiece on http://%s:%d provider=%s sinks=%s", settings.host, settings.port,
                     provider.name, ",".join(settings.sinks))
            await serve_gateway(gateway)

    trio.run(main)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cmd_demo(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .demo import run_demo

    wav = Path(args.wav) if args.wav else sample_call_path()
    if not wav.is_file():
        raise ConfigError(f"no such WAV file: {wav}")
    args.host, args.port = "127.0.0.1", "0"
    settings, provider = configure(args, env)
    _setup_logging(logging.WARNING)
    trio.run(run_demo, settings, provider, wav, args.fast)
    return 0


def _cmd_call(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from actors.dsp import wav_to_mulaw_8k

    from .simulator import simulate_call

    params: dict[str, str] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param must be KEY=VALUE, not {item!r}")
        params[key] = value
    if not args.url.startswith(("ws://", "wss://")):
        raise ConfigError(f"--url must start with ws:// or wss://, not {args.url!r}")
    try:
        mulaw = wav_to_mulaw_8k(args.wav)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    _setup_logging(logging.WARNING)
    result = trio.run(lambda: simulate_call(args.url, mulaw, fast=args.fast, custom_parameters=params))
    print(f"[{result.call_sid}] sent {result.frames_sent} media frames ({result.frames_sent * 20 / 1000:.1f} s)"
          + (f"; the gateway closed the stream early (code {result.close_code}: {result.close_reason})"
             if result.closed_by_gateway else ""))
    return 0


def _cmd_providers(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    rows = [("provider", "audio sent", "credentials", "description")]
    for name, spec in available_providers().items():
        if spec.key_env is None:
            cred = "none needed"
        else:
            cred = f"{spec.key_env} {'set' if spec.credentials_set(env) else 'NOT set'}"
        rows.append((name, str(spec.audio_format), cred, spec.description))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    return 0


COMMANDS = {"serve": _cmd_serve, "demo": _cmd_demo, "call": _cmd_call, "providers": _cmd_providers}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, os.environ)
    except (ConfigError, SinkSpecError) as exc:
        print(f"earpiece: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
