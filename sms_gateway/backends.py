"""The one place that chooses the SMS adapter (sms_gateway.ports) from the configuration.

    FIELDSYNC_COUCHDB_URL set     sms_gateway.couchdb    (database ``<prefix>sms``)
    otherwise                     sms_gateway.embedded   (the data dir's SQLite file)

The server and the ``fieldsync sms`` commands both come here, so they always
read and write the same queues.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sms_gateway.couchdb import CouchSms
from sms_gateway.embedded import EmbeddedSms
from sms_gateway.ports import SmsStore
from sync.config import Config
from sync.errors import StoreUnavailable
from sync.store.couchdb.running import open_client
from sync.store.schema import db_path
from sync.store.sqlite import SqliteStore


@contextlib.asynccontextmanager
async def sms_store(config: Config, sqlite: SqliteStore | None = None) -> AsyncIterator[SmsStore]:
    """The configured adapter, opened, for the ``async with``.

    ``sqlite`` is the server's store (its single writer); without it (the CLI)
    the embedded adapter opens the data dir's file for the ``async with``.
    """
    if config.couchdb_url:
        client = open_client(config)
        try:
            store: SmsStore = CouchSms.for_prefix(client, config.couchdb_prefix)
            try:
                await store.open()
            except StoreUnavailable:
                if sqlite is None:  # a command: it says CouchDB cannot be reached
                    raise
                # the server starts anyway: SmsService.open opens it once CouchDB answers
            yield store
        finally:
            await client.close()
    elif sqlite is not None:
        store = EmbeddedSms(sqlite)
        await store.open()
        yield store
    else:
        own = SqliteStore(db_path(config.data_dir))
        try:
            store = EmbeddedSms(own)
            await store.open()
            yield store
        finally:
            await own.close()
