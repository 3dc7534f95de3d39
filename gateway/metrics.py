"""``GET /metrics``: what a gateway did, in Prometheus text format (prometheus-client).

The names are part of the public contract (``earpiece_*``, see README "Metrics").  Where
each figure comes from:

* admissions and refusals are counted where they happen (``TwilioStreamEndpoint``, the
  voice webhook): ``earpiece_calls_active``, ``earpiece_calls_refused_total{why}``;
* provider sessions are counted as they open (``CountedProvider`` around each provider
  of the chain);
* everything else is derived from the events a call emits, by a ``CallObserver`` the
  endpoint puts first among the call's sinks: ``call_ended`` (reason, audio_ms,
  forwarded_ms, dropped_ms, sequence_gaps; so audio seconds are counted when a call
  ends), ``provider_error`` / ``provider_reconnected`` / ``provider_failover``, and each
  transcript, whose delay is measured against the time its last audio was read
  (``actors.stats.ArrivalClock``);
* the event loop's busy ratio comes from ``gateway.overload.OverloadGuard``, and the
  sinks' dropped events from whatever reports them (``SinkDropCounts``), both copied in
  by ``refresh`` once a second and before each scrape.

Several worker processes (``--workers N``): the parent sets ``PROMETHEUS_MULTIPROC_DIR``
before the workers import prometheus-client, every worker writes its figures there, and
a scrape of any worker (or of the parent's ``--metrics-port``) answers the sum over all
workers, the dead ones' counters included.  Two gauges are not sums:
``earpiece_calls_active`` is the sum over live workers, ``earpiece_event_loop_busy_ratio``
the busiest live worker's ratio.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from actors.stats import CallStats
from providers.base import AudioFormat, SttProvider, SttSession

from .access import ReadAccess

__all__ = ["GatewayMetrics", "CallObserver", "CountedProvider", "SinkDropCounts", "read_refusal",
           "metrics_app", "multiprocess_dir", "CONTENT_TYPE_LATEST", "DELAY_BUCKETS", "REFUSAL_REASONS"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: seconds; fine enough under a second for p50/p99 read off the buckets
DELAY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
#: ``why`` of ``earpiece_calls_refused_total``
REFUSAL_REASONS = ("max_calls", "overload", "signature", "draining")


def multiprocess_dir() -> str | None:
    """Where workers share their figures (set by ``earpiece serve --workers N``), or None."""
    return os.environ.get(MULTIPROC_ENV) or None


class SinkDropCounts(Protocol):
    """Anything that knows how many events each sink dropped since start (never
    decreasing), by the sink's name: the ``sink`` label."""

    def dropped_by_sink(self) -> Mapping[str, int]: ...


def read_refusal(headers: Iterable[tuple[bytes, bytes]], client_host: str | None,
                 token: str | None) -> tuple[int, str] | None:
    """The read routes' access rule (``gateway.access.ReadAccess``) for a request known
    by its headers and client address: None when allowed, else (status, body)."""
    scope = {"headers": list(headers), "client": (client_host, 0) if client_host else None}
    decision = ReadAccess(token).decide(scope)
    return None if decision.allowed else (decision.status, decision.why + "\n")


def _error_kind(error_type: str) -> str:
    """``ProviderConnectionError`` → ``connection`` (the ``kind`` label)."""
    kind = error_type.removeprefix("Provider").removesuffix("Error").lower()
    return kind or "error"


