"""``earpiece``: serve | demo | call | providers | tail.

Bad configuration exits with status 2 and one line on stderr saying what to fix.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from importlib.resources import files
from pathlib import Path

import attrs
import trio

from providers.chain import ProviderChain
from providers.errors import ProviderConfigError
from providers.registry import available_providers, create_provider

from .config import ConfigError, Settings, add_setting_flags
from .sinks import SinkSpecError, check_sink_spec

__all__ = ["main", "build_parser", "configure"]

log = logging.getLogger("earpiece")


def sample_call_path() -> Path:
    return Path(str(files("gateway").joinpath("samples/sample_call.wav")))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="earpiece", description="Twilio Media Streams → realtime transcripts")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    add_setting_flags(serve, "serve")  # every flag and its help come from gateway.config.Settings

    demo = sub.add_parser("demo", help="transcribe a sample call offline, end to end")
    demo.add_argument("wav", nargs="?", help="any PCM WAV (default: the bundled sample call)")
    demo.add_argument("--fast", action="store_true", help="stream faster than real time")
    add_setting_flags(demo, "demo")

    call = sub.add_parser("call", help="stream one simulated Twilio call from a WAV")
    call.add_argument("wav")
    call.add_argument("--url", required=True, help="ws://HOST:PORT/twilio/stream")
    call.add_argument("--fast", action="store_true")
    call.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                      help="customParameters entry (repeatable)")

    sub.add_parser("providers", help="list providers, their audio format and credentials")

    calls = sub.add_parser("calls", help="list the calls a sqlite:PATH sink stored, or print one's transcript")
    calls.add_argument("db", metavar="sqlite:PATH")
    calls.add_argument("call_sid", nargs="?", metavar="CALL_SID", help="print this call's committed transcript")

    tail = sub.add_parser("tail", help="print the events of the redis:// sink's stream, as the stdout sink does")
    tail.add_argument("url", metavar="redis://HOST:PORT[/DB][?stream=NAME]")
    tail.add_argument("--group", help="read as this consumer group (created at --from if missing), acknowledging "
                                      "what was printed")
    tail.add_argument("--consumer", help="this reader's name in --group (earpiece-tail)")
    tail.add_argument("--from", dest="start", metavar="ID",
                      help="stream ID to start after: 0 (the default: everything kept) or $ (only new events)")
    return parser


def configure(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Settings, ProviderChain]:
    """Validate everything a gateway needs before it starts (ConfigError on any problem);
    returns the settings and the providers created: ``--provider``, then each
    ``--fallback`` in order."""
    settings = Settings.from_sources(vars(args), env)
    for spec in settings.sinks:
        check_sink_spec(spec)
    try:
        chain = ProviderChain(*(create_provider(name, env) for name in settings.provider_chain))
    except ProviderConfigError as exc:
        raise ConfigError(str(exc)) from None
    return settings, chain


class _JsonFormatter(logging.Formatter):
    """One JSON object per log line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        import orjson

        entry = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "pid": record.process, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def _setup_logging(level: int, log_format: str = "text", worker: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:  # a worker of --workers N says which process it is
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s"
                                               + ("[%(process)d]" if worker else "") + ": %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def _cmd_serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .serve import check_port_free, check_tls_files
    from .sinks import check_sinks
    from .workers import WORKER_FD_ENV, run_workers

    settings, chain = configure(args, env)
    check_tls_files(settings.certfile, settings.keyfile)
    # A worker of --workers N listens on the socket its parent bound and passed on.
    listen_fd = int(env[WORKER_FD_ENV]) if env.get(WORKER_FD_ENV) else None
    if listen_fd is None:
        check_port_free(settings.host, settings.port)
        if settings.metrics_port is not None:
            check_port_free("127.0.0.1", settings.metrics_port)
    else:
        settings = attrs.evolve(settings, metrics_port=None)  # the parent serves it, for every worker
    _setup_logging(logging.INFO, settings.log_format, worker=listen_fd is not None)
    if settings.workers > 1:
        trio.run(check_sinks, settings.sinks, env)  # only workers open sinks: a bad one stops here
        return run_workers(settings, getattr(args, "argv", ["serve"]), env)
    _warn_about_signatures(settings)
    trio.run(_serve_process, settings, chain, env, listen_fd)
    return 0


def _warn_about_signatures(settings: Settings) -> None:
    """Say loudly when anyone could stream audio in, or when signed URLs are rebuilt from headers."""
    if not settings.twilio_auth_token and not _is_loopback(settings.host):
        log.warning("TWILIO_AUTH_TOKEN is not set and %s is not loopback: ANYONE who finds this URL can "
                    "stream audio into it. Set TWILIO_AUTH_TOKEN to require Twilio signatures.", settings.host)
    elif settings.twilio_auth_token and not settings.public_url:
        log.warning("TWILIO_AUTH_TOKEN is set but --public-url is not: the URLs Twilio signed are rebuilt "
                    "from the Host / X-Forwarded-* headers, which any client can set. Set --public-url to "
                    "the https:// address Twilio uses.")


async def _serve_process(settings: Settings, chain: ProviderChain, env: Mapping[str, str],
                         listen_fd: int | None) -> None:
    """One serving process (alone, or one worker of ``--workers N``) until it is told to stop."""
    from .app import Gateway
    from .serve import serve_gateway
    from .sinks import open_sinks

    # Signals are ours from before the first request: a SIGTERM during start-up is a
    # clean shutdown too, not the default kill.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def signalled() -> None:
            async with trio.open_nursery() as either:
                async def signal_came() -> None:
                    async for _ in signals:
                        either.cancel_scope.cancel()

                either.start_soon(signal_came)
                if listen_fd is not None:
                    either.start_soon(_parent_gone, either.cancel_scope)

        async def signalled_again() -> None:  # a second signal: end the live calls now
            async for _ in signals:
                log.info("second signal: ending every live call now")
                return

        async with open_sinks(settings.sinks, env, flush_timeout=settings.sink_flush_timeout) as hub, \
                trio.open_nursery() as nursery:
            gateway = Gateway(settings, chain, [hub])
            binds = await nursery.start(partial(serve_gateway, gateway, shutdown_trigger=signalled,
                                                hurry_trigger=signalled_again, grace=settings.drain_grace,
                                                listen_fd=listen_fd))
            settle_collector()
            log.info("earpiece on %s provider=%s sinks=%s signatures=%s live-routes=%s", ", ".join(binds),
                     chain.primary.name, ",".join(hub.names),
                     "required" if settings.twilio_auth_token else "NOT checked",
                     gateway.read_access.describe())


def settle_collector() -> None:
    """Once serving: everything loaded so far lives as long as the process, so keep it out
    of the collector's passes, which otherwise re-scan it under load."""
    gc.collect()
    gc.freeze()
    # A call's objects are freed by reference counting, so full passes find nothing
    # and stall every call while they scan the heap, and young passes triggered by
    # calls' short-lived objects rescan every live call; rarer passes still collect
    # error paths' cycles (bench/RESULTS.md, "Why the fast paths exist").
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, GC_FULL_PASS_EVERY)


