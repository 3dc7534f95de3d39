"""Serve a Gateway: Hypercorn (trio) for HTTP, the Twilio stream on its own socket
(``gateway.edge``); plain HTTP, or TLS with ``--certfile``/``--keyfile`` for
deployments without a terminating proxy."""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig

from providers.twilio import TwilioLimits

from .app import STREAM_PATH, Gateway
from .calls import DRAIN_SETTLE
from .config import ConfigError
from .edge import serve_edge
from .metrics import serve_metrics_port

__all__ = ["serve_gateway", "check_port_free", "check_tls_files", "hypercorn_config", "SHUTDOWN_GRACE"]

log = logging.getLogger("earpiece.gateway")

SHUTDOWN_GRACE = 10.0  # serve_gateway's grace when none is given; earpiece serve passes --drain-grace
METRICS_REFRESH = 1.0  # seconds between two copies of the sampled figures into /metrics


def hypercorn_config(host: str, port: int, *, max_message_bytes: int = TwilioLimits().max_message_chars,
                     certfile: str | None = None, keyfile: str | None = None,
                     listen_fd: int | None = None) -> HypercornConfig:
    """``max_message_bytes``: the limit Hypercorn applies to a WebSocket on any other path
    (closing with 1009); the Twilio stream, on the gateway's own socket (``gateway.edge``),
    applies the same setting itself.  ``certfile``/``keyfile``: serve HTTPS and WSS.
    ``listen_fd``: listen on this inherited socket instead of binding ``host:port``
    (a worker of ``--workers N``: ``gateway.workers`` made it)."""
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"] if listen_fd is None else [f"fd://{listen_fd}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.websocket_max_message_size = max_message_bytes
    config.graceful_timeout = SHUTDOWN_GRACE + 5
    if certfile is not None:
        config.certfile, config.keyfile = certfile, keyfile
        config.alpn_protocols = ["http/1.1"]  # Twilio's upgrade is HTTP/1.1
    return config


def check_tls_files(certfile: str | None, keyfile: str | None) -> None:
    """Load the certificate and key once before serving, so a bad or missing file is one
    clear line at start (ConfigError) rather than a traceback from Hypercorn."""
    if certfile is None and keyfile is None:
        return
    if not certfile or not keyfile:
        raise ConfigError("--certfile and --keyfile go together: give both (PEM certificate chain and key)")
    for flag, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        if not os.path.isfile(path):
            raise ConfigError(f"{flag} {path}: no such file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # the password callback answers instead of a terminal prompt for an encrypted key
        context.load_cert_chain(certfile, keyfile, password=lambda: b"")
    except ssl.SSLError as exc:  # an OSError too: catch it first
        raise ConfigError(f"--certfile {certfile} / --keyfile {keyfile} are not a matching, unencrypted PEM "
                          f"certificate and key ({exc.reason or exc})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read TLS files {certfile}, {keyfile}: {exc.strerror or exc}") from None


def check_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None


async def _signalled() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


async def serve_gateway(
    gateway: Gateway,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    hurry_trigger: Callable[[], Awaitable[None]] | None = None,
    grace: float = SHUTDOWN_GRACE,
    listen_fd: int | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown_trigger`` returns (default: SIGINT/SIGTERM); then stop
    taking calls at once (``/readyz`` 503, webhook ``<Reject>``, upgrade 503) while live
    calls go on for up to ``grace`` seconds — or until ``hurry_trigger`` returns (a
    second signal) — after which they are ended with reason ``shutdown`` (final
    transcripts first), and stop.  With ``settings.metrics_port``, ``/metrics`` is also
    served alone on 127.0.0.1 at that port."""
    settings = gateway.settings
    trigger = shutdown_trigger or _signalled

    async def shutdown() -> None:
        await trigger()
        log.info("shutting down: no new calls; %d live call(s) may go on for up to %g s",
                 len(gateway.registry.calls), grace)
        # Calls told to end get their final flush: at least the longest drain any
        # provider of the chain declares (an offline decoder's queue), plus a margin.
        slowest = gateway.chain.finalize_timeout()
        settle = DRAIN_SETTLE if slowest is None else max(DRAIN_SETTLE, slowest + 5.0)
        await gateway.registry.drain(grace, hurry_trigger, settle=settle)
        gateway.live.close()  # live readers got every call_ended; end their streams

    config = hypercorn_config(settings.host, settings.port, max_message_bytes=settings.max_message_bytes,
                              certfile=settings.certfile, keyfile=settings.keyfile, listen_fd=listen_fd)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gateway.overload.run)  # sheds load only when a limit is set; always measures
        nursery.start_soon(_refresh_metrics, gateway)
        if settings.metrics_port is not None:
            await nursery.start(partial(serve_metrics_port, gateway.metrics.render, settings.api_token,
                                        settings.metrics_port, refresh=lambda: gateway.metrics.refresh(
                                            gateway.overload.busy)))
        await serve_edge(gateway, config, STREAM_PATH, shutdown_trigger=shutdown, task_status=task_status)
        nursery.cancel_scope.cancel()


async def _refresh_metrics(gateway: Gateway) -> None:
    """Copy the busy ratio and sink drops into the metrics once a second: with several
    workers, a scrape reaches one of them and must see the others' recent figures."""
    while True:
        gateway.metrics.refresh(gateway.overload.busy)
        await trio.sleep(METRICS_REFRESH)
