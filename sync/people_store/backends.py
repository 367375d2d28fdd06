"""The one place that picks the accounts adapters (sync.people_store.ports) from the config.

    FIELDSYNC_COUCHDB_URL set  couchdb.CouchAccounts           (database ``<prefix>accounts``)
                               couchdb_limits.CouchLoginLimits (shared by every instance)
    otherwise                  embedded.EmbeddedAccounts       (the data dir's SQLite file)
                               limits.LocalLoginLimits         (this process's counters)

With CouchDB, the server adopts its data dir's users and places on start:
those CouchDB lacks are created, none is overwritten (``CouchAccounts.adopt``).
The start tries once; with CouchDB away it serves anyway (every
request answers 503 until CouchDB is back) and keeps trying in the background.
Until the copy lands, a name CouchDB lacks answers 503 "accounts are not ready
yet" (``AccountsNotReady``): never a 401, which would count against the
worker's login limit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from sync.audit import AuditLog
from sync.config import Config
from sync.errors import StoreUnavailable
from sync.people_store import embedded_tables
from sync.people_store.couchdb import CouchAccounts
from sync.people_store.couchdb_limits import CouchLoginLimits
from sync.people_store.embedded import EmbeddedAccounts, copy_all, mirror_into
from sync.people_store.limits import LocalLoginLimits
from sync.people_store.ports import AccountStore, LoginLimits
from sync.ratelimit import Limit
from sync.store.couchdb.running import open_client
from sync.store.sqlite import SqliteStore

log = structlog.get_logger("fieldsync.accounts")
ADOPT_RETRY = 2.0


@dataclass(frozen=True)
class AccountPorts:
    store: AccountStore
    limits: LoginLimits
    backend: str  # "embedded" or "couchdb", for the logs


@contextlib.asynccontextmanager
async def account_ports(
    config: Config,
    sqlite: SqliteStore,
    limits: dict[str, Limit],
    audit: AuditLog | None = None,
    *,
    adopt: bool = True,
) -> AsyncIterator[AccountPorts]:
    """The configured adapters, open for the ``async with``; ``adopt``: the server's start
    (the management commands skip it)."""
    if not config.couchdb_url:
        yield AccountPorts(EmbeddedAccounts(sqlite, audit), LocalLoginLimits(limits), "embedded")
        return
    client = open_client(config)
    try:
        store = CouchAccounts.for_prefix(client, config.couchdb_prefix, audit, mirror_into(sqlite))
        adopting = None
        if adopt and not await _adopted(store, sqlite):  # CouchDB away: in the background
            store.adopting(True)  # until then an unknown name answers 503, not 401
            adopting = asyncio.create_task(_adopt_until_done(store, sqlite))
        try:
            yield AccountPorts(store, CouchLoginLimits(client, store, limits), "couchdb")
        finally:
            if adopting is not None:
                adopting.cancel()
                await asyncio.gather(adopting, return_exceptions=True)
    finally:
        await client.close()


async def _adopted(store: CouchAccounts, sqlite: SqliteStore) -> bool:
    """Adopt the data dir's users and places; False when CouchDB cannot be reached."""
    users = await sqlite.read(embedded_tables.list_users)
    places = await sqlite.read(embedded_tables.list_places)
    try:
        adopted = await store.adopt(users, places)
    except StoreUnavailable as exc:
        log.warning("accounts_adopt_waiting", reason=exc.reason, retry_in=ADOPT_RETRY)
        return False
    if adopted:
        log.info("accounts_adopted", created=adopted)
    await copy_all(sqlite, await store.list_users(), await store.list_places())
    return True


async def _adopt_until_done(store: CouchAccounts, sqlite: SqliteStore) -> None:
    while True:
        await asyncio.sleep(ADOPT_RETRY)
        if await _adopted(store, sqlite):
            store.adopting(False)
            return
