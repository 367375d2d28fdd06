"""The core's readiness checks and scrape-time gauges: the stores and the audit trail.

Installed by the app factory once the stores are open; it knows which backend
runs and hands over each open store's :class:`StoreReading`
(:mod:`sync.store.readings` for the data dir's SQLite file,
:mod:`sync.store.couchdb.readings` for CouchDB):

    store_size_bytes{store}     sqlite: the store file and its WAL; couchdb: the file
                                sizes CouchDB reports for the deployment's databases
    store_documents             live documents in the deployment's database
    audit_unchained_entries     entries recorded (read journal) but not yet in the chain
    audit_lag_seconds           the age of the oldest of them (0 when none)
    longpolls_waiting           long-polling ``_changes`` of the deployment's database
                                waiting now (live phones on this instance)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import Gauge

from sync import health
from sync.audit import AuditLog
from sync.metrics import METRICS
from sync.replication.notifier import Notifier
from sync.store.base import DocStore


@dataclass(frozen=True)
class StoreReading:
    """How one open store says it is ready, and how many bytes it takes on disk."""

    check: str  # the readiness check's name
    ready: health.Check
    label: str  # its ``store`` label of ``fieldsync_store_size_bytes``
    size: Callable[[], Awaitable[int]]


def install(
    app: web.Application,
    db_name: str,
    stores: Sequence[StoreReading],
    documents: DocStore,
    audit: AuditLog,
    notifier: Notifier,
) -> None:
    for store in stores:
        health.add_check(app, store.check, store.ready)
    metrics = app[METRICS]
    registry = metrics.registry
    size = Gauge(
        "fieldsync_store_size_bytes", "Bytes the stores take on disk", ["store"], registry=registry
    )
    count = Gauge(
        "fieldsync_store_documents",
        "Live documents in the deployment's database",
        registry=registry,
    )
    unchained = Gauge(
        "fieldsync_audit_unchained_entries",
        "Audit entries recorded but not yet in the hash chain",
        registry=registry,
    )
    lag = Gauge(
        "fieldsync_audit_lag_seconds",
        "Age of the oldest audit entry not yet in the hash chain (0: none waits)",
        registry=registry,
    )

    live = Gauge(
        "fieldsync_longpolls_waiting",
        "Long-polling _changes requests of the deployment's database waiting now",
        registry=registry,
    )

    async def read_stores() -> None:
        for store in stores:
            size.labels(store.label).set(await store.size())
        count.set((await documents.db_info(db_name, None)).doc_count)
        live.set(notifier.waiting(db_name))

    async def read_audit() -> None:
        waiting, oldest = audit.backlog()
        unchained.set(waiting)
        lag.set(0.0 if oldest is None else max(0.0, _age(oldest)))

    metrics.add_source(read_stores)
    metrics.add_source(read_audit)


def _age(iso: str) -> float:
    return (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(iso)).total_seconds()
