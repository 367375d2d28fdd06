"""Opening the CouchDB document store from the configuration, and its background work.

Two loops run beside the server while the store is CouchDB:

- the *watcher* long-polls the change log database, so that a write made by
  any fieldsync instance wakes this instance's long-polling ``_changes`` of the
  places it wrote in (the log entries' ids name them);
- the *settler* appends the log entries of writes whose instance stopped half
  way (:meth:`CouchStore.settle`); one instance at a time (a lease in CouchDB).

Both ride out an unreachable CouchDB: they log it, wait, and carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

import structlog

from sync.config import Config, Endpoint
from sync.errors import FieldsyncError, PreconditionFailed
from sync.store.couchdb.client import CouchClient
from sync.store.couchdb.lease import Lease, new_owner, once_per_tick
from sync.store.couchdb.store import CouchStore


class Watchers(Protocol):
    """The long polls of this instance (:class:`sync.replication.notifier.Notifier`)."""

    def notify(self, db: str, places: frozenset[str] | None) -> None:
        """Wake the long polls of ``db`` that read one of ``places`` (None: all)."""

    def announcing(self, db: str, since: float) -> None:
        """Every write to ``db`` after ``since`` (event loop time) is notified from now on."""

    def unannounced(self, db: str) -> None:
        """Writes to ``db`` may go unnotified for a while."""


log = structlog.get_logger()

_RETRY_SECONDS = 2.0
_SETTLE_EVERY = 15.0


def open_store(config: Config, reserved: Iterable[str] = ()) -> CouchStore:
    """The document store; ``reserved``: the server's own CouchDB databases (their names
    after the prefix), which no fieldsync database may take."""
    client = open_client(config)
    return CouchStore(
        client,
        config.couchdb_prefix,
        config.couchdb_max_document_bytes,
        config.key_refresh_seconds,
        config.couchdb_lost_after_seconds,
        reserved,
        config.couchdb_base_min_changes,
    )


def open_client(config: Config) -> CouchClient:
    """A client of the configured CouchDB (or Cloudant, with its IAM tokens)."""
    assert config.couchdb_url is not None
    endpoint = Endpoint.parse(config.couchdb_url, config.couchdb_user, config.couchdb_password)
    authorization, invalidate = None, None
    if config.cloudant_apikey:
        from sync.store.couchdb.iam import IamTokenSource

        tokens = IamTokenSource(config.cloudant_apikey, config.cloudant_iam_url)
        authorization, invalidate = tokens.authorization, tokens.invalidate
        endpoint = Endpoint(endpoint.base)  # Cloudant takes IAM only: no Basic credentials
    return CouchClient(
        endpoint,
        authorization=authorization,
        invalidate=invalidate,
        max_in_flight=config.couchdb_max_in_flight,
        timeout=config.couchdb_timeout_seconds,
    )


@contextlib.asynccontextmanager
async def background(store: CouchStore, db: str, watchers: Watchers) -> AsyncIterator[None]:
    """Create ``db`` (now, or once CouchDB answers), and run the watcher and the settler."""
    made = await _create(store, db)  # usually at once: the server answers with its database
    task = asyncio.create_task(_run(store, db, watchers, made))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _run(store: CouchStore, db: str, watchers: Watchers, made: bool) -> None:
    while not made:
        await asyncio.sleep(_RETRY_SECONDS)
        made = await _create(store, db)
    await asyncio.gather(_watch(store, db, watchers), _settle(store, db))


async def _create(store: CouchStore, db: str) -> bool:
    """Create ``db`` unless it exists; False while CouchDB cannot be used."""
    try:
        await store.create_db(db)
    except PreconditionFailed:
        try:
            await store.ensure_design(db)
        except FieldsyncError as exc:
            log.warning("couchdb_unavailable", step="ensure_design", reason=exc.reason)
            return False
        return True
    except FieldsyncError as exc:
        log.warning("couchdb_unavailable", step="create_db", reason=exc.reason)
        return False
    log.info("couchdb_database_created", db=db)
    return True


async def _watch(store: CouchStore, db: str, watchers: Watchers) -> None:
    """Wake the long polls a write through any instance concerns.  From its first answer
    on, every later write is reported (it asks from where the last answer ended), so the
    long polls need not read again at their heartbeats; a failed request may have been a
    deleted database (asked from now on after it): they read again until it answers."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            places = await store.wait_for_change(db, 25.0)
        except FieldsyncError as exc:
            watchers.unannounced(db)
            log.warning("couchdb_unavailable", step="watch", reason=exc.reason)
            await asyncio.sleep(_RETRY_SECONDS)
            continue
        watchers.announcing(db, loop.time())
        if places is None or places:
            watchers.notify(db, places)


async def _settle(store: CouchStore, db: str) -> None:
    """One instance at a time sweeps (the holder of the lease ``settle:<db>``); settling is
    safe twice, so this only spares the others the work.  Taken over when its holder dies."""
    lease = Lease(store.client, store.prefix, f"settle:{db}", new_owner(), 4 * _SETTLE_EVERY)
    while True:
        await asyncio.sleep(_SETTLE_EVERY)
        if not await once_per_tick(lease):
            continue
        try:
            settled = await store.settle(db)
        except FieldsyncError as exc:
            log.warning("couchdb_unavailable", step="settle", reason=exc.reason)
            continue
        if settled:
            log.warning("couchdb_writes_settled", db=db, documents=settled)
