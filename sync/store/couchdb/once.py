"""A domain adapter's own CouchDB database, created once per process.

Every adapter that keeps its domain in a database of its own (patient IDs, data
keys, accounts) creates it on first use; another instance may have made it
already (412, fine).  One lock per database, so 200 first requests at once make
one ``PUT``.
"""

from __future__ import annotations

import asyncio
import contextlib

from sync.errors import PreconditionFailed
from sync.store.couchdb.client import CouchClient, path


class CreatedOnce:
    def __init__(self, client: CouchClient, name: str) -> None:
        self.client, self.name = client, name
        self._created = False
        self._creating = asyncio.Lock()

    async def ensure(self) -> None:
        """Create the database unless this process already did or saw it."""
        if self._created:
            return
        async with self._creating:
            if not self._created:
                with contextlib.suppress(PreconditionFailed):
                    await self.client.json("PUT", path(self.name))
                self._created = True
