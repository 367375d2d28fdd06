"""The one place that chooses the audit adapter (sync.audit_store.ports) from the configuration.

    the data dir's chain          sync.audit_store.embedded (admin changes commit with
                                  their entry, in the data dir's SQLite file)
    FIELDSYNC_COUCHDB_URL set     sync.audit_store.couchdb  (database ``<prefix>audit``:
                                  each instance's own chain of reads, refusals, writes)

The embedded store is always there (the data dir's file holds users, devices and
settings, whose changes append inside their own transaction); CouchDB's is there
when several instances share one cluster.  The server, ``fieldsync audit verify``
and key rotation all come here, so they never look in different places.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sync.audit_store.couchdb import CouchAudit
from sync.audit_store.embedded import EmbeddedAudit, Transactions
from sync.audit_store.ports import AuditStore
from sync.config import Config
from sync.store.couchdb.running import open_client


async def data_dir_store(config: Config, sqlite: Transactions | None = None) -> AuditStore:
    """The data dir's chain: through the server's writer (``sqlite``), or for the CLI
    one transaction on the data dir's file per call."""
    if sqlite is not None:
        return await EmbeddedAudit.opened(sqlite)
    return EmbeddedAudit.on_file(config.data_dir)


def instance_store(config: Config) -> AuditStore | None:
    """The store of the instances' chains: CouchDB's when configured, else none (the
    caller closes it)."""
    if not config.couchdb_url:
        return None
    return CouchAudit.for_prefix(open_client(config), config.couchdb_prefix)


@contextlib.asynccontextmanager
async def audit_stores(
    config: Config, sqlite: Transactions | None = None
) -> AsyncIterator[tuple[AuditStore, AuditStore | None]]:
    """(the data dir's store, the instances' store or None), open for the ``async with``."""
    remote = instance_store(config)
    try:
        yield await data_dir_store(config, sqlite), remote
    finally:
        if remote is not None:
            await remote.close()
