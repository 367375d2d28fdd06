"""What the app factory mounts: the registry's routes, tables and device check.

``setup(app)`` must run before the core's catch-all ``/{db}`` routes are added and
after its ``_resources`` context is appended: the registry's own context creates
its tables through the store and installs the device check in ``app[AUTH]``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

from aiohttp import web

from device_registry import api, pages, schema
from device_registry.context import REGISTRY, Registry
from device_registry.guard import BackgroundWrites, DeviceGuard
from sync import accounts
from sync.appkeys import AUTH, CONFIG, STORE
from sync.intent import INTENT_CHECKS
from sync.metrics import METRICS


def setup(app: web.Application) -> None:
    """Mount the device registry (routes, tables, device check)."""
    api.setup_routes(app)
    pages.setup_routes(app)
    app[INTENT_CHECKS].append(pages.proves_intent)  # the pages' forms carry CSRF tokens
    app.cleanup_ctx.append(_registry)


def _prepare(conn: sqlite3.Connection) -> bytes:
    schema.ensure(conn)
    return accounts.server_secret(conn, "device_registry_secret")


async def _registry(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    secret = await store.write_tx(_prepare)
    writes = BackgroundWrites(store)
    refusals = app[METRICS].device_refusals
    guard = DeviceGuard(
        store, app[CONFIG], writes, on_refused=lambda kind: refusals.labels(kind).inc()
    )
    app[REGISTRY] = Registry(guard, secret)
    app[AUTH].device_checks.append(guard.check)
    yield
    await writes.drain()
