"""The one place that chooses the sync-activity adapter (sync.activity.ports) from the config.

FIELDSYNC_COUCHDB_URL set     sync.activity.couchdb    (database ``<prefix>activity``,
                                                        shared by every instance)
otherwise                     sync.activity.embedded   (the data dir's SQLite file)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sync.activity.couchdb import CouchActivity
from sync.activity.embedded import EmbeddedActivity, Transactions
from sync.activity.ports import ActivityStore
from sync.config import Config
from sync.store.couchdb.running import open_client


@contextlib.asynccontextmanager
async def activity_store(config: Config, sqlite: Transactions) -> AsyncIterator[ActivityStore]:
    """The configured adapter, open for the ``async with`` (``sqlite``: the server's store)."""
    if not config.couchdb_url:
        yield await EmbeddedActivity.opened(sqlite)
        return
    client = open_client(config)
    try:
        yield CouchActivity.for_prefix(client, config.couchdb_prefix)
    finally:
        await client.close()
