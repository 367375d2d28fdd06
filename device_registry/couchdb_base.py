"""The device adapter's CouchDB plumbing: one database, documents read by id or by prefix.

Reads of one document take every live leaf (``CouchClient.leaves_by_id``: a
quorum read, forks included); lists read an id range of ``_all_docs`` (ids are
prefixed by kind, ``device_registry.couchdb_docs``).  The database is created
on first use, once per process.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from device_registry.couchdb_docs import Doc
from sync.errors import StoreError
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.once import CreatedOnce


class DevicesDatabase:
    def __init__(self, client: CouchClient, db: str) -> None:
        self._client = client
        self._db = db
        self.home = CreatedOnce(client, db)

    @property
    def client(self) -> CouchClient:
        """The CouchDB client (tests count what a request asks of CouchDB through it)."""
        return self._client

    async def database(self) -> str:
        await self.home.ensure()
        return self._db

    async def bulk(self, docs: Sequence[Doc]) -> int:
        """Create ``docs`` in one request; how many were new (a conflict: already there)."""
        return await self._bulk(docs)

    async def range(self, prefix: str) -> list[Doc]:
        """Every document whose id starts with ``prefix``, by id."""
        return await self._range(prefix)

    async def _leaves(self, doc_id: str) -> list[Doc]:
        await self.home.ensure()
        found = await self._client.leaves_by_id(self._db, [doc_id])
        return found.get(doc_id, [])

    async def _doc(self, doc_id: str) -> Doc | None:
        leaves = await self._leaves(doc_id)
        return leaves[0] if leaves else None

    async def _range(
        self, prefix: str, descending: bool = False, limit: int | None = None
    ) -> list[Doc]:
        await self.home.ensure()
        low, high = _key(prefix), _key(prefix + "\ufff0")
        params = {
            "startkey": high if descending else low,
            "endkey": low if descending else high,
            "include_docs": "true",
        }
        if descending:
            params["descending"] = "true"
        if limit is not None:
            params["limit"] = str(limit)
        answer = await self._client.json("GET", path(self._db, "_all_docs"), params=params)
        return [row["doc"] for row in answer.get("rows", []) if row.get("doc")]

    async def _put(self, body: Doc) -> None:
        """Write ``body`` (against its ``_rev``, or create it); Conflict when that fails."""
        await self.home.ensure()
        await self._client.put_status(path(self._db, str(body["_id"])), body)

    async def _create(self, body: Doc) -> None:
        """Create a document of a name nobody else writes; Conflict if it is there."""
        await self._put(body)

    async def _bulk(self, docs: Sequence[Doc]) -> int:
        if not docs:
            return 0
        await self.home.ensure()
        where = path(self._db, "_bulk_docs")
        answer = await self._client.json("POST", where, body={"docs": list(docs)})
        new = 0
        for result in answer:
            if "error" not in result:
                new += 1
            elif result["error"] != "conflict":
                raise StoreError(
                    f"CouchDB refused {result.get('id')}: {result['error']}: "
                    f"{result.get('reason', '')}"
                )
        return new


def _key(text: str) -> str:
    return orjson.dumps(text).decode()
