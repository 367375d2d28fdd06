"""The one place that chooses the device adapters (device_registry.ports) from the config.

    FIELDSYNC_COUCHDB_URL set     couchdb.CouchDevices               (database ``<prefix>devices``)
                                  couchdb_limits.CouchRefusalLimits  (counters shared by instances)
    otherwise                     embedded.EmbeddedDevices           (the data dir's SQLite file)
                                  limits.LocalRefusalLimits          (this process's counters)

The server (``device_registry.routes``) and the ``fieldsync device`` commands
(:func:`command_ports`) both come here, so a phone marked lost from the command line is refused by
every instance at its next request.

With CouchDB, the server adopts its data dir's devices on start (a data dir
seeded before it moved to CouchDB, or copied from a template): what CouchDB
lacks is created, nothing there is overwritten (``import_all``).  With CouchDB
away, the start serves anyway and keeps trying in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from device_registry.couchdb import CouchDevices
from device_registry.couchdb_limits import CouchRefusalLimits
from device_registry.embedded import EmbeddedDevices, Transactions
from device_registry.limits import LocalRefusalLimits
from device_registry.ports import DeviceStore, RefusalLimits
from sync.config import Config
from sync.errors import StoreUnavailable
from sync.keys import load_master_key
from sync.people_store.backends import account_ports
from sync.people_store.ports import AccountStore
from sync.ratelimit import Limit
from sync.store.couchdb.running import open_client
from sync.store.schema import db_path, with_file
from sync.store.server_secrets import server_secret
from sync.store.sqlite import SqliteStore

log = structlog.get_logger("fieldsync.devices")
ADOPT_RETRY = 2.0


@dataclass(frozen=True)
class DevicePorts:
    store: DeviceStore
    limits: RefusalLimits
    backend: str  # "embedded" or "couchdb", for the logs


async def pages_secret(ports: DevicePorts, config: Config, sqlite: SqliteStore) -> bytes:
    """What the supervisor pages sign CSRF tokens with: the data dir's secret, or with
    CouchDB one secret shared (sealed) by every instance; the data dir's while CouchDB
    cannot be reached (forms then work on the instance that showed them)."""
    own = await sqlite.write_tx(lambda c: server_secret(c, "device_registry_secret"))
    if not isinstance(ports.store, CouchDevices):
        return own
    try:
        return await ports.store.shared_secret(load_master_key(config.key_file, create=False))
    except StoreUnavailable as exc:
        log.warning("devices_secret_local", reason=exc.reason)
        return own


@contextlib.asynccontextmanager
async def device_ports(
    config: Config,
    accounts: AccountStore | None,
    limits: dict[str, Limit],
    sqlite: Transactions | None = None,
) -> AsyncIterator[DevicePorts]:
    """The configured adapters, open for the ``async with``.

    ``sqlite`` is the server's store (its single writer); without it (the CLI)
    the embedded adapter opens the data dir's file for each call.  ``accounts``
    is where the CouchDB adapter reads workers and places.
    """
    if config.couchdb_url:
        assert accounts is not None, "the CouchDB adapter reads workers through the accounts port"
        client = open_client(config)
        adopting = None
        try:
            store = CouchDevices.for_prefix(
                client, config.couchdb_prefix, accounts, config.devices_cache_seconds
            )
            if sqlite is not None and not await _adopted(store, sqlite):
                adopting = asyncio.create_task(_adopt_until_done(store, sqlite))
            yield DevicePorts(store, CouchRefusalLimits(client, store.home, limits), "couchdb")
        finally:
            if adopting is not None:
                adopting.cancel()
                await asyncio.gather(adopting, return_exceptions=True)
            await client.close()
        return
    if sqlite is not None:
        embedded = await EmbeddedDevices.opened(sqlite, config.devices_cache_seconds)
    else:
        embedded = EmbeddedDevices.on_file(config.data_dir, config.devices_cache_seconds)
    yield DevicePorts(embedded, LocalRefusalLimits(limits), "embedded")


@contextlib.asynccontextmanager
async def command_ports(config: Config) -> AsyncIterator[DevicePorts]:
    """The adapters for a ``fieldsync device`` command, which has no server store: the
    embedded one opens the data dir's file for each call; with CouchDB, workers and
    places come from the accounts port opened over that file, like the server's."""
    if not config.couchdb_url:
        async with device_ports(config, None, {}) as ports:
            yield ports
        return
    with_file(config.data_dir, lambda conn: None)  # a mistyped --data-dir is refused
    sqlite = SqliteStore(db_path(config.data_dir), readers=1)
    try:
        async with (
            account_ports(config, sqlite, {}, None, adopt=False) as people,
            device_ports(config, people.store, {}) as ports,
        ):
            yield ports
    finally:
        await sqlite.close()


async def _adopted(store: CouchDevices, sqlite: Transactions) -> bool:
    """Copy the data dir's devices CouchDB lacks; False when CouchDB cannot be reached."""
    dump = await (await EmbeddedDevices.opened(sqlite)).export_all()
    if not dump["devices"]:
        return True
    try:
        created = await store.import_all(dump)
    except StoreUnavailable as exc:
        log.warning("devices_adopt_waiting", reason=exc.reason, retry_in=ADOPT_RETRY)
        return False
    if created:
        log.info("devices_adopted", created=created)
    return True


async def _adopt_until_done(store: CouchDevices, sqlite: Transactions) -> None:
    while True:
        await asyncio.sleep(ADOPT_RETRY)
        if await _adopted(store, sqlite):
            return
