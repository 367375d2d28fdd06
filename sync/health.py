"""Liveness, readiness and metrics: what a load balancer and Prometheus ask.

    GET /_up       200 {"status": "ok"} while the process answers (sync.replication.routes)
    GET /_ready    200 {"status": "ok", "checks": {"store": "ok", ...}}, or 503 with the
                   check that failed and why (the store answers a trivial query; with
                   CouchDB, the cluster answers ``/_up``)
    GET /metrics   Prometheus' text format; ``Authorization: Bearer <FIELDSYNC_METRICS_TOKEN>``
                   or a signed-in admin

Readiness checks are registered by whoever opens what they check (the app factory:
the store, CouchDB) with :func:`add_check`.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from sync.appkeys import CONFIG
from sync.errors import FieldsyncError, Forbidden, Unauthorized
from sync.http import json_response
from sync.metrics import METRICS
from sync.replication.routes import REPLICATION

Check = Callable[[], Awaitable[None]]  # raises when what it checks is not ready
READY_CHECKS = web.AppKey("ready_checks", dict[str, Check])
CHECK_SECONDS = 5.0


def add_check(app: web.Application, name: str, check: Check) -> None:
    app[READY_CHECKS][name] = check


async def _outcome(check: Check) -> str:
    try:
        await asyncio.wait_for(check(), CHECK_SECONDS)
    except TimeoutError:
        return f"failed: no answer within {CHECK_SECONDS:g} s"
    except FieldsyncError as exc:
        return f"failed: {exc.reason}"
    except Exception as exc:  # any failure is the answer, never a 500
        return f"failed: {type(exc).__name__}: {exc}"
    return "ok"


async def ready(request: web.Request) -> web.Response:
    checks = request.app.get(READY_CHECKS, {})
    if not checks:
        return json_response({"status": "starting", "checks": {}}, status=503)
    names = sorted(checks)
    outcomes = await asyncio.gather(*(_outcome(checks[name]) for name in names))
    answers = dict(zip(names, outcomes, strict=True))
    ok = all(outcome == "ok" for outcome in outcomes)
    return json_response(
        {"status": "ok" if ok else "unavailable", "checks": answers}, status=200 if ok else 503
    )


async def _allowed(request: web.Request) -> None:
    """The metrics token (constant-time), or a signed-in admin; else 401/403 that says why."""
    token = request.app[CONFIG].metrics_token
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        if token is None:
            raise Unauthorized("No metrics token is configured (FIELDSYNC_METRICS_TOKEN).")
        if not hmac.compare_digest(header[7:].strip().encode(), token.encode()):
            raise Unauthorized("Wrong metrics token.")
        return
    caller = await request.app[REPLICATION].auth.caller(request)
    if caller is None:
        hint = "Authorization: Bearer <FIELDSYNC_METRICS_TOKEN>"
        if token is None:
            hint = "a signed-in admin (no FIELDSYNC_METRICS_TOKEN is configured)"
        raise Unauthorized(f"Metrics need {hint}.")
    if not caller.is_admin:
        raise Forbidden("Only admins, or the metrics token, may read the metrics.")


async def metrics(request: web.Request) -> web.Response:
    await _allowed(request)
    body = await request.app[METRICS].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_PLAIN_0_0_4  # what every scraper reads
    return response


def setup_routes(app: web.Application) -> None:
    """Mount ``/_ready`` and ``/metrics``; the readiness checks are added at start."""
    app[READY_CHECKS] = {}
    app.router.add_get("/_ready", ready)
    app.router.add_get("/metrics", metrics)
