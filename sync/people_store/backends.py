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

A management command (``sync.people_store.commands``) runs on the same adapters,
with the data dir's file opened for it alone (:func:`command_ports`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from sync.audit import AuditLog
from sync.audit_store import embedded as embedded_audit
from sync.audit_store.embedded_journal import ServerChain
from sync.audit_store.links import ChainKey
from sync.config import Config
from sync.datakeys import embedded_admin
from sync.errors import StoreUnavailable
from sync.keys import load_master_key
from sync.people_store import embedded_tables
from sync.people_store.couchdb import CouchAccounts
from sync.people_store.couchdb_limits import CouchLoginLimits
from sync.people_store.embedded import EmbeddedAccounts, copy_all, mirror_into
from sync.people_store.limits import LocalLoginLimits
from sync.people_store.ports import AccountStore, LoginLimits
from sync.ratelimit import Limit
from sync.store.couchdb.running import open_client
from sync.store.schema import db_path
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
    (the management commands skip it, and their embedded adapter waits the server's bound
    out after a change instead of keeping answers: sync.people_store.embedded)."""
    if not config.couchdb_url:
        embedded = EmbeddedAccounts(
            sqlite, audit, config.accounts_cache_seconds, beside_server=not adopt
        )
        yield AccountPorts(embedded, LocalLoginLimits(limits), "embedded")
        return
    client = open_client(config)
    try:
        store = CouchAccounts.for_prefix(
            client,
            config.couchdb_prefix,
            audit,
            mirror_into(sqlite),
            config.accounts_cache_seconds,
        )
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


@contextlib.asynccontextmanager
async def command_ports(config: Config, *, audited: bool) -> AsyncIterator[AccountPorts]:
    """The adapters for one management command, on the data dir's file opened for it alone.

    ``audited``: the changes' entries go to the data dir's audit chain, made safe
    once the command's call is done.
    """
    store = SqliteStore(db_path(config.data_dir), readers=1)
    try:
        trail = await _trail(store, config) if audited else None
        async with account_ports(config, store, {}, trail, adopt=False) as ports:
            yield ports
        if trail is not None:
            await trail.flush()
    finally:
        await store.close()


async def _trail(store: SqliteStore, config: Config) -> AuditLog:
    """The data dir's audit chain, once the master key proves it opens this data dir."""
    master = load_master_key(config.key_file, create=False)

    def opened(conn: sqlite3.Connection) -> ChainKey:
        embedded_admin.check_master(conn, master)
        return embedded_audit.open_chain(conn, master)

    return AuditLog(ServerChain(store.write_tx, await store.write_tx(opened)))


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
