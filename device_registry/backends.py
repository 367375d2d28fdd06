"""The one place that chooses the device adapters (device_registry.ports) from the config.

    FIELDSYNC_COUCHDB_URL set     couchdb.CouchDevices       (database ``<prefix>devices``)
                                  limits.CouchRefusalLimits  (counters shared by instances)
    otherwise                     embedded.EmbeddedDevices   (the data dir's SQLite file)
                                  limits.LocalRefusalLimits  (this process's counters)

The server (``device_registry.routes``) and the ``fieldsync device`` commands
both come here, so a phone marked lost from the command line is refused by
every instance at its next request.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from device_registry.couchdb import CouchDevices
from device_registry.embedded import EmbeddedDevices, Transactions
from device_registry.limits import CouchRefusalLimits, LocalRefusalLimits
from device_registry.ports import DeviceStore, RefusalLimits
from sync.config import Config
from sync.people_store.ports import AccountStore
from sync.ratelimit import Limit
from sync.store.couchdb.running import open_client


@dataclass(frozen=True)
class DevicePorts:
    store: DeviceStore
    limits: RefusalLimits
    backend: str  # "embedded" or "couchdb", for the logs


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
        try:
            store = CouchDevices.for_prefix(client, config.couchdb_prefix, accounts)
            yield DevicePorts(store, CouchRefusalLimits(client, store.home, limits), "couchdb")
        finally:
            await client.close()
        return
    if sqlite is not None:
        embedded = await EmbeddedDevices.opened(sqlite)
    else:
        embedded = EmbeddedDevices.on_file(config.data_dir)
    yield DevicePorts(embedded, LocalRefusalLimits(limits), "embedded")
