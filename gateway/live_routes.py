"""The read routes: ``GET /calls``, ``GET /events``, ``GET /calls/<call_sid>/events`` and the
dashboard (``GET /`` and its ``/static/`` files).

Server-Sent Events: ``id: <call_sid>:<seq>``, ``event: <type>``, ``data: <event JSON>``
(the JSONL sink's line), a comment every 15 s of quiet.  Where a stream starts:

* ``Last-Event-ID`` (the header a browser's EventSource sends when it reconnects), or
  ``?last_event_id=`` for a client that opens a new EventSource itself and cannot set
  headers (the header wins: an EventSource reconnects to its first URL): the events
  after that one, from the hub's ring (see ``LiveHub.backlog``);
* ``?replay=1``: every event the gateway still holds (recent calls' rings), then live;
* otherwise: live events from now on.

A one-call stream ends after that call's ``call_ended``; asked for a call that has
ended with nothing left to send, it answers 204 (an EventSource then stops
reconnecting).  Data routes are guarded by ``gateway.access.ReadAccess``; the dashboard's
static files carry no call data and are served to anyone.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from typing import Any

import orjson
from quart import Response, request
from quart_trio import QuartTrio

from .access import AccessDecision
from .live import parse_event_id, sse_stream, valid_sid
from .logs import peer_label

__all__ = ["install_live_routes", "STATIC_FILES"]

log = logging.getLogger("earpiece.live")

#: the dashboard: name → content type (nothing else under /static/ is served)
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
#: the page loads its own files only: no CDN, no inline script
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"}
TRUE = ("1", "true", "yes")


def _refusal(decision: AccessDecision) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="earpiece"'} if decision.status == 401 else {}
    return Response(decision.why + "\n", status=decision.status, content_type="text/plain", headers=headers)


def _static(name: str) -> bytes:
    return files("gateway").joinpath("static", name).read_bytes()


def install_live_routes(app: QuartTrio, gateway: Any) -> None:
    """Add the routes above to ``app``; ``gateway`` has ``live`` (a ``LiveHub``),
    ``read_access`` (a ``ReadAccess``) and ``registry`` (a ``CallRegistry``)."""
    _install_data_routes(app, gateway)
    _install_dashboard(app)


def _install_data_routes(app: QuartTrio, gateway: Any) -> None:
    @app.get("/calls")
    async def live_calls() -> Response:
        if (no := _refused(gateway)) is not None:
            return no
        return Response(orjson.dumps(list_calls(gateway)), content_type="application/json",
                        headers={"Cache-Control": "no-store"})

    @app.get("/events")
    async def every_call_events() -> Response:
        return _events(gateway, None)

    @app.get("/calls/<call_sid>/events")
    async def one_call_events(call_sid: str) -> Response:
        if not valid_sid(call_sid):
            return Response("no such call\n", status=404, content_type="text/plain")
        return _events(gateway, call_sid)


def _install_dashboard(app: QuartTrio) -> None:
    pages = {name: _static(name) for name in STATIC_FILES}

    @app.get("/")
    async def dashboard() -> Response:
        return Response(pages["index.html"], content_type=STATIC_FILES["index.html"], headers=PAGE_HEADERS)

    @app.get("/static/<name>")
    async def dashboard_file(name: str) -> Response:
        if name not in STATIC_FILES:
            return Response("not found\n", status=404, content_type="text/plain")
        return Response(pages[name], content_type=STATIC_FILES[name], headers=PAGE_HEADERS)


def _refused(gateway: Any) -> Response | None:
    """The refusal for this request under the gateway's read access, or None (allowed)."""
    decision = gateway.read_access.decide(request.scope)
    if decision.allowed:
        return None
    log.info("refused %s %s from %s: %d", request.method, request.path, peer_label(request.scope),
             decision.status)
    return _refusal(decision)


def _events(gateway: Any, call_sid: str | None) -> Response:
    """An SSE stream of every call (``call_sid`` None) or of one, from where the request asks."""
    if (no := _refused(gateway)) is not None:
        return no
    hub = gateway.live
    after = parse_event_id(request.headers.get("Last-Event-ID") or request.args.get("last_event_id"))
    replay = request.args.get("replay", "").lower() in TRUE
    if call_sid is not None and hub.ended(call_sid) and not hub.backlog(call_sid=call_sid, after=after,
                                                                        replay=replay):
        return Response("", status=204)  # nothing more will come: EventSource stops here
    stream = sse_stream(hub, call_sid=call_sid, after=after, replay=replay, label=peer_label(request.scope))
    response = Response(stream, content_type="text/event-stream", headers=SSE_HEADERS)
    response.timeout = None  # a stream lasts as long as its reader (Quart's default is 60 s)
    return response


def list_calls(gateway: Any) -> list[dict[str, Any]]:
    """``GET /calls``: the live calls that have started streaming, in arrival order.
    ``dropped_ms`` is the audio lost so far (``lost_ms``); ``call_ended`` has the final figure."""
    calls = []
    for record in list(gateway.registry.calls.values()):
        stream = record.stream
        if stream is None:
            continue
        stats = record.stats.statistics() if record.stats is not None else None
        ring = gateway.live.ring_of(stream.call_sid)
        params = stream.custom_parameters
        calls.append({
            "call_sid": stream.call_sid,
            "stream_sid": stream.stream_sid,
            "from": params.get("From"),
            "to": params.get("To"),
            "started": ring.started_at if ring else None,
            "provider": (ring.provider if ring and ring.provider else record.provider),
            "provider_state": ring.provider_state if ring else "connecting",
            "audio_ms": stats.audio_ms if stats else 0,
            "forwarded_ms": stats.forwarded_ms if stats else 0,
            "dropped_ms": lost_ms(stats) if stats else 0,
        })
    return calls


def lost_ms(stats: Any) -> int:
    """Audio of a live call that will never reach a provider (overflowed at the edge or out
    of the replay buffer).  ``audio_ms - forwarded_ms`` is not it while the call lives:
    it also counts audio on its way (the current batch, a reconnect's backlog)."""
    return min(stats.dropped_ms, stats.edge_dropped_ms + stats.replay_overflow_ms)
