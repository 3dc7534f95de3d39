"""The gateway's ASGI application: quart-trio for HTTP, a raw handler for the stream."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from actors.config import CallConfig
from actors.ports import Sink
from providers.base import SttProvider

from .calls import CallRegistry
from .config import Settings
from .twilio_socket import TwilioStreamEndpoint
from .twiml import connect_stream_twiml, reject_twiml

__all__ = ["Gateway", "STREAM_PATH"]

log = logging.getLogger("earpiece.gateway")

STREAM_PATH = "/twilio/stream"
STATUS_PATH = "/twilio/status"
TWIML_PARAMETERS = ("From", "To", "CallSid")


class Gateway:
    """One gateway process: settings, the configured provider, sinks, live calls.
    ``gateway`` itself is the ASGI callable Hypercorn serves."""

    def __init__(self, settings: Settings, provider: SttProvider, sinks: Sequence[Sink]) -> None:
        self.settings = settings
        self.provider = provider
        self.sinks = list(sinks)
        self.registry = CallRegistry(settings.max_calls)
        self.call_config = CallConfig(batch_ms=settings.batch_ms, drain_timeout=settings.drain_timeout)
        self.status_callbacks = 0
        self.stream_endpoint = TwilioStreamEndpoint(provider, self.sinks, self.registry, self.call_config)
        self.http = self._build_http_app()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["path"].rstrip("/") == STREAM_PATH:
            await self.stream_endpoint(scope, receive, send)
        else:
            await self.http(scope, receive, send)

    # --- URLs -------------------------------------------------------------------------

    def stream_url(self, headers: Any, host_url: str) -> str:
        """The ``wss://`` URL written into TwiML (and signed by Twilio)."""
        if self.settings.public_url:
            base = self.settings.public_url
        else:
            proto = (headers.get("X-Forwarded-Proto") or "").split(",")[0].strip()
            host = (headers.get("X-Forwarded-Host") or "").split(",")[0].strip() or headers.get("Host", "")
            scheme = proto or host_url.split("://", 1)[0]
            base = f"{scheme}://{host}"
        scheme, rest = base.split("://", 1)
        ws_scheme = {"https": "wss", "wss": "wss", "http": "ws", "ws": "ws"}[scheme]
        return f"{ws_scheme}://{rest}{STREAM_PATH}"

    # --- HTTP routes ------------------------------------------------------------------

    def _build_http_app(self) -> QuartTrio:
        app = QuartTrio("earpiece")
        gateway = self

        @app.post("/twilio/voice")
        async def voice() -> Response:
            form = await request.form
            if not gateway.registry.ready:
                log.warning("rejected call %s: gateway %s", form.get("CallSid", "?"),
                            "draining" if gateway.registry.draining else "full")
                return Response(reject_twiml("busy"), content_type="text/xml")
            params = {name: form[name] for name in TWIML_PARAMETERS if form.get(name)}
            url = gateway.stream_url(request.headers, request.host_url)
            return Response(connect_stream_twiml(url, params), content_type="text/xml")

        @app.post(STATUS_PATH)
        async def status() -> Response:
            form = await request.form
            gateway.status_callbacks += 1
            log.info("stream status %s for call %s stream %s%s", form.get("StreamEvent", "?"),
                     form.get("CallSid", "?"), form.get("StreamSid", "?"),
                     f": {form['StreamError']}" if form.get("StreamError") else "")
            return Response("", status=204)

        @app.get("/healthz")
        async def healthz() -> Response:
            return Response("ok\n", content_type="text/plain")

        @app.get("/readyz")
        async def readyz() -> Response:
            registry = gateway.registry
            if registry.ready:
                return Response("ready\n", content_type="text/plain")
            why = "draining" if registry.draining else f"full ({len(registry.calls)}/{registry.max_calls} calls)"
            return Response(f"not ready: {why}\n", status=503, content_type="text/plain")

        return app
