"""A domain adapter's design document (its views), written once per process.

The adapters that keep a database of their own and read it through views
(refused records, sync activity) bring their ``_design/<name>`` up to their
version on first use, as :meth:`CouchStore.ensure_design` does for the document
store: missing or older (``version`` below ours) is written with its ``_rev``
(another instance upgrading at the same moment writes the same views: its 409
ends the race); newer is left alone, so an older instance still running during
an upgrade never takes a newer one's views back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from sync.errors import Conflict, NotFound
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.once import CreatedOnce


class DesignOnce:
    """The database (created once) and its design document (written once), then nothing."""

    def __init__(
        self, client: CouchClient, db: str, name: str, views: Mapping[str, Any], version: int
    ) -> None:
        self._database = CreatedOnce(client, db)
        self._client, self._db = client, db
        self._id = f"_design/{name}"
        self._views, self._version = dict(views), version
        self._ready = False
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        if self._ready:
            return
        async with self._lock:
            if self._ready:
                return
            await self._database.ensure()
            await self._write()
            self._ready = True

    async def _write(self) -> None:
        where = self._where()
        try:
            found = await self._client.json("GET", where)
        except NotFound:
            found = None
        if found is not None and int(found.get("version", 0)) >= self._version:
            return
        body: dict[str, Any] = {"language": "javascript", "views": self._views}
        body["version"] = self._version
        if found is not None:
            body["_rev"] = found["_rev"]
        with contextlib.suppress(Conflict):  # another instance wrote the same views first
            await self._client.json("PUT", where, body=body)

    def view(self, name: str) -> str:
        """The path of one of the views."""
        return self._where() + f"/_view/{name}"

    def _where(self) -> str:
        return path(self._db) + "/" + self._id  # the slash of _design/ stays a slash
