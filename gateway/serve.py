"""Serve a Gateway with Hypercorn's trio worker."""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from .app import Gateway
from .config import ConfigError

__all__ = ["serve_gateway", "check_port_free", "hypercorn_config", "SHUTDOWN_GRACE"]

log = logging.getLogger("earpiece.gateway")

SHUTDOWN_GRACE = 10.0  # seconds calls get to finish after SIGTERM/SIGINT
MAX_WS_MESSAGE = 64 * 1024  # a Twilio media message is ~400 bytes


def hypercorn_config(host: str, port: int) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.websocket_max_message_size = MAX_WS_MESSAGE
    config.graceful_timeout = SHUTDOWN_GRACE + 5
    return config


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
    grace: float = SHUTDOWN_GRACE,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown_trigger`` returns (default: SIGINT/SIGTERM); then stop
    taking calls, let live calls drain for ``grace`` seconds and stop."""
    settings = gateway.settings
    trigger = shutdown_trigger or _signalled

    async def shutdown() -> None:
        await trigger()
        log.info("shutting down: draining %d call(s) for up to %g s", len(gateway.registry.calls), grace)
        await gateway.registry.drain(grace)

    await hypercorn_serve(gateway, hypercorn_config(settings.host, settings.port),  # type: ignore[arg-type]
                          shutdown_trigger=shutdown, task_status=task_status, mode="asgi")
