"""The CouchDB / Cloudant document store (layout: :mod:`sync.store.couchdb.layout`).

A write, for each document, in this order:

1. read its meta (by key: a quorum read), apply :mod:`sync.store.rules`;
2. create the sealed body and attachments (create-only; a 409 means "already there");
3. update the meta with CouchDB's optimistic concurrency (``_rev``), marked
   ``pending``; a 409 means another instance won the race: back to 1;
4. append one entry per place to the place's change log;
5. clear ``pending``.

A crash between 3 and 5 leaves a pending meta; :meth:`CouchStore.settle`
(run in the background) appends its entry late.  Readers of the log check each
entry against the meta it names (its version), so an entry seen before its
meta is visible makes them stop and retry, never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from sync.errors import (
    BadRequest,
    Conflict,
    FieldsyncError,
    NotFound,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
    TooLarge,
)
from sync.store.base import (
    AllDocsQuery,
    AttachmentBlob,
    Change,
    DbInfo,
    DocMeta,
    GlobalPage,
    LocalDoc,
    LogPage,
    LogRow,
    LogStore,
    Position,
    RevisionWrite,
    StoredRevision,
    WriteResult,
)
from sync.store.couchdb import ahead, feed, layout, listing, metas, plans
from sync.store.couchdb.ahead import PagesAhead
from sync.store.couchdb.bases import MIN_ROWS, Bases
from sync.store.couchdb.bases import Row as BaseRow
from sync.store.couchdb.bodies import BodyCache, RecentMetas
from sync.store.couchdb.checkpoints import Key, LaterSaves, Unsaved
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.log import LOST_AFTER_SECONDS, PlaceLog
from sync.store.couchdb.plans import Plan

if TYPE_CHECKING:
    from sync.audit import AuditStamp

# Appends the audit entry of a write (until the audit trail lives in CouchDB too).
AuditSink = Callable[["AuditStamp", str, list[str]], Awaitable[None]]

log = structlog.get_logger()
_MISSING_DB = "Database does not exist."
_RACE_TRIES = 20
_WATCH_LIMIT = 500  # log entries a watcher lists at once; more: every long poll wakes
_SETTINGS_TTL = 10.0
_INFO_SECONDS = 2.0
_REQUEST_BYTES = 16 * 1024 * 1024
# Sealed bodies kept in memory (bodies.py), and how many changes make a page a
# catch-up whose bodies are fetched ahead of the ``_bulk_get`` that follows it.
_BODY_CACHE_BYTES = 64 * 1024 * 1024
_AHEAD_CHANGES = 32
# Metas a changes page read, reused by the ``_bulk_get`` that follows it (get_metas), and
# pages read ahead, kept this long (with the sealed bodies they hold: key rotation waits more).
RECENT_SECONDS = _RECENT_SECONDS = 5.0
_RECENT_METAS = 20_000
# Catch-up pages read ahead, a few per phone catching up (ahead.py).
_PAGES_AHEAD = 1024
_BASE_ROWS_MOST = 100_000  # a base covers at most this many rows of a place's walk
_PAGES_PER_READ_AHEAD = 3  # read together; the next ones once fewer are waiting
# Checkpoints this instance saved or read, given again for a few seconds: PouchDB reads
# its checkpoint before saving it after every batch.  One saved meanwhile through another
# instance is seen once it expires, or at once by the save (409): see get_local.
_CHECKPOINT_SECONDS = 10.0
_CHECKPOINT_HOLD = 1.0  # a phone catching up: its checkpoint written at most this often
_CHECKPOINTS_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class LogWalk:
    """One phone's way through its places' logs: what keys its pages (``PagesAhead``)."""

    db: str
    space: str  # the database's uuid
    places: frozenset[str]
    limit: int

    def key(self, cursor: Mapping[str, Position]) -> Hashable:
        return PagesAhead.key(self.space, self.places, cursor, self.limit)


@dataclass(frozen=True, slots=True)
class _Settings:
    revs_limit: int
    uuid: str
    read_at: float


class CouchStore(LogStore):
    def __init__(
        self,
        client: CouchClient,
        prefix: str = "fieldsync_",
        max_document_bytes: int = 8_000_000,
        kept_seconds: float = 30.0,
        lost_after: float = LOST_AFTER_SECONDS,
        reserved: Iterable[str] = (),
        base_min_changes: int = MIN_ROWS,
    ) -> None:
        """``kept_seconds``: the longest a sealed body or checkpoint is kept in memory (a
        data-key rotation deletes old key versions after waiting longer than this);
        ``lost_after``: see ``PlaceLog.lost_before``; ``reserved``: the names (after the
        prefix) of the CouchDB databases the server keeps its own data in (users, data
        keys, the audit trail, ...), which no fieldsync database may take."""
        self.client = client
        self.prefix = prefix
        self.reserved = frozenset(reserved)
        self.max_document_bytes = max_document_bytes
        self.log = PlaceLog(client, lost_after)
        self.bodies = BodyCache(_BODY_CACHE_BYTES, kept_seconds)
        self._checkpoint_seconds = min(_CHECKPOINT_SECONDS, kept_seconds)
        self._recent = RecentMetas(_RECENT_SECONDS, _RECENT_METAS)
        self._ahead = PagesAhead(_RECENT_SECONDS, _PAGES_AHEAD)
        self.bases = Bases(client, base_min_changes, max_document_bytes)
        self.audit_sink: AuditSink | None = None
        self._settings: dict[str, _Settings] = {}
        self._watched: dict[str, str] = {}  # db -> CouchDB since of the log watcher
        self._cursors: dict[tuple[str, str], dict[str, Position]] = {}
        self._infos: dict[
            tuple[str, frozenset[str] | None], tuple[float, tuple[int | str, int, int]]
        ] = {}
        # (db, owner, id) -> (our rev, CouchDB's _rev) of checkpoints this instance last saw
        self._local_revs: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._locals: dict[tuple[str, str, str], tuple[float, LocalDoc]] = {}
        self._later = LaterSaves(self._write_held, _CHECKPOINT_HOLD)
        self._tails: dict[
            tuple[str, frozenset[str]], tuple[float, dict[str, int]]
        ] = {}  # (db, key) -> cursor

    # -- names ------------------------------------------------------------
    def _meta(self, db: str) -> str:
        return layout.meta_db(self.prefix, self._usable(db))

    def _data(self, db: str) -> str:
        return layout.data_db(self.prefix, self._usable(db))

    def _log(self, db: str) -> str:
        return layout.log_db(self.prefix, self._usable(db))

    def _usable(self, db: str) -> str:
        """Every use of database ``db`` names its CouchDB databases through here: a reserved
        name is a database that does not exist, so that no request reaches, lists, writes
        or deletes the server's own data (``<prefix>keys`` is the meta database a
        fieldsync database ``keys`` would have)."""
        if db in self.reserved:
            raise NotFound(_MISSING_DB)
        return db

    async def close(self) -> None:
        await self._later.flush()
        await self._ahead.close()
        await self.bases.close()
        await self.bodies.close()
        await self.client.close()

    # -- databases ----------------------------------------------------------
    async def create_db(self, name: str) -> None:
        """The three databases, the design document, then the settings: a database exists
        once its settings do, and a create stopped half-way is finished by the next one."""
        if name in self.reserved:
            raise BadRequest(
                f"Name: '{name}' is reserved: with CouchDB this server keeps its own data in "
                "a database of that name. Choose another name.",
                error="illegal_database_name",
            )
        self._forget(name)
        try:
            await self.client.json("PUT", path(self._meta(name)))
        except PreconditionFailed:
            if await self._exists(name):
                raise PreconditionFailed(
                    "The database could not be created, the file already exists.",
                    error="file_exists",
                ) from None
        for other in (self._data(name), self._log(name)):
            with contextlib.suppress(PreconditionFailed):
                await self.client.json("PUT", path(other))
        with contextlib.suppress(Conflict):  # another instance finishing the same create
            await self.client.json("PUT", path(self._meta(name), layout.DESIGN), body=_design())
        settings = {"revs_limit": 1000, "uuid": uuid.uuid4().hex, "created": time.time()}
        with contextlib.suppress(Conflict):
            await self._put_settings(name, settings)

    async def ensure_design(self, name: str) -> str:
        """Bring ``name``'s design document up to this version's views (at start-up).

        Missing or older (``fieldsync_version`` below ``layout.DESIGN_VERSION``):
        written, with its ``_rev`` (another instance upgrading at the same moment
        writes the same document: its 409 ends the race).  Newer: left alone, with
        a warning, so an older instance still running during an upgrade never takes
        a newer fieldsync's views back.  Returns what was done.
        """
        where = path(self._meta(name), layout.DESIGN)
        found = await self._get(name, where)
        version = 0 if found is None else int(found.get("fieldsync_version", 1))
        if version > layout.DESIGN_VERSION:
            log.warning("couchdb_design_newer", db=name, found=version, ours=layout.DESIGN_VERSION)
            return "newer"
        if version == layout.DESIGN_VERSION:
            return "current"
        body = _design() if found is None else {**_design(), "_rev": found["_rev"]}
        with contextlib.suppress(Conflict):
            await self.client.json("PUT", where, body=body)
        log.info("couchdb_design_updated", db=name, was=version, now=layout.DESIGN_VERSION)
        return "updated"

    async def _exists(self, name: str) -> bool:
        try:
            await self._settings_of(name)
        except NotFound:
            return False
        return True

    async def delete_db(self, name: str) -> None:
        self._forget(name)
        try:  # pouchdb-server answers a DELETE of a missing database with 200
            await self.client.json("GET", path(self._meta(name)))
            await self.client.json("DELETE", path(self._meta(name)))
        except NotFound:
            raise NotFound(_MISSING_DB) from None
        for other in (self._data(name), self._log(name)):
            with contextlib.suppress(NotFound):
                await self.client.json("DELETE", path(other))

    def _forget(self, name: str) -> None:
        """Drop what this instance remembers of database ``name`` (deleted or created anew)."""
        self._settings.pop(name, None)
        self._watched.pop(name, None)
        self.log.forget(self._log(name))
        self.bases.forget(self._data(name))
        for key in [k for k in self._cursors if k[0] == name]:
            del self._cursors[key]
        for local in [k for k in self._local_revs if k[0] == name]:
            del self._local_revs[local]
        for local in [k for k in self._locals if k[0] == name]:
            del self._locals[local]
        self._later.forget_db(name)
        self._forget_infos(name)

    async def list_dbs(self) -> list[str]:
        names = await self.client.json("GET", "/_all_dbs")
        cut = len(self.prefix)
        return sorted(
            n[cut:]
            for n in names
            if n.startswith(self.prefix) and "$" not in n[cut:] and n[cut:] not in self.reserved
        )

    async def db_info(self, name: str, places: frozenset[str] | None) -> DbInfo:
        """PouchDB asks for it after every batch it replicates: an answer up to
        ``_INFO_SECONDS`` old is given again (counts and ``update_seq`` are for information;
        this instance's own writes forget it at once)."""
        settings = await self._settings_of(name)
        known = self._infos.get((name, places))
        if known is None or time.monotonic() - known[0] >= _INFO_SECONDS:
            live, deleted = await listing.counts(self.client, self._meta(name), places)
            seq: int | str = 0  # a worker's update_seq is made of its places' log tails
            if not places:
                seq = (await self.client.json("GET", path(self._meta(name)))).get("update_seq", 0)
            known = (time.monotonic(), (seq, live, deleted))
            if len(self._infos) > 10_000:
                self._infos.clear()
            self._infos[(name, places)] = known
        seq, live, deleted = known[1]
        return DbInfo(name, seq, live, deleted, settings.revs_limit, "0", settings.uuid)

    def _forget_infos(self, name: str) -> None:
        for key in [k for k in self._infos if k[0] == name]:
            self._infos.pop(key, None)
        for tails in [k for k in self._tails if k[0] == name]:
            self._tails.pop(tails, None)

    async def live_counts(self, name: str, places: Sequence[str]) -> dict[str, int]:
        """One grouped query of the ``counts`` view for every place."""
        await self._settings_of(name)  # NotFound for a database that does not exist
        return await listing.live_counts(self.client, self._meta(name), places)

    async def set_revs_limit(self, name: str, limit: int) -> None:
        where = path(self._data(name), layout.SETTINGS)
        for _ in range(_RACE_TRIES):
            doc = await self._get(name, where)
            if doc is None:
                raise NotFound(_MISSING_DB)
            doc["revs_limit"] = limit
            try:
                await self.client.json("PUT", where, body=doc)
            except Conflict:
                continue
            self._settings.pop(name, None)
            return
        raise StoreUnavailable("The database settings are being changed by others; retry.")

    async def _put_settings(self, name: str, settings: dict[str, Any]) -> None:
        await self.client.json("PUT", path(self._data(name), layout.SETTINGS), body=settings)

    async def _settings_of(self, name: str) -> _Settings:
        """The database's settings (cached briefly); NotFound if the database is missing."""
        known = self._settings.get(name)
        if known is not None and time.monotonic() - known.read_at < _SETTINGS_TTL:
            return known
        doc = await self._get(name, path(self._data(name), layout.SETTINGS))
        if doc is None:
            raise NotFound(_MISSING_DB)
        settings = _Settings(int(doc["revs_limit"]), str(doc["uuid"]), time.monotonic())
        self._settings[name] = settings
        return settings

    async def _get(self, db: str, where: str, **params: str) -> dict[str, Any] | None:
        """A document, or None; NotFound when the database itself is missing."""
        try:
            found: dict[str, Any] = await self.client.json("GET", where, params=params or None)
        except NotFound as exc:
            if _MISSING_DB.lower() in exc.reason.lower() or exc.reason == "no_db_file":
                self._forget(db)
                raise NotFound(_MISSING_DB) from None
            return None
        return found

    # -- documents ------------------------------------------------------------
    async def get_metas(
        self, db: str, ids: Sequence[str], *, recent: bool = False
    ) -> dict[str, DocMeta]:
        """``recent``: metas this instance's changes feed read in the last
        ``_RECENT_SECONDS`` answer for themselves (its own writes drop them)."""
        settings = await self._settings_of(db)
        kept = self._recent.get(settings.uuid, ids) if recent else {}
        todo = [i for i in ids if i not in kept]
        found = await metas.load(self.client, self._meta(db), todo) if todo else {}
        self._keep_bodies(settings.uuid, found.values())
        fresh = {i: m.as_doc_meta() for i, m in found.items()}
        if recent:  # what the page named stays known, whichever replica answered now
            for doc_id, older in self._recent.stale(settings.uuid, todo).items():
                now = fresh.get(doc_id)
                fresh[doc_id] = older if now is None else older.merged(now)
        return {**kept, **fresh}

    def _keep_bodies(self, space: str, read: Iterable[metas.Meta]) -> None:
        """The winners' bodies the metas just read hold inline: the reads that follow
        (``_bulk_get`` after a page, a document after its meta) need not fetch them."""
        self.bodies.keep(space, {(b.doc_id, b.rev): b for m in read if (b := m.winner_body)})

    async def get_revisions(
        self, db: str, wanted: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredRevision]:
        settings = await self._settings_of(db)
        return await self.bodies.get(settings.uuid, wanted, self._fetcher(db))

    def _fetcher(
        self, db: str
    ) -> Callable[[Sequence[tuple[str, str]]], Awaitable[dict[tuple[str, str], StoredRevision]]]:
        async def fetch(
            wanted: Sequence[tuple[str, str]],
        ) -> dict[tuple[str, str], StoredRevision]:
            keys = [layout.body_id(doc_id, rev) for doc_id, rev in wanted]
            return {
                (s.doc_id, s.rev): s
                for s in map(_stored, await self._docs_by_key(self._data(db), keys))
            }

        return fetch

    def _fetch_ahead(self, db: str, space: str, changes: Sequence[Change]) -> None:
        """A catch-up page: its leaves' bodies are fetched while the page travels."""
        if len(changes) >= _AHEAD_CHANGES:
            wanted = [(c.id, rev) for c in changes for rev, _ in c.leaves]
            self.bodies.ahead(space, wanted, self._fetcher(db))

    async def _docs_by_key(self, couch_db: str, keys: Sequence[str]) -> list[dict[str, Any]]:
        found = await self.client.leaves_by_id(couch_db, keys)
        return [leaves[0] for leaves in found.values()]

    async def write(
        self, db: str, writes: Sequence[RevisionWrite], audit: AuditStamp | None = None
    ) -> list[WriteResult]:
        settings = await self._settings_of(db)
        results: list[WriteResult | None] = [None] * len(writes)
        todo = list(enumerate(writes))
        done: list[Plan] = []
        for _ in range(_RACE_TRIES):
            raced = await self._write_once(db, settings.revs_limit, todo, results, done)
            todo = [(i, w) for i, w in todo if w.doc_id in raced]
            if not todo:
                break
        else:
            raise StoreUnavailable("Too many concurrent writes to the same documents; retry.")
        self._recent.forget(settings.uuid, [p.doc_id for p in done])
        await self._log_writes(db, done)
        self._recent.forget(settings.uuid, [p.doc_id for p in done])
        if done:
            self._forget_infos(db)
            self._ahead.forget(settings.uuid)
        await self._free(db, [(p.doc_id, r) for p in done for r in p.stemmed])
        if audit is not None and self.audit_sink is not None and done:
            await self.audit_sink(audit, db, sorted({p.doc_id for p in done}))
        placed = {p.doc_id: p.place for p in done}
        return [
            _placed(r if r is not None else WriteResult(w.doc_id, w.path[0]), placed)
            for r, w in zip(results, writes, strict=True)
        ]

    async def _write_once(
        self,
        db: str,
        revs_limit: int,
        todo: list[tuple[int, RevisionWrite]],
        results: list[WriteResult | None],
        done: list[Plan],
    ) -> set[str]:
        """Steps 1 to 3 for ``todo``; the ids of the documents another writer overtook."""
        by_doc: dict[str, list[tuple[int, RevisionWrite]]] = {}
        for item in todo:
            by_doc.setdefault(item[1].doc_id, []).append(item)
        found = await metas.load(self.client, self._meta(db), list(by_doc))
        rules_of = plans.Limits(revs_limit, self._too_large)
        planned = [
            p
            for doc_id, items in by_doc.items()
            if (p := plans.plan(doc_id, items, found.get(doc_id), rules_of, results))
        ]
        if not planned:
            return set()
        moved = {p.old.place for p in planned if p.old is not None and p.old.place != p.place}
        if moved:  # no base may hand a new phone what left the place (bases.py)
            await self.bases.drop(self._data(db), moved)
        await self._save_data(db, planned)
        raced = await self._save_metas(db, planned)
        done += [p for p in planned if p.doc_id not in raced]
        return raced

    async def _save_data(self, db: str, planned: Sequence[Plan]) -> None:
        """Bodies and attachments, created once: a 409 means "already there"."""
        bodies = {
            layout.body_id(w.doc_id, w.path[0]): _body_doc(w) for p in planned for w in p.bodies()
        }
        blobs = [attachment_doc(b) for p in planned for w in p.written for b in w.attachments]
        answers = await self._bulk_bounded(self._data(db), [*bodies.values(), *blobs])
        taken = {str(a["id"]) for a in answers if a.get("error") and a.get("id") in bodies}
        if taken:
            await self._replace_stale(db, {i: bodies[i] for i in taken})

    async def _replace_stale(self, db: str, bodies: Mapping[str, dict[str, Any]]) -> None:
        """A body already stored for a revision new to its tree was left by an earlier try
        of this write, by a crash before stemmed bodies were freed, or by a concurrent
        writer of the same revision: the body written with the tree is the one kept."""
        fixes = []
        for doc in await self._docs_by_key(self._data(db), list(bodies)):
            new = bodies[str(doc["_id"])]
            if any(doc.get(k) != new[k] for k in ("place", "deleted", "key_ref", "body")):
                fixes.append({**new, "_rev": doc["_rev"]})
        await self._bulk_bounded(self._data(db), fixes)

    async def _bulk_bounded(
        self, couch_db: str, docs: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """``_bulk_docs`` in requests of a bounded size (Cloudant takes 64 MB at most)."""
        answers: list[dict[str, Any]] = []
        batch: list[dict[str, Any]] = []
        size = 0
        for doc in docs:
            weight = sum(len(v) for v in _strings_of(doc))
            if batch and size + weight > _REQUEST_BYTES:
                answers += await self._bulk(couch_db, batch, conflicts_ok=True)
                batch, size = [], 0
            batch.append(doc)
            size += weight
        return answers + await self._bulk(couch_db, batch, conflicts_ok=True)

    def _too_large(self, w: RevisionWrite) -> FieldsyncError | None:
        """CouchDB refuses a document over its ``max_document_size`` (Cloudant: 1 MB), and
        with it the whole ``_bulk_docs``: refuse that one revision here instead."""
        biggest = max([len(w.body), *(b.length + 32 for b in w.attachments)])
        if _encoded(biggest) <= self.max_document_bytes:
            return None
        return TooLarge(
            f"Document or attachment too large for the document store: about "
            f"{_encoded(biggest)} bytes sealed, the limit is {self.max_document_bytes} "
            "(FIELDSYNC_COUCHDB_MAX_DOCUMENT_BYTES)."
        )

    async def _save_metas(self, db: str, planned: Sequence[Plan]) -> set[str]:
        """Update the metas; the ids of the documents another writer overtook."""
        answers = await self._bulk(self._meta(db), [p.meta for p in planned], conflicts_ok=True)
        raced: set[str] = set()
        for p, answer in zip(planned, answers, strict=True):
            if answer.get("error"):
                raced.add(p.doc_id)
            else:
                p.meta["_rev"] = answer["rev"]
        # A forked meta's other branches go once the merged tree is saved, not before:
        # deleting them first could lose their revisions if the save then lost a race.
        losers = [
            {"_id": p.meta["_id"], "_rev": r, "_deleted": True}
            for p in planned
            if p.doc_id not in raced and p.old is not None
            for r in p.old.losers
        ]
        await self._bulk(self._meta(db), losers, conflicts_ok=True)
        return raced

    async def _log_writes(self, db: str, planned: Sequence[Plan]) -> None:
        """Step 4 and 5: one log entry per place, then the metas are settled."""
        if not planned:
            return
        by_place: dict[str, list[tuple[str, int]]] = {}
        for p in planned:
            by_place.setdefault(p.place, []).append((p.doc_id, p.version))
        await asyncio.gather(
            *(self.log.append(self._log(db), place, ids) for place, ids in by_place.items())
        )
        settled = [{k: v for k, v in p.meta.items() if k != "pending"} for p in planned]
        await self._bulk(self._meta(db), settled, conflicts_ok=True)

    async def _free(self, db: str, stemmed: Sequence[tuple[str, str]]) -> None:
        """Delete the bodies of revisions ``revs_limit`` stemmed out of their trees."""
        if not stemmed:
            return
        self.bodies.forget((await self._settings_of(db)).uuid, stemmed)
        keys = [layout.body_id(doc_id, rev) for doc_id, rev in stemmed]
        answer = await self.client.json(
            "POST", path(self._data(db), "_all_docs"), body={"keys": keys}
        )
        doomed = [
            {"_id": row["id"], "_rev": row["value"]["rev"], "_deleted": True}
            for row in answer.get("rows", [])
            if "value" in row and not row["value"].get("deleted")
        ]
        await self._bulk(self._data(db), doomed, conflicts_ok=True)

    async def settle(self, db: str, older_than: float = 30.0) -> int:
        """Append the log entries of writes whose writer stopped before it did; merge forks.

        Run by every instance now and then; a duplicate entry only costs a reader
        a second look at the same document.
        """
        await self._settings_of(db)
        view = listing.view(self._meta(db), "unsettled")
        answer = await self.client.json("GET", view, params={"limit": "500"})
        cutoff = time.time() - older_than
        ids = [
            str(row["id"])[len(layout.META_PREFIX) :]
            for row in answer.get("rows", [])
            if float(row.get("key") or 0) <= cutoff
        ]
        found = await metas.load(self.client, self._meta(db), ids)
        # read afresh: on a cluster the view may still list a meta settled meanwhile, or
        # one a newer write made pending again (its writer is still at it)
        unsettled = [
            meta
            for meta in found.values()
            if meta.losers or (meta.pending is not None and meta.pending <= cutoff)
        ]
        planned = [plans.settling(meta) for meta in unsettled]
        forked = [p for p in planned if p.old is not None and p.old.losers]
        for p in forked:  # forks first: one meta again, then its entry
            p.meta["pending"] = time.time()
        raced = await self._save_metas(db, forked)
        await self._log_writes(db, [p for p in planned if p.doc_id not in raced])
        return len(planned)

    async def _bulk(
        self, couch_db: str, docs: Sequence[Mapping[str, Any]], *, conflicts_ok: bool
    ) -> list[dict[str, Any]]:
        if not docs:
            return []
        answers: list[dict[str, Any]] = await self.client.json(
            "POST", path(couch_db, "_bulk_docs"), body={"docs": list(docs)}
        )
        for answer in answers:
            error = answer.get("error")
            if error and not (conflicts_ok and error == "conflict"):
                raise StoreError(f"CouchDB refused a write: {error}: {answer.get('reason', '')}")
        return answers

    # -- changes ------------------------------------------------------------------
    async def place_changes(
        self, db: str, places: frozenset[str], cursor: Mapping[str, Position], limit: int
    ) -> LogPage:
        """A page of the places' logs; after a full page of a catch-up, the next ones are
        read ahead (``ahead.PagesAhead``)."""
        walk = LogWalk(db, (await self._settings_of(db)).uuid, places, limit)
        page = await self._ahead.take(walk.key(cursor))
        if page is None:
            page = (await self._read_pages(walk, cursor, 1))[0]
        self._next_ahead(walk, cursor, page)
        return page

    def _next_ahead(self, walk: LogWalk, cursor: Mapping[str, Position], page: LogPage) -> None:
        """After a full page of a catch-up: unless ``_PAGES_PER_READ_AHEAD`` pages after it
        are read already, or being read, read the next ones from where those end."""
        for _ in range(_PAGES_PER_READ_AHEAD):
            if not _catch_up(page, walk.limit):
                return
            cursor = ahead.after(cursor, page)
            found = self._ahead.peek(walk.key(cursor))
            if found is True:  # being read: that read goes on from its own end
                return
            if found is False:
                self._ahead.start(walk.key(cursor), self._read_ahead(walk, cursor))
                return
            page = found

    async def _read_ahead(self, walk: LogWalk, cursor: Mapping[str, Position]) -> LogPage:
        """``_PAGES_PER_READ_AHEAD`` pages at once; the first is returned, the others kept."""
        pages = await self._read_pages(walk, cursor, _PAGES_PER_READ_AHEAD)
        for before, following in itertools.pairwise(pages):
            cursor = ahead.after(cursor, before)
            self._ahead.put(walk.key(cursor), following)
        return pages[0]

    async def _read_pages(
        self, walk: LogWalk, cursor: Mapping[str, Position], count: int
    ) -> list[LogPage]:
        """Up to ``count`` pages from CouchDB, each starting where the one before ended."""
        db = walk.db
        based = await self.bases.rows(self._data(db), walk.places, cursor, walk.limit * count)
        read: Mapping[str, metas.Meta]
        if based:
            pages, read = await self._based_pages(walk, cursor, count, based)
        else:
            pages, read = await self._walk(walk, walk.places, cursor, walk.limit, count)
            self._consider_bases(walk, cursor, pages[0])
        self._recent.keep(walk.space, {i: m.as_doc_meta() for i, m in read.items()})
        self._keep_bodies(walk.space, read.values())
        for page in pages:
            self._fetch_ahead(db, walk.space, [r.change for r in page.rows if r.change])
        return pages

    async def _walk(
        self,
        walk: LogWalk,
        places: frozenset[str],
        cursor: Mapping[str, Position],
        limit: int,
        count: int,
    ) -> tuple[list[LogPage], Mapping[str, metas.Meta]]:
        db = walk.db
        return await feed.place_changes(
            self.client, self.log, self._meta(db), self._log(db), places, cursor, limit, count
        )

    async def _based_pages(
        self,
        walk: LogWalk,
        cursor: Mapping[str, Position],
        count: int,
        based: Mapping[str, Sequence[tuple[Position, metas.Meta | None]]],
    ) -> tuple[list[LogPage], dict[str, metas.Meta]]:
        """Pages made of the rows of the places' bases (``bases.py``); where the rows run
        out before a page is full, the rest of the page comes from the logs after them."""
        pages: list[LogPage] = []
        read: dict[str, metas.Meta] = {}
        at = dict(cursor)
        for _ in range(count):
            rows: list[LogRow] = []
            sent = 0
            for place in sorted(based):
                for after, meta in based[place]:
                    if sent >= walk.limit:
                        break
                    if after <= at.get(place, (0, 0)):
                        continue
                    rows.append(LogRow(meta.as_change() if meta else None, place, after))
                    if meta is not None:
                        read[meta.doc_id] = meta
                        sent += 1
            self.bases.used += sent
            page = LogPage(rows, False)
            if sent < walk.limit:
                rest = ahead.after(at, page)
                more, more_read = await self._walk(walk, walk.places, rest, walk.limit - sent, 1)
                read.update(more_read)
                pages.append(LogPage(rows + more[0].rows, more[0].exhausted))
                break
            pages.append(page)
            at = ahead.after(at, page)
        return pages, read

    def _consider_bases(self, walk: LogWalk, cursor: Mapping[str, Position], page: LogPage) -> None:
        """A first pull of a place whose first page was all the place's changes (or as many
        as make a base): make the place a base for the next phones (in the background, one
        build at a time; the build walks the place to see whether it is big enough)."""
        counts: dict[str, int] = {}
        for row in page.rows:
            if row.change is not None and cursor.get(row.place, (0, 0)) == (0, 0):
                counts[row.place] = counts.get(row.place, 0) + 1
        for place, sent in counts.items():
            if sent >= min(walk.limit, self.bases.min_rows):
                self.bases.consider(
                    self._data(walk.db), place, functools.partial(self._base_pages, walk.db, place)
                )

    async def _base_pages(self, db: str, place: str) -> AsyncIterator[list[BaseRow]]:
        """``place``'s walk from the start, as a phone pulling it now is sent it (at most
        ``_BASE_ROWS_MOST`` rows)."""
        at: dict[str, Position] = {}
        rows = 0
        while rows < _BASE_ROWS_MOST:
            pages, read = await feed.place_changes(
                self.client, self.log, self._meta(db), self._log(db), frozenset({place}), at, 500
            )
            page = pages[0]
            yield [(r.after, read[r.change.id] if r.change else None) for r in page.rows]
            rows += len(page.rows)
            at = ahead.after(at, page)
            if page.exhausted or not page.rows:
                return

    async def global_changes(
        self, db: str, since: str | None, limit: int, descending: bool = False
    ) -> GlobalPage:
        settings = await self._settings_of(db)
        page, read = await feed.global_changes(
            self.client, self._meta(db), since, limit, descending
        )
        self._keep_bodies(settings.uuid, read)
        self._fetch_ahead(db, settings.uuid, [change for change, _ in page.rows])
        return page

    async def log_tails(self, db: str, places: frozenset[str]) -> dict[str, int]:
        """Read again after ``_INFO_SECONDS`` (PouchDB asks for the database's info, whose
        ``update_seq`` is made of them, after every batch); a tail read earlier is never
        too high, so ``since=now`` built from it sends a change twice at worst."""
        await self._settings_of(db)
        known = self._tails.get((db, places))
        if known is None or time.monotonic() - known[0] >= _INFO_SECONDS:
            known = (time.monotonic(), await self.log.tails(self._log(db), sorted(places)))
            if len(self._tails) > 10_000:
                self._tails.clear()
            self._tails[(db, places)] = known
        return dict(known[1])

    async def migrated_positions(self, db: str, seq: int, places: frozenset[str]) -> dict[str, int]:
        await self._settings_of(db)
        order = sorted(places)
        found = await asyncio.gather(
            *(self.log.migrated_position(self._log(db), p, seq) for p in order)
        )
        return dict(zip(order, found, strict=True))

    async def save_cursor(self, db: str, key: str, positions: Mapping[str, Position]) -> None:
        await self._settings_of(db)
        if (db, key) in self._cursors:
            return
        doc = {"positions": [[p, d, o] for p, (d, o) in sorted(positions.items())]}
        with contextlib.suppress(Conflict):  # named by its content: already kept
            await self.client.json("PUT", path(self._data(db), f"t:{key}"), body=doc)
        self._remember_cursor(db, key, dict(positions))

    async def load_cursor(self, db: str, key: str) -> dict[str, Position] | None:
        known = self._cursors.get((db, key))
        if known is not None:
            return known
        doc = await self._get(db, path(self._data(db), f"t:{key}"))
        if doc is None:
            return None
        found = {str(p): (int(d), int(o)) for p, d, o in doc["positions"]}
        self._remember_cursor(db, key, found)
        return found

    def _remember_cursor(self, db: str, key: str, positions: dict[str, Position]) -> None:
        if len(self._cursors) > 10_000:
            self._cursors.clear()
        self._cursors[(db, key)] = positions

    async def wait_for_change(self, db: str, timeout: float) -> frozenset[str] | None:
        """The places of the log entries appended since the last call (any instance's);
        None when there were more than a request lists (every waiter wakes)."""
        await self._settings_of(db)
        since = self._watched.get(db, "now")
        params = {
            "feed": "longpoll",
            "since": since,
            "timeout": str(int(timeout * 1000)),
            "limit": str(_WATCH_LIMIT),
        }
        try:
            answer = await self.client.json(
                "GET", path(self._log(db), "_changes"), params=params, timeout=timeout + 10
            )
        except NotFound:
            self._forget(db)
            raise NotFound(_MISSING_DB) from None
        self._watched[db] = feed.seq_text(answer.get("last_seq", since))
        rows = answer.get("results", [])
        if len(rows) >= _WATCH_LIMIT:
            return None
        return frozenset(layout.entry_place(str(row["id"])) for row in rows)

    async def all_docs(
        self, db: str, places: frozenset[str] | None, query: AllDocsQuery
    ) -> tuple[int, list[Change]]:
        await self._settings_of(db)
        total = (await listing.counts(self.client, self._meta(db), places))[0]
        return total, await listing.live_page(self.client, self._meta(db), places, query)

    # -- attachments ------------------------------------------------------------
    async def get_attachment(
        self, db: str, digest: str, places: frozenset[str] | None
    ) -> AttachmentBlob | None:
        await self._settings_of(db)
        if places is None:
            low = layout.attachment_id(digest, "")
            params = {
                "startkey": orjson.dumps(low).decode(),
                "endkey": orjson.dumps(low + "\ufff0").decode(),
                "limit": "1",
            }
            answer = await self.client.json("GET", path(self._data(db), "_all_docs"), params=params)
            ids = [str(r["id"]) for r in answer.get("rows", [])]
        else:
            keys = [layout.attachment_id(digest, p) for p in sorted(places)]
            ids = [str(d["_id"]) for d in await self._docs_by_key(self._data(db), keys)]
        if not ids:
            return None
        doc = await self._get(db, path(self._data(db), ids[0]), attachments="true")
        if doc is None:
            return None
        data = layout.unb64(doc["_attachments"]["blob"]["data"])
        place = ids[0][len(layout.attachment_id(digest, "")) :]
        return AttachmentBlob(digest, place, str(doc["key_ref"]), int(doc["length"]), data)

    # -- local documents ----------------------------------------------------------
    async def get_local(self, db: str, owner: str, doc_id: str) -> LocalDoc | None:
        """A checkpoint; one this instance saved or read in the last ``_CHECKPOINT_SECONDS``
        is given again without asking CouchDB.  If another instance saved it meanwhile, the
        one given is older: the phone resumes from there (sends some changes again, loses
        none), and its save is refused (409), which drops what is kept here, so the read of
        PouchDB's retry reads CouchDB."""
        await self._settings_of(db)
        key = (db, owner, doc_id)
        kept = self._locals.get(key)
        if kept is not None and time.monotonic() - kept[0] < self._checkpoint_seconds:
            return kept[1]
        doc = await self._get(db, path(self._data(db), layout.local_id(owner, doc_id)))
        if doc is None:
            self._local_revs.pop(key, None)
            self._locals.pop(key, None)
            return None
        self._local_revs[key] = (str(doc["rev"]), str(doc["_rev"]))
        return self._keep_local(key, LocalDoc(doc_id, str(doc["rev"]), layout.unb64(doc["body"])))

    def _keep_local(self, key: tuple[str, str, str], local: LocalDoc) -> LocalDoc:
        now = time.monotonic()
        if len(self._locals) >= _CHECKPOINTS_KEPT:
            stale = [k for k, (at, _) in self._locals.items() if now - at >= _CHECKPOINT_SECONDS]
            for old in stale or list(self._locals)[: _CHECKPOINTS_KEPT // 10]:
                del self._locals[old]
        self._locals[key] = (now, local)
        return local

    async def put_local(
        self, db: str, owner: str, doc_id: str, expected_rev: str | None, body: bytes
    ) -> str:
        """A checkpoint: PouchDB reads it, then saves it, after every batch.  The CouchDB
        ``_rev`` seen by the read is used for the save; if another instance saved it
        meanwhile, CouchDB's 409 sends us the long way: read, compare, save."""
        key = (db, owner, doc_id)
        await self._settings_of(db)
        known = self._local_revs.get(key)
        if (
            known is not None
            and expected_rev == known[0]
            and key in self._locals
            and self._later.may_hold(db, owner)
        ):  # a phone catching up: written a moment later (sync.store.couchdb.checkpoints)
            rev = _next_local_rev(known[0])
            self._local_revs[key] = (rev, known[1])
            self._later.hold(key, rev, body)
            self._keep_local(key, LocalDoc(doc_id, rev, body))
            return rev
        async with self._later.lock(key):
            self._later.take(key)  # this save carries the newest
            try:
                rev = await self._save_local(db, owner, doc_id, expected_rev, body)
            except Conflict:
                self._locals.pop(key, None)  # saved elsewhere: the next read asks CouchDB
                raise
        self._keep_local(key, LocalDoc(doc_id, rev, body))
        return rev

    def expect_more(self, db: str, owner: str, more: bool) -> None:
        self._later.expect_more(db, owner, more)

    async def _write_held(self, key: Key, held: Unsaved) -> None:
        """A save answered earlier, into CouchDB now (sync.store.couchdb.checkpoints)."""
        known = self._local_revs.get(key)
        if known is None:
            return  # forgotten since (deleted, or refused): nothing to write
        db, owner, doc_id = key
        fresh = {"owner": owner, "id": doc_id, "rev": held.rev, "body": layout.b64(held.body)}
        where = path(self._data(db), layout.local_id(owner, doc_id))
        try:
            answer = await self.client.json("PUT", where, body={**fresh, "_rev": known[1]})
        except Conflict:  # saved elsewhere meanwhile: theirs stands, the phone reads it
            self._local_revs.pop(key, None)
            self._locals.pop(key, None)
            return
        now = self._local_revs.get(key)
        if now is not None:
            self._local_revs[key] = (now[0], str(answer["rev"]))

    async def _save_local(
        self, db: str, owner: str, doc_id: str, expected_rev: str | None, body: bytes
    ) -> str:
        await self._settings_of(db)
        where = path(self._data(db), layout.local_id(owner, doc_id))
        key = (db, owner, doc_id)
        known = self._local_revs.get(key)
        if known is not None and expected_rev == known[0]:
            rev = _next_local_rev(known[0])
            fresh = {"owner": owner, "id": doc_id, "rev": rev, "body": layout.b64(body)}
            try:
                answer = await self.client.json("PUT", where, body={**fresh, "_rev": known[1]})
            except Conflict:
                self._local_revs.pop(key, None)
            else:
                self._local_revs[key] = (rev, str(answer["rev"]))
                return rev
        current = await self._get(db, where)
        if expected_rev != (None if current is None else current["rev"]):
            raise Conflict()
        rev = _next_local_rev(None if current is None else str(current["rev"]))
        doc: dict[str, Any] = {"owner": owner, "id": doc_id, "rev": rev, "body": layout.b64(body)}
        if current is not None:
            doc["_rev"] = current["_rev"]
        answer = await self.client.json("PUT", where, body=doc)  # 409: saved by someone meanwhile
        self._local_revs[key] = (rev, str(answer["rev"]))
        return rev

    async def delete_local(self, db: str, owner: str, doc_id: str, rev: str | None) -> None:
        self._locals.pop((db, owner, doc_id), None)
        self._later.take((db, owner, doc_id))
        await self._settings_of(db)
        where = path(self._data(db), layout.local_id(owner, doc_id))
        current = await self._get(db, where)
        if current is None:
            raise NotFound("missing")
        if rev != current["rev"]:
            raise Conflict()
        self._local_revs.pop((db, owner, doc_id), None)
        await self.client.json("DELETE", where, params={"rev": str(current["_rev"])})


def _placed(result: WriteResult, placed: Mapping[str, str]) -> WriteResult:
    """``result`` with the place its document is in now, if this write changed it."""
    place = placed.get(result.doc_id) if result.error is None else None
    return result if place is None else replace(result, place=place)


def _catch_up(page: LogPage, limit: int) -> bool:
    """A full page of a phone catching up: the pages after it are the next it asks for."""
    changes = sum(1 for row in page.rows if row.change is not None)
    return changes >= max(limit, _AHEAD_CHANGES) and not page.exhausted


def _next_local_rev(rev: str | None) -> str:
    number = 0 if rev is None else int(rev.split("-", 1)[1])
    return f"0-{number + 1}"


def _encoded(length: int) -> int:
    """Bytes of ``length`` bytes of sealed data once base64 in a JSON document."""
    return (length + 2) // 3 * 4 + 512


def _strings_of(doc: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for value in doc.values():
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, Mapping):
            found += _strings_of(value)
    return found


def _design() -> dict[str, Any]:
    doc = dict(layout.DESIGN_DOC)
    doc.pop("_id")
    return doc


def attachment_doc(blob: AttachmentBlob) -> dict[str, Any]:
    return {
        "_id": layout.attachment_id(blob.digest, blob.place),
        "key_ref": blob.key_ref,
        "length": blob.length,
        "_attachments": {
            "blob": {"content_type": "application/octet-stream", "data": layout.b64(blob.data)}
        },
    }


def _body_doc(w: RevisionWrite) -> dict[str, Any]:
    return {
        "_id": layout.body_id(w.doc_id, w.path[0]),
        "place": w.place,
        "deleted": w.deleted,
        "key_ref": w.key_ref,
        "body": layout.b64(w.body),
    }


def _stored(doc: Mapping[str, Any]) -> StoredRevision:
    doc_id, rev = _body_key(str(doc["_id"]))
    return StoredRevision(
        doc_id,
        rev,
        str(doc["place"]),
        bool(doc["deleted"]),
        str(doc["key_ref"]),
        layout.unb64(doc["body"]),
    )


def _body_key(couch_id: str) -> tuple[str, str]:
    """``r:REV:DOCID`` -> (doc id, rev); a rev never holds a colon."""
    _, rev, doc_id = couch_id.split(":", 2)
    return doc_id, rev
