"""The gateway's ASGI application: quart-trio for HTTP, a raw handler for the stream.

With a Twilio auth token (``TWILIO_AUTH_TOKEN``), the three doors Twilio uses —
``/twilio/voice``, ``/twilio/status`` and the upgrade of ``/twilio/stream`` — answer 403
and log one line unless ``X-Twilio-Signature`` is valid (``gateway/security.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from actors.ports import Sink
from providers.base import SttProvider
from providers.chain import ProviderChain

from .access import ReadAccess
from .calls import CallRegistry
from .config import Settings
from .live import LiveHub
from .live_routes import install_live_routes
from .metrics import CONTENT_TYPE_LATEST, GatewayMetrics, multiprocess_dir
from .overload import OverloadGuard
from .logs import peer_label, printable
from .security import (
    TwilioSignatureValidator,
    check_request,
    public_origin,
    request_params,
)
from .sinks import SinkHub
from .stream_endpoint import FORBIDDEN, TwilioStreamEndpoint
from .twiml import connect_stream_twiml, reject_twiml

__all__ = ["Gateway", "STREAM_PATH"]

log = logging.getLogger("earpiece.gateway")

STREAM_PATH = "/twilio/stream"
STATUS_PATH = "/twilio/status"
TWIML_PARAMETERS = ("From", "To", "CallSid")
#: Twilio's webhook bodies are a few kB of form fields.
MAX_WEBHOOK_BODY = 64 * 1024


class Gateway:
    """One gateway process: settings, the configured providers, sinks, live calls.
    ``gateway`` itself is the ASGI callable Hypercorn serves.

    ``providers``: every call's ``ProviderChain`` (``--provider``, then each
    ``--fallback`` failed over to in order); a provider alone is the chain of it."""

    def __init__(self, settings: Settings, providers: ProviderChain | SttProvider, sinks: Sequence[Sink], *,
                 twilio_auth_token: str | None = None) -> None:
        self.settings = settings
        self.chain = ProviderChain.of(providers)
        self.sinks = list(sinks)
        # --- live read routes: every call's events also feed the SSE hub (gateway/live.py)
        self.live = LiveHub()
        self.read_access = ReadAccess(settings.api_token)
        self.sinks.append(self.live.feed)
        # ---
        self.registry = CallRegistry(settings.max_calls)
        #: GET /metrics (gateway.metrics); summed over workers when they share a directory
        self.metrics = GatewayMetrics(multiprocess_dir())
        for sink in self.sinks:
            if isinstance(sink, SinkHub):
                self.metrics.watch_sink_drops(sink)
        #: load shedding, and the event loop's busy ratio for /metrics; run by serve_gateway
        self.overload = OverloadGuard(self.registry, settings.max_lag, settings.max_busy)
        token = twilio_auth_token or settings.twilio_auth_token
        #: None: requests are not checked (no token configured)
        self.validator = TwilioSignatureValidator(token) if token else None
        #: every call's runtime settings
        self.call_config = settings.call_config()
        self.status_callbacks = 0
        self.refused_requests = 0
        self.stream_endpoint = TwilioStreamEndpoint(
            self.chain, self.sinks, self.registry, self.call_config,
            authorize=self._authorize_stream if self.validator is not None else None, metrics=self.metrics)
        self.http = self._build_http_app()

    def __repr__(self) -> str:
        return (f"Gateway(provider={self.chain.primary.name!r}, calls={len(self.registry.calls)}, "
                f"signatures={'required' if self.validator else 'not checked'})")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["path"].rstrip("/") == STREAM_PATH:
            await self.stream_endpoint(scope, receive, send)
        else:
            await self.http(scope, receive, send)

    # --- URLs -------------------------------------------------------------------------

    def stream_url(self, scope: dict[str, Any]) -> str:
        """The ``wss://`` URL written into TwiML for the webhook request in ``scope``;
        Twilio signs exactly this URL when it opens the stream, and
        ``_authorize_stream`` rebuilds it the same way from the upgrade request."""
        return public_origin(scope, self.settings.public_url, websocket=True) + STREAM_PATH

    # --- signatures -------------------------------------------------------------------

    def _authorize_stream(self, scope: dict[str, Any]) -> str | None:
        assert self.validator is not None
        check = check_request(self.validator, scope, b"", self.settings.public_url)
        if not check.ok:
            self.refused_requests += 1
        return check.refusal

    async def _twilio_request(self) -> tuple[dict[str, str], Response | None]:
        """The webhook's fields, or a 403 (logged once) when its signature is required
        and not valid."""
        scope = request.scope
        body = await request.get_data() if request.method != "GET" else b""
        assert isinstance(body, bytes)
        if self.validator is not None:
            check = check_request(self.validator, scope, body, self.settings.public_url)
            if not check.ok:
                self.refused_requests += 1
                log.warning("refused %s %s from %s: %s", request.method, printable(request.path),
                            peer_label(scope), printable(check.refusal or ""))
                return {}, Response(FORBIDDEN, status=403, content_type="text/plain")
        return dict(request_params(scope, body)), None

    # --- HTTP routes ------------------------------------------------------------------

    def _build_http_app(self) -> QuartTrio:
        app = QuartTrio("earpiece")
        app.config["MAX_CONTENT_LENGTH"] = MAX_WEBHOOK_BODY
        app.add_url_rule("/twilio/voice", "voice", self._voice_webhook, methods=["POST", "GET"])
        app.add_url_rule(STATUS_PATH, "status", self._status_callback, methods=["POST", "GET"])
        app.add_url_rule("/healthz", "healthz", self._healthz, methods=["GET"])
        app.add_url_rule("/readyz", "readyz", self._readyz, methods=["GET"])
        install_live_routes(app, self)  # /calls, /events, /calls/<sid>/events, the dashboard at /
        app.add_url_rule("/metrics", "metrics", self._metrics_page, methods=["GET"])
        return app

    async def _voice_webhook(self) -> Response:
        """Twilio's voice webhook: TwiML that connects the call's audio to our stream URL,
        or ``busy`` when the gateway cannot take another call."""
        form, refused = await self._twilio_request()
        if refused is not None:
            self.metrics.call_refused("signature")
            return refused
        if not self.registry.ready:
            self.metrics.call_refused(self.registry.refusal_reason())
            log.warning("rejected call %s: gateway %s", printable(form.get("CallSid", "?")),
                        self.registry.why_not_ready())
            return Response(reject_twiml("busy"), content_type="text/xml")
        params = {name: form[name] for name in TWIML_PARAMETERS if form.get(name)}
        url = self.stream_url(request.scope)
        try:
            twiml = connect_stream_twiml(url, params)
        except ValueError as exc:  # a field TwiML cannot carry (control characters, 500+ chars)
            log.warning("refused call %s: %s", printable(form.get("CallSid", "?")), printable(str(exc)))
            return Response("bad request: a webhook field TwiML cannot carry\n", status=400,
                            content_type="text/plain")
        return Response(twiml, content_type="text/xml")

    async def _status_callback(self) -> Response:
        """Twilio's stream status callback: logged and counted."""
        form, refused = await self._twilio_request()
        if refused is not None:
            return refused
        self.status_callbacks += 1
        log.info("stream status %s for call %s stream %s%s", printable(form.get("StreamEvent", "?")),
                 printable(form.get("CallSid", "?")), printable(form.get("StreamSid", "?")),
                 f": {printable(form['StreamError'])}" if form.get("StreamError") else "")
        return Response("", status=204)

    async def _healthz(self) -> Response:
        return Response("ok\n", content_type="text/plain")

    async def _readyz(self) -> Response:
        if self.registry.ready:
            return Response("ready\n", content_type="text/plain")
        return Response(f"not ready: {self.registry.why_not_ready()}\n", status=503, content_type="text/plain")

    async def _metrics_page(self) -> Response:
        decision = self.read_access.decide(request.scope)
        if not decision.allowed:
            return Response(decision.why + "\n", status=decision.status, content_type="text/plain")
        self.metrics.refresh(self.overload.busy)
        return Response(self.metrics.render(), content_type=CONTENT_TYPE_LATEST)
