"""The core's readiness checks and scrape-time gauges: the stores and the audit trail.

Installed by the app factory once the stores are open (it knows which backend runs):

    store_size_bytes{store}     sqlite: the store file and its WAL; couchdb: the file
                                sizes CouchDB reports for the deployment's databases
    store_documents             live documents in the deployment's database
    audit_unchained_entries     entries recorded (read journal) but not yet in the chain
    audit_lag_seconds           the age of the oldest of them (0 when none)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from pathlib import Path

from aiohttp import web
from prometheus_client import Gauge

from sync import health
from sync.audit import AuditLog
from sync.errors import StoreUnavailable
from sync.metrics import METRICS
from sync.store.base import DocStore
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.layout import data_db, log_db, meta_db
from sync.store.couchdb.store import CouchStore
from sync.store.sqlite import SqliteStore


def _trivial(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


async def couch_up(client: CouchClient) -> None:
    """CouchDB's ``/_up`` says ok; a server without ``/_up`` (pouchdb-server) must answer ``/``."""
    answer = await client.json("GET", "/_up", accept=(200, 404))
    if isinstance(answer, dict) and answer.get("status") == "ok":
        return
    if isinstance(answer, dict) and answer.get("error") == "not_found":
        await client.json("GET", "/")
        return
    status = answer.get("status") if isinstance(answer, dict) else None
    raise StoreUnavailable(f"CouchDB at {client.endpoint.shown} is up but not ready ({status})")


def install(
    app: web.Application,
    db_name: str,
    sqlite: SqliteStore,
    documents: DocStore,
    audit: AuditLog,
    couch: CouchStore | None,
) -> None:
    health.add_check(app, "store", lambda: sqlite.read(_trivial))
    if couch is not None:
        client = couch.client
        health.add_check(app, "couchdb", lambda: couch_up(client))
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

    async def read_stores() -> None:
        size.labels("sqlite").set(_file_sizes(sqlite.path))
        if couch is not None:
            size.labels("couchdb").set(await _couch_sizes(couch, db_name))
        count.set((await documents.db_info(db_name, None)).doc_count)

    async def read_audit() -> None:
        waiting, oldest = audit.backlog()
        unchained.set(waiting)
        lag.set(0.0 if oldest is None else max(0.0, _age(oldest)))

    metrics.add_source(read_stores)
    metrics.add_source(read_audit)


def _file_sizes(db: Path) -> int:
    total = 0
    for part in (db, db.with_name(db.name + "-wal")):
        with contextlib.suppress(FileNotFoundError):
            total += part.stat().st_size
    return total


async def _couch_sizes(couch: CouchStore, db: str) -> int:
    """The ``sizes.file`` CouchDB reports for the databases of ``db`` (0 where it gives none)."""
    total = 0
    for name in (meta_db(couch.prefix, db), data_db(couch.prefix, db), log_db(couch.prefix, db)):
        info = await couch.client.json("GET", path(name), accept=(200, 404))
        sizes = info.get("sizes") if isinstance(info, dict) else None
        if isinstance(sizes, dict) and isinstance(sizes.get("file"), int):
            total += sizes["file"]
    return total


def _age(iso: str) -> float:
    return (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(iso)).total_seconds()