class GatewayMetrics:
    """One gateway process's metrics.  Single process: its own registry, so two
    gateways in one process (tests) never mix figures.  Multiprocess mode
    (``multiproc_dir``): values live in that directory and ``render`` sums them."""

    def __init__(self, multiproc_dir: str | None = None) -> None:
        self.multiproc_dir = multiproc_dir
        self.registry: CollectorRegistry | None = None if multiproc_dir else CollectorRegistry()
        reg = self.registry
        self.calls_active = Gauge("earpiece_calls_active", "Calls admitted and not yet ended",
                                  registry=reg, multiprocess_mode="livesum")
        self.calls = Counter("earpiece_calls_total", "Calls ended, by call_ended reason", ["reason"], registry=reg)
        self.refused = Counter("earpiece_calls_refused_total",
                               "Calls refused at the webhook or the stream upgrade", ["why"], registry=reg)
        self.audio_received = Counter("earpiece_audio_received_seconds_total",
                                      "Call audio received from Twilio (counted when a call ends)", registry=reg)
        self.audio_forwarded = Counter("earpiece_audio_forwarded_seconds_total",
                                       "Call audio some provider accepted (counted when a call ends)", registry=reg)
        self.audio_dropped = Counter("earpiece_audio_dropped_seconds_total",
                                     "Call audio that never reached a provider (counted when a call ends)",
                                     registry=reg)
        self.sessions = Counter("earpiece_provider_sessions_total", "Provider sessions opened", ["provider"],
                                registry=reg)
        self.provider_errors = Counter("earpiece_provider_errors_total", "Provider sessions that failed",
                                       ["provider", "kind"], registry=reg)
        self.reconnects = Counter("earpiece_provider_reconnects_total", "Provider sessions reopened after a failure",
                                  ["provider"], registry=reg)
        self.failovers = Counter("earpiece_provider_failovers_total", "Calls moved to the next provider",
                                 ["from_provider", "to_provider"], registry=reg)
        self.transcripts = Counter("earpiece_transcripts_total", "Transcript events emitted", ["provider", "kind"],
                                   registry=reg)
        self.transcription_delay = Histogram(
            "earpiece_transcription_delay_seconds",
            "Committed transcript: from reading its last audio to emitting it", ["provider"],
            buckets=DELAY_BUCKETS, registry=reg)
        self.first_partial_delay = Histogram(
            "earpiece_first_partial_delay_seconds",
            "First partial of an utterance: from reading its last audio to emitting it", ["provider"],
            buckets=DELAY_BUCKETS, registry=reg)
        self.sink_dropped = Counter("earpiece_sink_events_dropped_total", "Events a sink dropped", ["sink"],
                                    registry=reg)
        self.busy = Gauge("earpiece_event_loop_busy_ratio", "Share of a core the event loop thread used (0..1)",
                          registry=reg, multiprocess_mode="livemax")
        self.sequence_gaps = Counter("earpiece_twilio_sequence_gaps_total",
                                     "Twilio media sequence numbers skipped (counted when a call ends)", registry=reg)
        self._drop_sources: list[SinkDropCounts] = []
        self._drops_seen: dict[str, int] = {}
        self.calls_active.set(0)
        self.busy.set(0)

    # --- facts counted where they happen ------------------------------------------------

    def call_admitted(self) -> None:
        self.calls_active.inc()

    def call_released(self) -> None:
        self.calls_active.dec()

    def call_refused(self, why: str) -> None:
        self.refused.labels(why=why).inc()

    def counted(self, provider: SttProvider) -> CountedProvider:
        return CountedProvider(provider, self.session_opened)

    def session_opened(self, provider: str) -> None:
        self.sessions.labels(provider=provider).inc()

    def observe_call(self, stats: Callable[[], CallStats | None]) -> CallObserver:
        """The sink that turns one call's events into figures; ``stats`` gives the call's
        counters once its stream started (None before)."""
        return CallObserver(self, stats)

    # --- figures copied in periodically ----------------------------------------------------

    def watch_sink_drops(self, source: SinkDropCounts) -> None:
        self._drop_sources.append(source)

    def refresh(self, busy: float | None = None) -> None:
        """Copy in the event loop's busy ratio and the sinks' drop counts (cheap: a few
        dict entries; called once a second and before each scrape)."""
        if busy is not None:
            self.busy.set(busy)
        for source in self._drop_sources:
            for sink, dropped in source.dropped_by_sink().items():
                new = dropped - self._drops_seen.get(sink, 0)
                if new > 0:
                    self.sink_dropped.labels(sink=sink).inc(new)
                    self._drops_seen[sink] = dropped

    def render(self) -> bytes:
        """The text format: this process's figures, or every worker's summed."""
        if self.registry is not None:
            return generate_latest(self.registry)
        return render_multiprocess(self.multiproc_dir or "")


def render_multiprocess(path: str) -> bytes:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    return generate_latest(registry)


