"""CouchDB as the core's readings see it (:mod:`sync.readings`).

Ready when ``/_up`` says so; its size is the file sizes CouchDB reports for the
deployment's databases.  And one gauge of its own::

    couchdb_lost_passed{kind}   log positions (``position``) and document versions
                                (``version``) this instance's readers passed over as
                                lost with a cluster copy (ADR 0001), since it started:
                                0 unless CouchDB lost a write only one copy took
    couchdb_bases{what}         since it started: changes this instance sent from places'
                                bases (``sent``), bases it made (``made``)
"""

from __future__ import annotations

from prometheus_client import Gauge

from sync.errors import StoreUnavailable
from sync.metrics import Metrics
from sync.readings import StoreReading
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.layout import data_db, log_db, meta_db
from sync.store.couchdb.store import CouchStore


def couch_reading(couch: CouchStore, db_name: str) -> StoreReading:
    """The ``couchdb`` readiness check and size."""
    client = couch.client
    return StoreReading(
        "couchdb", lambda: couch_up(client), "couchdb", lambda: _couch_sizes(couch, db_name)
    )


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


async def _couch_sizes(couch: CouchStore, db: str) -> int:
    """The ``sizes.file`` CouchDB reports for the databases of ``db`` (0 where it gives none)."""
    total = 0
    for name in (meta_db(couch.prefix, db), data_db(couch.prefix, db), log_db(couch.prefix, db)):
        info = await couch.client.json("GET", path(name), accept=(200, 404))
        sizes = info.get("sizes") if isinstance(info, dict) else None
        if isinstance(sizes, dict) and isinstance(sizes.get("file"), int):
            total += sizes["file"]
    return total


def watch_couch(metrics: Metrics, couch: CouchStore) -> None:
    """``fieldsync_couchdb_lost_passed`` and ``fieldsync_couchdb_bases``, read at each scrape."""
    passed = Gauge(
        "fieldsync_couchdb_lost_passed",
        "Change-log positions and document versions passed over as lost with a CouchDB "
        "cluster copy, since this instance started (each reader's pass counts)",
        ["kind"],
        registry=metrics.registry,
    )

    bases = Gauge(
        "fieldsync_couchdb_bases",
        "Since this instance started: changes it sent from places' bases (sent), and the "
        "bases it made (made)",
        ["what"],
        registry=metrics.registry,
    )

    async def read() -> None:
        for kind, count in couch.log.passed.items():
            passed.labels(kind).set(count)
        bases.labels("sent").set(couch.bases.used)
        bases.labels("made").set(couch.bases.made)

    metrics.add_source(read)
