"""What the app factory mounts: the registry's routes, its worker and its checks.

:func:`extend` registers them (:mod:`sync.extensions`): the routes of the JSON
API and the supervisor pages, a worker that creates the registry's tables and
opens the device guard (its background writes are drained when it stops), the
device check every authenticated request passes, and the pages' CSRF token as
an intent check.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

from aiohttp import web

from device_registry import api, cli, pages, refusal_pages, schema, worker_pages, workers
from device_registry.context import REGISTRY, Registry
from device_registry.guard import BackgroundWrites, DeviceGuard
from sync import accounts
from sync.appkeys import CONFIG, STORE
from sync.extensions import Extensions
from sync.metrics import METRICS
from sync.scopes import User


def extend(ext: Extensions) -> None:
    """Register the device registry's routes, worker, device check, intent check, commands."""
    ext.routes.append(setup_routes)
    ext.workers.append(registry)
    ext.device_checks.append(device_check)
    ext.intent_checks.append(pages.proves_intent)  # the pages' forms carry CSRF tokens
    ext.cli_commands.append(cli.register)


def setup_routes(app: web.Application) -> None:
    """Mount the registry's JSON API and supervisor pages."""
    api.setup_routes(app)
    workers.setup_routes(app)
    pages.setup_routes(app)
    refusal_pages.setup_routes(app)
    worker_pages.setup_routes(app)


async def device_check(request: web.Request, user: User) -> str | None:
    """The guard's check (``sync.auth``): the device's serial, or a refusal."""
    return await request.app[REGISTRY].guard.check(request, user)


def _prepare(conn: sqlite3.Connection) -> bytes:
    schema.ensure(conn)
    return accounts.server_secret(conn, "device_registry_secret")


async def registry(app: web.Application) -> AsyncIterator[None]:
    """Worker: the registry's tables and device guard; its background writes drained at stop."""
    store = app[STORE]
    secret = await store.write_tx(_prepare)
    writes = BackgroundWrites(store)
    refusals = app[METRICS].device_refusals
    guard = DeviceGuard(
        store, app[CONFIG], writes, on_refused=lambda kind: refusals.labels(kind).inc()
    )
    app[REGISTRY] = Registry(guard, secret)
    app[workers.SET_SIZES] = workers.SetSizes()
    yield
    await writes.drain()