class CallObserver:
    """A sink (first of the call's sinks) that counts what the call's events say.  The
    first partial of each utterance is the first partial of the call or the first one
    after a committed transcript."""

    def __init__(self, metrics: GatewayMetrics, stats: Callable[[], CallStats | None]) -> None:
        self._metrics = metrics
        self._stats = stats
        self._utterance_open = False  # a partial of the current utterance was seen

    def _delay(self, event: Mapping[str, Any]) -> float:
        stats = self._stats()
        read_at = stats.arrivals.time_of(int(event["audio_end_ms"])) if stats is not None else None
        # no audio read at all (a transcript of nothing): no delay a caller could feel
        return 0.0 if read_at is None else max(0.0, trio.current_time() - read_at)

    async def emit(self, event: Mapping[str, Any]) -> None:
        m = self._metrics
        kind = event.get("type")
        if kind == "transcript":
            provider = str(event.get("provider", ""))
            m.transcripts.labels(provider=provider, kind=event["kind"]).inc()
            if event["kind"] == "committed":
                m.transcription_delay.labels(provider=provider).observe(self._delay(event))
                self._utterance_open = False
            elif not self._utterance_open:
                m.first_partial_delay.labels(provider=provider).observe(self._delay(event))
                self._utterance_open = True
        elif kind == "call_ended":
            m.calls.labels(reason=event["reason"]).inc()
            m.audio_received.inc(event["audio_ms"] / 1000)
            m.audio_forwarded.inc(event["forwarded_ms"] / 1000)
            m.audio_dropped.inc(event["dropped_ms"] / 1000)
            gaps = int(event.get("sequence_gaps", 0))
            if gaps:
                m.sequence_gaps.inc(gaps)
        elif kind == "provider_error":
            m.provider_errors.labels(provider=event["provider"], kind=_error_kind(str(event.get("error", "")))).inc()
        elif kind == "provider_reconnected":
            m.reconnects.labels(provider=event["provider"]).inc()
        elif kind == "provider_failover":
            m.failovers.labels(from_provider=event.get("from", ""), to_provider=event.get("to", "")).inc()

    async def aclose(self) -> None:
        return None


class CountedProvider:
    """``provider`` as an ``SttProvider``, counting each session that opens."""

    def __init__(self, provider: SttProvider, opened: Callable[[str], None]) -> None:
        self.inner = provider
        self.name: str = provider.name
        self.audio_format: AudioFormat = provider.audio_format
        self.chunk_ms: int | None = provider.chunk_ms
        self.keepalive_interval: float | None = provider.keepalive_interval
        self._opened = opened

    @asynccontextmanager
    async def open_session(self) -> AsyncIterator[SttSession]:
        async with self.inner.open_session() as session:
            self._opened(self.name)
            yield session


# --- the metrics port: /metrics alone ---------------------------------------------------


def metrics_app(render: Callable[[], bytes], token: str | None) -> Callable[..., Any]:
    """A tiny ASGI app serving ``GET /metrics`` (``--metrics-port``), guarded by
    ``read_refusal``; everything else is 404."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, content_type, body = 404, b"text/plain", b"not found: this port serves GET /metrics only\n"
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            client = scope.get("client")
            refusal = read_refusal(scope.get("headers", []), client[0] if client else None, token)
            if refusal is not None:
                status, body = refusal[0], refusal[1].encode()
            else:
                status, content_type, body = 200, CONTENT_TYPE_LATEST.encode(), render()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})

    return app


async def serve_metrics_port(render: Callable[[], bytes], token: str | None, port: int, *,
                             refresh: Callable[[], None] | None = None,
                             shutdown_trigger: Callable[[], Any] | None = None,
                             task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """``--metrics-port``: ``GET /metrics`` alone on 127.0.0.1:``port`` (loopback only,
    whatever ``--host`` is), until cancelled or ``shutdown_trigger`` returns.  Reports
    its ``http://`` URL through ``task_status``."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    def rendered() -> bytes:
        if refresh is not None:
            refresh()
        return render()

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0

    async def run(task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        await serve(metrics_app(rendered, token), config, mode="asgi",  # type: ignore[arg-type]
                    shutdown_trigger=shutdown_trigger or trio.sleep_forever, task_status=task_status)

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(run)
        task_status.started(binds[0] + "/metrics")
