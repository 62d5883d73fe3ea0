"""Prometheus metrics: what every process exposes at ``/metrics``.

The API serves them on its own port (``GET /metrics``); each worker and the lake sink
serve them on ``WORKERS__METRICS_PORT`` (0: off; ``up`` gives each process a free port
and prints it, compose uses 9400 in every container). Names and labels:

* ``clipstream_messages_total{consumer,topic,outcome}``: records consumed, by outcome
  (``processed``, ``dead_lettered``);
* ``clipstream_queue_wait_seconds{consumer,topic}``: from a record's ``occurred_at`` to
  the moment its consumer took it up (on ``prompts`` this is the generation queue wait);
* ``clipstream_handler_seconds{consumer,topic}``: time spent handling one record, the
  per-stage latency (``prompts``: render; ``clips.generated``: moderation; …);
* ``clipstream_dead_letters_total{dlq,consumer}``: records sent to a dead-letter topic;
* ``clipstream_consumer_lag{group,topic,partition}``: records between the group's
  committed offset and the partition's end, for the partitions this process holds;
* ``clipstream_http_requests_total{method,route,status}`` and
  ``clipstream_http_request_seconds{method,route}``: the API's requests, by route
  template (``/v1/clips/{clip_id}``), never by raw path;
* gauges read when scraped: ``clipstream_outbox_pending``,
  ``clipstream_review_queue_depth{severity}``, ``clipstream_review_queue_oldest_seconds``,
  ``clipstream_ranking_replica_lag``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

log = logging.getLogger(__name__)

#: Seconds: 1 ms … 10 min, wide enough for a feed request and a GPU render alike.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

MESSAGES = Counter("clipstream_messages", "Records consumed, by outcome", ["consumer", "topic", "outcome"])
QUEUE_WAIT = Histogram(
    "clipstream_queue_wait_seconds",
    "From a record's occurred_at to its consumer taking it up",
    ["consumer", "topic"],
    buckets=LATENCY_BUCKETS,
)
HANDLER_SECONDS = Histogram(
    "clipstream_handler_seconds", "Time spent handling one record", ["consumer", "topic"], buckets=LATENCY_BUCKETS
)
DEAD_LETTERS = Counter("clipstream_dead_letters", "Records sent to a dead-letter topic", ["dlq", "consumer"])
CONSUMER_LAG = Gauge(
    "clipstream_consumer_lag",
    "Records between the group's committed offset and the partition's end",
    ["group", "topic", "partition"],
)
HTTP_REQUESTS = Counter("clipstream_http_requests", "API requests", ["method", "route", "status"])
HTTP_SECONDS = Histogram(
    "clipstream_http_request_seconds", "API request latency", ["method", "route"], buckets=LATENCY_BUCKETS
)


def record_consumed(consumer: str, topic: str, occurred_at: datetime | None) -> float:
    """Note a record taken up; returns the perf counter to pass to :func:`record_handled`."""
    if occurred_at is not None:
        wait = (datetime.now(UTC) - occurred_at).total_seconds()
        QUEUE_WAIT.labels(consumer, topic).observe(max(wait, 0.0))
    return time.perf_counter()


def record_handled(consumer: str, topic: str, outcome: str, started: float | None = None) -> None:
    MESSAGES.labels(consumer, topic, outcome).inc()
    if started is not None and outcome == "processed":
        HANDLER_SECONDS.labels(consumer, topic).observe(time.perf_counter() - started)


def set_lag(group: str, lags: Iterable[tuple[str, int, int]]) -> None:
    """Replace ``group``'s lag gauges with ``(topic, partition, lag)``: partitions this
    process no longer holds disappear rather than report a stale figure."""
    fresh = {(topic, str(partition)): lag for topic, partition, lag in lags}
    for labels in [s.labels for s in _samples(CONSUMER_LAG) if s.labels.get("group") == group]:
        key = (labels["topic"], labels["partition"])
        if key not in fresh:
            CONSUMER_LAG.remove(group, *key)
    for (topic, partition), lag in fresh.items():
        CONSUMER_LAG.labels(group, topic, partition).set(max(lag, 0))


def _samples(metric: Any) -> list[Any]:
    return [s for family in metric.collect() for s in family.samples]


class ScrapeGauges(Collector):
    """Gauges computed when scraped, from a callable returning
    ``{name: (help, labels, [(label values, value), …])}``; a failing callable leaves
    the gauges out of that scrape (logged) rather than failing the whole page."""

    def __init__(self, read: Callable[[], dict[str, tuple[str, list[str], list[tuple[list[str], float]]]]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            gauges = self.read()
        except Exception:  # one broken gauge must not hide the others
            log.exception("could not read the scrape-time gauges")
            return
        for name, (doc, labels, values) in gauges.items():
            family = GaugeMetricFamily(name, doc, labels=labels)
            for label_values, value in values:
                family.add_metric(label_values, value)
            yield family


def exposition(*extra: Collector) -> tuple[bytes, str]:
    """The metrics page (this process's metrics, then ``extra`` collectors') and its
    content type."""
    body = generate_latest(REGISTRY)
    if extra:
        registry = CollectorRegistry(auto_describe=False)
        for collector in extra:
            registry.register(collector)
        body += generate_latest(registry)
    return body, CONTENT_TYPE_LATEST


#: A probe: (healthy, what it saw).
Probe = Callable[[], tuple[bool, str]]


def probes_app(liveness: Probe | None = None, readiness: Probe | None = None) -> Callable[..., Any]:
    """A WSGI app: ``/healthz`` (liveness) and ``/readyz`` (readiness) answer 200 or 503
    with a JSON body (404 where no probe was given); every other path is the metrics page."""
    metrics_app = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        probe = liveness if path == "/healthz" else readiness
        if probe is None:  # nothing to check is not a pass: the probe is not served
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [f"{path} is not served by this process\n".encode()]
        try:
            ok, detail = probe()
        except Exception as exc:  # noqa: BLE001 — a failing probe is a failed probe, not a crash
            ok, detail = False, f"probe failed: {exc!r}"
        status = "200 OK" if ok else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
        return [json.dumps({"status": "ok" if ok else "unavailable", "detail": detail}).encode()]

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the base class's names
        pass


def serve(port: int, host: str = "0.0.0.0", liveness: Probe | None = None, readiness: Probe | None = None) -> bool:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``port`` from a background
    thread (0: not at all). A port already taken is logged and skipped: metrics are not
    worth stopping a worker for (its heartbeat file still tells its health)."""
    if not port:
        return False
    try:
        server = make_server(host, port, probes_app(liveness, readiness), _Server, handler_class=_QuietHandler)
    except OSError as exc:
        log.warning("metrics not served: port %d unavailable (%s)", port, exc)
        return False
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics and probes on http://%s:%d (/metrics, /healthz, /readyz)", host, port)
    return True


class LoopProbe:
    """Liveness of an asyncio process: :meth:`beat` is called from its event loop; the
    probe fails once no beat came for ``stale_s`` (the loop is blocked or dead)."""

    def __init__(self, stale_s: float) -> None:
        self.stale_s = stale_s
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def __call__(self) -> tuple[bool, str]:
        age = time.monotonic() - self.last
        return age < self.stale_s, f"event loop last beat {age:.1f}s ago"


class HttpMetrics:
    """Pure ASGI middleware counting requests by route template and timing them; a
    ``BaseHTTPMiddleware`` would cost a task and a queue per request."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            HTTP_REQUESTS.labels(method, template, str(status)).inc()
            HTTP_SECONDS.labels(method, template).observe(time.perf_counter() - started)
