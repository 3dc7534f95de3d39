"""The HTTP and WebSocket edge of earpiece: the ``earpiece`` command, the gateway
process (Twilio's webhooks and Media Streams in, live calls, metrics, the dashboard),
the sinks (``gateway.sinks``) and the Twilio-side simulator.

The names below are the package's public surface.  They load on first use (PEP 562),
so ``earpiece providers`` or ``earpiece tail`` do not import the web stack.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "main",
    "Settings",
    "ConfigError",
    "Gateway",
    "STREAM_PATH",
    "serve_gateway",
    "run_workers",
    "TwilioStreamEndpoint",
    "SimulatedCall",
    "simulate_call",
    "post_voice_webhook",
]

#: public name → the module of this package that defines it
_HOMES = {
    "main": "cli",
    "Settings": "config",
    "ConfigError": "config",
    "Gateway": "app",
    "STREAM_PATH": "app",
    "serve_gateway": "serve",
    "run_workers": "workers",
    "TwilioStreamEndpoint": "stream_endpoint",
    "SimulatedCall": "simulator",
    "simulate_call": "simulator",
    "post_voice_webhook": "simulator",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
