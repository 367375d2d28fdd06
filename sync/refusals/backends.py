"""The one place that chooses the refused-records adapter (sync.refusals.ports) from the config.

FIELDSYNC_COUCHDB_URL set     sync.refusals.couchdb    (database ``<prefix>refusals``,
                                                        shared by every instance)
otherwise                     sync.refusals.embedded   (the data dir's SQLite file)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sync.config import Config
from sync.refusals.couchdb import CouchRefusals
from sync.refusals.embedded import EmbeddedRefusals, Transactions
from sync.refusals.ports import RefusalStore
from sync.store.couchdb.running import open_client


@contextlib.asynccontextmanager
async def refusal_store(config: Config, sqlite: Transactions) -> AsyncIterator[RefusalStore]:
    """The configured adapter, open for the ``async with`` (``sqlite``: the server's store)."""
    if not config.couchdb_url:
        yield await EmbeddedRefusals.opened(sqlite)
        return
    client = open_client(config)
    try:
        yield CouchRefusals.for_prefix(client, config.couchdb_prefix)
    finally:
        await client.close()
