"""``earpiece demo``: a gateway on a free loopback port, one simulated call into it."""

from __future__ import annotations

from pathlib import Path

import trio

from actors.dsp import wav_to_mulaw_8k
from providers.chain import ProviderChain

from .app import STREAM_PATH, Gateway
from .calls import wait_idle
from .config import Settings
from .serve import serve_gateway
from .simulator import simulate_call
from .sinks import open_sinks

__all__ = ["run_demo"]


async def run_demo(settings: Settings, chain: ProviderChain, wav: Path, fast: bool) -> None:
    mulaw = wav_to_mulaw_8k(wav)
    async with open_sinks(settings.sinks, flush_timeout=settings.sink_flush_timeout) as hub, \
            trio.open_nursery() as nursery:
        gateway = Gateway(settings, chain, [hub])
        stop_serving = trio.Event()
        binds = await nursery.start(lambda task_status: serve_gateway(
            gateway, shutdown_trigger=stop_serving.wait, task_status=task_status))
        http = binds[0]
        url = http.replace("http://", "ws://", 1) + STREAM_PATH
        await simulate_call(url, mulaw, fast=fast, custom_parameters={"From": "+15005550006",
                                                                      "To": "+15005550001"})
        await wait_idle(gateway.registry)
        stop_serving.set()
