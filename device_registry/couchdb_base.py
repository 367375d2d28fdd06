"""The device adapter's CouchDB plumbing: one database, documents read by id or by prefix.

Reads of one document take every live leaf (``CouchClient.leaves_by_id``: a
quorum read, forks included); lists read an id range of ``_all_docs`` (ids are
prefixed by kind, ``device_registry.couchdb_docs``).  The database is created
on first use, once per process.  A device document is written through
:meth:`DevicesDatabase._stands` (what a 202 means for it); the pages' shared
signing secret is kept here too, sealed.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence

import orjson

from device_registry.couchdb_docs import Doc
from sync.errors import StoreError
from sync.keys import MasterKey
from sync.store.couchdb import first
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.once import CreatedOnce

SECRET_ID = "secret:csrf"
SECRET_LABEL = b"fieldsync device registry csrf secret v1"


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

    # -- writing a device ----------------------------------------------------------------------
    async def _stands(self, body: Doc) -> bool:
        """Write a document against the ``_rev`` it was read at (or create it); whether the
        write stands.  A 409 does not.  Nor does a 202: fewer than a quorum of copies took
        it, so a rival write may hold the others, and that rival may have had its 201 (at
        most one writer can: each copy takes one of two writes from the same revision).
        Keeping a 202 "if it is CouchDB's winner" let both stand on a three-node cluster
        (two phones with one IMEI): ``CouchClient.put_alone``.  (A leaf left by a writer
        that died meanwhile stays: ``binding`` judges by the strictest leaf, so a
        revocation in it holds.)"""
        marked = {**body, "write": secrets.token_hex(8)}
        await self.home.ensure()
        return await self._client.put_alone(self._db, marked, "write")

    # -- the pages' signing secret -------------------------------------------------------------
    async def shared_secret(self, master: MasterKey) -> bytes:
        """The secret every instance signs the pages' CSRF tokens with: made by the first
        instance, kept sealed under the master key (``secret:csrf``), unsealed by the others
        (a form shown by one instance is posted to another behind a load balancer); made
        once, however many instances start at once (:mod:`sync.store.couchdb.first`)."""
        await self.home.ensure()
        fresh = secrets.token_bytes(32)
        sealed = base64.b64encode(master.wrap(SECRET_LABEL, fresh)).decode()
        body = {"_id": SECRET_ID, "type": "secret", "sealed": sealed, "write": secrets.token_hex(8)}
        made = await first.make_or_read(self._client, self._db, body, "write")
        return master.unwrap(SECRET_LABEL, base64.b64decode(made["sealed"]))


def _key(text: str) -> str:
    return orjson.dumps(text).decode()
