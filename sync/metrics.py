"""Prometheus metrics of one app: counters kept as requests go, gauges read at scrape time.

Every app has its own ``CollectorRegistry`` (never the process-wide one: tests
run many apps in one process).  Names are prefixed ``fieldsync_``::

    http_requests_total{route,method,status}      route: the route's pattern, never a path
    http_request_duration_seconds{route,method}   histogram
    sync_requests_total{role,kind}                replication calls (changes, bulk_get, ...)
    sync_documents_total{role,direction}          served / received documents
    refused_requests_total{reason}                4xx answers, by their CouchDB error code
    device_refusals_total{reason}                 device_registry.verdict.Kind values
    login_failures_total                          wrong name or password (login or Basic)
    ... and whatever the scrape-time sources set (store size, audit lag, SMS queues)

Label values come from closed sets (route patterns, roles, error codes, kinds):
no database name, document id, user name or phone number ever becomes one.

Packages add scrape-time readings through :meth:`Metrics.add_source`: an async
callable run before each scrape that sets gauges it created in ``registry``.

See https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

import orjson
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

log = structlog.get_logger("fieldsync.metrics")

Source = Callable[[], Awaitable[None]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The route label of a request when its route's own pattern says too little (``/{db}/{tail}``).
ROUTE = web.RequestKey("metrics_route", str)
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "COPY"})
_ERROR_CODE = re.compile(r"^[a-z_]{1,40}$")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "fieldsync_http_requests",
            "HTTP requests answered, by route pattern, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "fieldsync_http_request_duration_seconds",
            "Time to answer a request (until its handler returned)",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.sync_requests = Counter(
            "fieldsync_sync_requests",
            "Replication requests by the caller's role and the kind of call",
            ["role", "kind"],
            registry=r,
        )
        self.sync_documents = Counter(
            "fieldsync_sync_documents",
            "Documents served to or received from replicating clients",
            ["role", "direction"],
            registry=r,
        )
        self.refused = Counter(
            "fieldsync_refused_requests",
            "Requests answered 4xx, by the answer's error code",
            ["reason"],
            registry=r,
        )
        self.device_refusals = Counter(
            "fieldsync_device_refusals",
            "Requests refused by the device check, by kind",
            ["reason"],
            registry=r,
        )
        self.login_failures = Counter(
            "fieldsync_login_failures",
            "Wrong name or password (session login or Basic auth)",
            registry=r,
        )
        self._sources: list[Source] = []

    def add_source(self, source: Source) -> None:
        """Register a reading taken before each scrape (it sets its own gauges)."""
        self._sources.append(source)

    async def render(self) -> bytes:
        """The text exposition format; a failing source leaves its gauges as they were."""
        for source in self._sources:
            try:
                await source()
            except Exception as exc:  # CouchDB away: one line per scrape, no traceback
                name = getattr(source, "__qualname__", "?")
                log.warning("metrics_source_failed", source=name, error=repr(exc)[:300])
        return generate_latest(self.registry)

    def answered(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "other"  # a client may send any word
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)


METRICS = web.AppKey("metrics", Metrics)


def setup(app: web.Application) -> Metrics:
    """Declare the metrics before the packages' ``setup`` (they may add sources)."""
    app[METRICS] = metrics = Metrics()
    return metrics


def of(request: web.Request) -> Metrics | None:
    return request.app.get(METRICS)


def sync_request(request: web.Request, role: str, kind: str) -> None:
    metrics = of(request)
    if metrics is not None:
        metrics.sync_requests.labels(role, kind).inc()


def documents(request: web.Request, role: str, direction: str, count: int) -> None:
    """``count`` documents ``served`` to, or ``received`` from, a replicating client."""
    metrics = of(request)
    if metrics is not None and count:
        metrics.sync_documents.labels(role, direction).inc(count)


def route_of(request: web.Request) -> str:
    """The route's pattern (``/api/v1/users/{name}``), never the path itself."""
    if ROUTE in request:
        return request[ROUTE]
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


def _error_code(response: web.StreamResponse) -> str:
    body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, bytes) or response.content_type != "application/json":
        return "other"
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "other"
    code = answer.get("error") if isinstance(answer, dict) else None
    return code if isinstance(code, str) and _ERROR_CODE.match(code) else "other"


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every answer (outside the error middleware: it sees rendered errors)."""
    metrics = of(request)
    if metrics is None:
        return await handler(request)
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects and the like, rendered by aiohttp itself
        _count(metrics, request, exc.status, "other", started)
        raise
    except BaseException:
        _count(metrics, request, 500, "", started)
        raise
    code = _error_code(response) if 400 <= response.status < 500 else ""
    _count(metrics, request, response.status, code, started)
    return response


def _count(metrics: Metrics, request: web.Request, status: int, code: str, started: float) -> None:
    metrics.answered(route_of(request), request.method, status, time.perf_counter() - started)
    if 400 <= status < 500:
        metrics.refused.labels(code or "other").inc()
