"""The one place that chooses the patient-ID adapter (barcode.ports) from the configuration.

    FIELDSYNC_COUCHDB_URL set     barcode.couchdb   (database ``<prefix>patient_ids``)
    otherwise                     barcode.embedded  (the data dir's SQLite file)

The server, the CLI and the SMS registrations all come here, so two of them can
never allocate from different places in one deployment.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from barcode.couchdb import CouchPatientIds
from barcode.embedded import EmbeddedPatientIds, Transactions
from barcode.ports import PatientIdStore
from sync.config import Config
from sync.store.couchdb.running import open_client


@contextlib.asynccontextmanager
async def patient_id_store(
    config: Config, sqlite: Transactions | None = None
) -> AsyncIterator[PatientIdStore]:
    """The configured adapter, open for the ``async with``.

    ``sqlite`` is the server's store (its single writer); without it (the CLI)
    the embedded adapter opens the data dir's file for each call.
    """
    if config.couchdb_url:
        client = open_client(config)
        try:
            yield CouchPatientIds.for_prefix(client, config.couchdb_prefix)
        finally:
            await client.close()
    elif sqlite is not None:
        yield await EmbeddedPatientIds.opened(sqlite)
    else:
        yield EmbeddedPatientIds.on_file(config.data_dir)
