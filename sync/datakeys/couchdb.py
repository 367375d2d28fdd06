"""The CouchDB adapter of the data-key port: one database, ``<prefix>keys``, for every instance.

Each data-key version is one document, its id fixed by the place and version::

    dk:<place>:<version, 8 digits>   {"place", "version", "created",
                                      "wrapped": base64 of the key sealed under the master key}

The key is stored exactly as the embedded store holds it, wrapped: CouchDB (its
admins, its backups) never sees a data key in the clear.

Creating a version is a ``PUT`` without ``_rev`` of that fixed id, so when two
instances create a place's first key at once, one wins and the other gets 409:
the loser reads the winner's key and uses it.  A 201 means a quorum of copies
took ours, which no rival write of the same new id can also reach.  A 202 (fewer
than a quorum did) does not stand: the writer takes its leaf back and reads again
(``CouchClient.put_alone``), because a rival may have had its 201 for another key
meanwhile.  Keeping a 202 that was CouchDB's winner a moment later let two
instances seal with two different first keys of one place on a three-node
cluster.  And a key is made *pending* and used by nobody until its maker's write
stood (:mod:`sync.store.couchdb.first`): a reader that picked a 202's key in the
moment before it was taken back would seal bodies under a key about to vanish.

The port is synchronous (see :mod:`sync.datakeys.ports`): each call is run on
the event loop the adapter was made on, from the caller's worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

import orjson
import structlog

from sync.datakeys.ports import StoredKey, check_version
from sync.errors import Conflict, FieldsyncError, StoreError, StoreUnavailable
from sync.keys import KeyError_, MasterKey, label
from sync.store.couchdb import first
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.once import CreatedOnce

DB_NAME = "keys"  # after the deployment's prefix
PREFIX = "dk:"
log = structlog.get_logger("fieldsync.keys")
_TRIES = 20
_MARK = "creator"  # a random token per creating write: finds its leaf, tells creators apart
T = TypeVar("T")


def doc_id(place: str, version: int) -> str:
    return f"{PREFIX}{place}:{version:08d}"


class CouchDataKeys:
    def __init__(self, client: CouchClient, db: str, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._db = db
        self._loop = loop
        self.db = db  # the CouchDB database's name
        self._home = CreatedOnce(client, self._db)

    @classmethod
    def for_prefix(cls, client: CouchClient, prefix: str) -> CouchDataKeys:
        """The adapter of ``<prefix>keys``, run on the current event loop."""
        return cls(client, prefix + DB_NAME, asyncio.get_running_loop())

    # -- the port (called from worker threads) ---------------------------------------------
    def wrapped(self, place: str, version: int) -> bytes | None:
        return self._run(self.wrapped_async(place, version))

    def latest(self, place: str) -> int | None:
        return self._run(self.latest_async(place))

    def add(self, place: str, version: int, wrapped: bytes, created: str) -> bytes:
        check_version(version)
        return self._run(self.add_async(place, version, wrapped, created))

    def all(self) -> list[StoredKey]:
        return self._run(self.all_async())

    def remove(self, place: str, version: int) -> bool:
        return self._run(self.remove_async(place, version))

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            work.close()
            raise RuntimeError(
                "the CouchDB data-key store was called on the event loop, which would wait "
                "for itself: call it from a worker thread (asyncio.to_thread)"
            )
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    # -- the same, on the event loop --------------------------------------------------------
    async def wrapped_async(self, place: str, version: int) -> bytes | None:
        await self._ensure_db()
        found = await first.read(self._client, self._db, doc_id(place, version), _MARK)
        return None if found is None else _wrapped(found)

    async def latest_async(self, place: str) -> int | None:
        await self._ensure_db()
        start = f"{PREFIX}{place}:"
        params = {"startkey": _key(start), "endkey": _key(start + "\ufff0")}
        answer = await self._client.json("GET", path(self._db, "_all_docs"), params=params)
        versions = []
        for row in answer.get("rows", []):
            tail = str(row["id"])[len(start) :]
            # Another place's id may share the prefix ("a" and "a:b"): the whole id must match.
            if tail.isdigit() and doc_id(place, int(tail)) == row["id"]:
                versions.append(int(tail))
        return max(versions, default=None)

    async def add_async(self, place: str, version: int, wrapped: bytes, created: str) -> bytes:
        await self._ensure_db()
        key_id = doc_id(place, version)
        body = {
            "_id": key_id,
            "place": place,
            "version": version,
            "created": created,
            "wrapped": base64.b64encode(wrapped).decode(),
            _MARK: secrets.token_hex(8),
        }
        made = await first.make_or_read(self._client, self._db, body, _MARK)
        return _wrapped(made)

    async def all_async(self) -> list[StoredKey]:
        await self._ensure_db()
        params = {
            "startkey": _key(PREFIX),
            "endkey": _key(PREFIX + "\ufff0"),
            "include_docs": "true",
        }
        answer = await self._client.json("GET", path(self._db, "_all_docs"), params=params)
        docs = [row["doc"] for row in answer.get("rows", []) if row.get("doc")]
        found = [
            StoredKey(str(d["place"]), int(d["version"]), _wrapped(d), str(d["created"]))
            for d in docs
        ]
        return sorted(found, key=lambda k: (k.place, k.version))

    async def remove_async(self, place: str, version: int) -> bool:
        """Delete every leaf of the version's document (a fork left by a cluster too), and
        purge them where CouchDB allows it, so no old revision keeps the wrapped key.

        Read again until no live leaf is left: a read may miss a leaf (a copy that has
        not got it yet; pouchdb-server shows the winner only), and a leaf missed would
        bring the shredded key back as the document's winner."""
        await self._ensure_db()
        key_id = doc_id(place, version)
        removed = False
        for _ in range(_TRIES):
            leaves = await self._leaves(key_id)
            if not leaves:
                return removed
            tombstones = []
            for leaf in leaves:
                rev = {"rev": str(leaf["_rev"])}
                with contextlib.suppress(Conflict):  # changed meanwhile: read again
                    gone = await self._client.json("DELETE", path(self._db, key_id), params=rev)
                    tombstones.append(str(gone["rev"]))
            if tombstones:
                removed = True
                await self._purge(key_id, tombstones)
        raise StoreUnavailable(f"Could not delete data key {place or '(shared)'} v{version}.")

    async def _purge(self, key_id: str, tombstones: list[str]) -> None:
        """Purge the deleted branches (CouchDB keeps their old bodies, the wrapped key, until
        compaction otherwise); a server without ``_purge`` keeps them until compaction."""
        with contextlib.suppress(FieldsyncError):
            await self._client.json("POST", path(self._db, "_purge"), body={key_id: tombstones})

    async def rewrap_async(self, old: MasterKey, new: MasterKey) -> tuple[int, int]:
        """Wrap every key under ``new``: ``(re-wrapped, already under new)``; resumable.

        Every key is checked first: one that neither master key opens stops the
        run before anything is changed.  Each document is then written against
        its ``_rev`` (409: read again; a key another run re-wrapped is left).
        """
        await self._ensure_db()
        stored = await self.all_async()
        for key in stored:
            if not _opens(new, key) and not _opens(old, key):
                raise KeyError_(
                    f"data key {key.place or '(shared)'} v{key.version} in CouchDB opens with "
                    "neither the current master key nor the new one; nothing was changed"
                )
        done = 0
        for key in stored:
            done += await self._rewrap_one(key.place, key.version, old, new)
        return done, len(stored) - done

    async def _rewrap_one(self, place: str, version: int, old: MasterKey, new: MasterKey) -> int:
        key_id, name = doc_id(place, version), label(place, version)
        for _ in range(_TRIES):
            leaves = await self._leaves(key_id)
            if not leaves:
                return 0  # gone meanwhile
            doc = leaves[0]
            wrapped = _wrapped(doc)
            if _opens(new, StoredKey(place, version, wrapped, "")):
                return 0
            body = {k: v for k, v in doc.items() if not k.startswith("_") or k == "_rev"}
            body["wrapped"] = base64.b64encode(new.wrap(name, old.unwrap(name, wrapped))).decode()
            try:
                await self._client.put_status(path(self._db, key_id), body)
            except Conflict:
                continue
            return 1
        raise StoreUnavailable(f"Could not re-wrap data key {place or '(shared)'} v{version}.")

    # -- CouchDB ------------------------------------------------------------------------
    async def _leaves(self, key_id: str) -> list[dict[str, Any]]:
        found = await self._client.leaves_by_id(self._db, [key_id])
        return found.get(key_id, [])

    async def _ensure_db(self) -> None:
        """Create the database once per process (another instance may have made it)."""
        await self._home.ensure()


def _wrapped(doc: Mapping[str, Any]) -> bytes:
    try:
        return base64.b64decode(str(doc["wrapped"]), validate=True)
    except (KeyError, ValueError) as exc:
        raise StoreError(f"data key document {doc.get('_id')} has no valid wrapped key") from exc


def _opens(master: MasterKey, key: StoredKey) -> bool:
    try:
        master.unwrap(label(key.place, key.version), key.wrapped)
    except KeyError_:
        return False
    return True


def _key(text: str) -> str:
    return orjson.dumps(text).decode()
