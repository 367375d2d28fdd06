"""The one place that chooses the data-key adapter (:mod:`sync.datakeys.ports`).

    FIELDSYNC_COUCHDB_URL set     sync.datakeys.couchdb   (database ``<prefix>keys``)
    otherwise                     sync.datakeys.embedded  (the data dir's SQLite file)

With CouchDB, every instance seals and opens documents with the same keys, so a
document written through one instance reads through any other; each instance
needs only the master key and the CouchDB URL, not a copy of another's data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import structlog

from sync.config import Config
from sync.couchaudit import rewrap_chain_key
from sync.datakeys.couchdb import DB_NAME, CouchDataKeys
from sync.datakeys.embedded import EmbeddedDataKeys
from sync.datakeys.ports import DataKeyStore, StoredKey
from sync.errors import StoreUnavailable
from sync.keyadmin import CHECKED_AT_START, DataKey, describe, opens
from sync.keys import KeyError_, MasterKey
from sync.store.couchdb.client import CouchClient
from sync.store.couchdb.running import open_client
from sync.store.schema import connections, db_path

log = structlog.get_logger("fieldsync.keys")
T = TypeVar("T")


@contextlib.asynccontextmanager
async def data_key_store(config: Config, master: MasterKey) -> AsyncIterator[DataKeyStore]:
    """The configured adapter, open for the ``async with`` (the server's event loop).

    With CouchDB, a master key that does not open the keys already there is
    refused here (if CouchDB answers), before anything is sealed (the embedded store is checked by
    :func:`sync.datakeys.embedded_admin.check_master` on the file).
    """
    if config.couchdb_url:
        client = open_client(config)
        try:
            keys = CouchDataKeys.for_prefix(client, config.couchdb_prefix)
            await _check_if_reachable(keys, master, config.couchdb_prefix)
            yield keys
        finally:
            await client.close()
    else:
        yield embedded(config.data_dir)


async def _check_if_reachable(keys: CouchDataKeys, master: MasterKey, prefix: str) -> None:
    """Check the master key now if CouchDB answers; if it is away, the first key used is
    the check (a key the master key cannot unwrap is refused there, by name)."""
    try:
        stored = await keys.all_async()
    except StoreUnavailable:
        log.warning("data_keys_not_checked", reason="CouchDB cannot be reached yet")
        return
    check_opened(stored, master, f"CouchDB database {prefix}keys")


def on_couchdb(config: Config, work: Callable[[CouchClient], Awaitable[T]]) -> T:
    """Run ``work`` with a client of the configured CouchDB (the ``keys`` commands)."""

    async def run() -> T:
        client = open_client(config)
        try:
            return await work(client)
        finally:
            await client.close()

    return asyncio.run(run())


def couch_keys_stored(config: Config) -> list[StoredKey]:
    """The data keys in CouchDB, as stored (wrapped)."""

    async def listed(client: CouchClient) -> list[StoredKey]:
        return await CouchDataKeys(client, config.couchdb_prefix + DB_NAME, _loop()).all_async()

    return on_couchdb(config, listed)


def couch_keys(config: Config, master: MasterKey) -> list[DataKey]:
    """The data keys in CouchDB, each with whether ``master`` opens it (``keys list``)."""

    async def listed(client: CouchClient) -> list[StoredKey]:
        return await CouchDataKeys(client, config.couchdb_prefix + DB_NAME, _loop()).all_async()

    stored = on_couchdb(config, listed)
    return [DataKey(k.place, k.version, k.created, opens(master, k)) for k in stored]


def couch_rewrap(config: Config, old: MasterKey, new: MasterKey) -> tuple[int, int]:
    """Re-wrap CouchDB's data keys and the shared audit chain key under ``new``."""

    async def rewrapped(client: CouchClient) -> tuple[int, int]:
        keys = CouchDataKeys(client, config.couchdb_prefix + DB_NAME, _loop())
        done = await keys.rewrap_async(old, new)
        await rewrap_chain_key(client, config.couchdb_prefix, old, new)
        return done

    return on_couchdb(config, rewrapped)


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def embedded(data_dir: Path) -> EmbeddedDataKeys:
    return EmbeddedDataKeys(connections(db_path(data_dir)))


def check_opened(stored: Sequence[StoredKey], master: MasterKey, where: str) -> None:
    """Refuse a master key that does not open the first keys of ``stored``."""
    sample = stored[:CHECKED_AT_START]
    refused = [describe(k.place, k.version) for k in sample if not opens(master, k)]
    if refused:
        raise KeyError_(
            f"the master key does not open {len(refused)} of the {len(sample)} data keys "
            f"checked in {where} (first: {refused[0]}): they were written with another master "
            "key. Set FIELDSYNC_MASTER_KEY or FIELDSYNC_MASTER_KEY_FILE to the key every "
            "instance shares."
        )
