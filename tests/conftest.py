from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from gateway.app import STREAM_PATH, Gateway
from gateway.calls import wait_idle
from gateway.config import Settings
from gateway.serve import serve_gateway


class RunningGateway:
    def __init__(self, gateway: Gateway, http_url: str) -> None:
        self.gateway = gateway
        self.http_url = http_url
        self.ws_url = http_url.replace("http://", "ws://", 1) + STREAM_PATH

    async def idle(self) -> None:
        await wait_idle(self.gateway.registry)


@asynccontextmanager
async def running_gateway(provider, sinks: Sequence, **settings) -> AsyncIterator[RunningGateway]:
    """A real Hypercorn server on 127.0.0.1, port 0, serving a Gateway."""
    settings.setdefault("max_busy", None)  # load shedding has its own tests (test_overload.py)
    gateway = Gateway(Settings(port=0, provider=provider.name, **settings), provider, sinks)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve_gateway, gateway, shutdown_trigger=stop.wait, grace=5))
        http = next(b for b in binds if b.startswith("http://127.0.0.1"))
        try:
            yield RunningGateway(gateway, http)
        finally:
            stop.set()


@pytest.fixture(scope="session")
def whisper():
    """The default ``whisper`` provider (providers.whisper); its model is loaded once
    per test session and shared, as in a served gateway, by every call."""
    from providers.whisper import create

    return create({})