async def _parent_gone(scope: trio.CancelScope) -> None:
    """A worker whose supervising parent died drains and exits as on SIGTERM."""
    parent = os.getppid()
    while os.getppid() == parent:
        await trio.sleep(1.0)
    log.warning("the supervising parent (pid %d) is gone: draining", parent)
    scope.cancel()


GC_FULL_PASS_EVERY = 100  # middle-generation collections per full one (CPython's default: 10)
# Young-generation threshold (CPython's default: 700).  A call's short-lived objects
# (batches, events, trio's per-wait traps) are freed by reference counting, but their
# peaks crossed 700 net new objects several times a second, each pass scanning
# thousands of live call objects for nothing.  At 7000, 200 served calls: 13 young
# passes per run instead of ~230, the collector's share of the CPU < 1 % instead of
# 7-9 % (bench/RESULTS.md; bench/call_cpu.py --gc0, experiments.py gc_young_700).
GC_YOUNG_THRESHOLD = 7000


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
    if args.fast and args.drain_timeout is None and not env.get("EARPIECE_DRAIN_TIMEOUT"):
        # Faster than real time, the recognizer is still decoding most of the call when
        # it ends: give it the time it needs rather than cutting the transcript short.
        args.drain_timeout = "60"
    settings, chain = configure(args, env)
    # The demo's gateway is loopback-only and fed by our own simulator, never by Twilio.
    settings = attrs.evolve(settings, twilio_auth_token=None)
    _setup_logging(logging.WARNING)
    trio.run(run_demo, settings, chain, wav, args.fast)
    return 0


def _cmd_call(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import trio_websocket

    from actors.dsp import wav_to_mulaw_8k

    from .security import SIGNATURE_HEADER, compute_signature
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
    # Sign the upgrade as Twilio would when a token is at hand (a gateway that checks needs it).
    token = env.get("TWILIO_AUTH_TOKEN")
    headers = [(SIGNATURE_HEADER, compute_signature(token, args.url))] if token else []
    try:
        result = trio.run(lambda: simulate_call(args.url, mulaw, fast=args.fast, custom_parameters=params,
                                                extra_headers=headers))
    except trio_websocket.ConnectionRejected as exc:
        body = (exc.body or b"").decode("utf-8", "replace").strip()
        print(f"earpiece: error: the gateway refused the stream with HTTP {exc.status_code}: {body[:200]}",
              file=sys.stderr)
        return 1
    except (OSError, trio_websocket.HandshakeError) as exc:
        print(f"earpiece: error: cannot stream to {args.url}: {exc}", file=sys.stderr)
        return 1
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


def _cmd_tail(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .tail import tail_stream, tail_target

    tail_target(args.url)  # a bad URL exits 2 before anything connects
    if args.consumer and not args.group:
        raise ConfigError("--consumer needs --group")

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(tail_stream, args.url, group=args.group, consumer=args.consumer,
                                           start=args.start))
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

    from coredis.exceptions import RedisError

    _setup_logging(logging.WARNING)
    refused: list[BaseException] = []
    try:
        trio.run(main)
    except* RedisError as group:  # e.g. NOAUTH, WRONGTYPE: one line, not a traceback
        refused.extend(group.exceptions)
    if refused:
        reason = refused[0]
        while isinstance(reason, BaseExceptionGroup):
            reason = reason.exceptions[0]
        print(f"earpiece: error: Redis refused: {reason}", file=sys.stderr)
        return 1
    return 0


COMMANDS = {"serve": _cmd_serve, "demo": _cmd_demo, "call": _cmd_call, "providers": _cmd_providers,
            "tail": _cmd_tail}


def _cmd_calls(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .calls_cli import run_calls

    return run_calls(args.db, args.call_sid)


COMMANDS["calls"] = _cmd_calls


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --workers N workers run
    try:
        return COMMANDS[args.command](args, os.environ)
    except (ConfigError, SinkSpecError) as exc:
        print(f"earpiece: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``earpiece providers | head``): nothing left to say to it.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a command ended by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
