"""What the app factory mounts: the registry's routes, its worker and its checks.

:func:`extend` registers them (:mod:`sync.extensions`): the routes of the JSON
API and the supervisor pages, a worker that creates the registry's tables and
opens the device port (``device_registry.backends``) and the device guard (its
background writes are drained when it stops), the
device check every authenticated request passes, and the pages' CSRF token as
an intent check.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from device_registry import api, cli, couchdb_docs, pages, refusal_pages, worker_pages, workers
from device_registry.backends import device_ports, pages_secret
from device_registry.context import REGISTRY, Registry
from device_registry.guard import DEFAULT_LIMITS, BackgroundWrites, DeviceGuard
from sync.appkeys import ACCOUNTS, CONFIG, STORE
from sync.extensions import Extensions
from sync.metrics import METRICS
from sync.scopes import User


def extend(ext: Extensions) -> None:
    """Register the device registry's routes, worker, device check, intent check, commands,
    and its CouchDB database's name."""
    ext.routes.append(setup_routes)
    ext.workers.append(registry)
    ext.device_checks.append(device_check)
    ext.intent_checks.append(pages.proves_intent)  # the pages' forms carry CSRF tokens
    ext.cli_commands.append(cli.register)
    ext.couch_databases.append(couchdb_docs.DB_NAME)


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


log = structlog.get_logger("fieldsync.devices")


async def registry(app: web.Application) -> AsyncIterator[None]:
    """Worker: the device port and guard; the guard's background writes drained at stop."""
    sqlite, config = app[STORE], app[CONFIG]
    async with device_ports(config, app[ACCOUNTS], dict(DEFAULT_LIMITS), sqlite) as ports:
        log.info("device_store", backend=ports.backend)
        secret = await pages_secret(ports, config, sqlite)
        writes = BackgroundWrites(ports.store)
        refusals = app[METRICS].device_refusals
        guard = DeviceGuard(
            ports.store,
            config,
            writes,
            limiter=ports.limits,
            on_refused=lambda kind: refusals.labels(kind).inc(),
        )
        app[REGISTRY] = Registry(guard, secret, ports.store)
        app[workers.SET_SIZES] = workers.SetSizes()
        try:
            yield
        finally:
            await writes.drain()
