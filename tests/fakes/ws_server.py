"""Harness for protocol-faithful fake provider servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import trio
import trio_websocket

__all__ = ["serve_fake"]


@asynccontextmanager
async def serve_fake(handler: Callable[[trio_websocket.WebSocketRequest], Awaitable[None]]) -> AsyncIterator[str]:
    """Serve ``handler`` (gets the upgrade request; accept or reject it) on a free
    loopback port; yields the ``ws://127.0.0.1:PORT`` base URL."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0,
                                             ssl_context=None))
        try:
            yield f"ws://127.0.0.1:{server.port}"
        finally:
            nursery.cancel_scope.cancel()
