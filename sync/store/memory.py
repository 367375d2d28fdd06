"""The in-memory backend: SQLite's primitives kept in dicts, for fast tests.

Same semantics as :mod:`sync.store.sqlite` (the contract suite in
``tests/sync/test_store_contract.py`` runs against both).  One ``_Db`` per
database::

    docs         id -> _Doc              latest meta, change row, rev -> sealed body
    by_seq       seq -> id               the one live sequence of each document
    everywhere   _Scope                  every document (SQLite's docs_by_seq)
    scopes       place -> _Scope         (SQLite's docs_changes_by_place / docs_by_place_id)
    attachments  digest -> place -> AttachmentBlob
    local        (owner, id) -> LocalDoc

A ``_Scope`` holds two sorted lists: the sequence of every document in it
(one entry each: its latest change) and the ids of its non-deleted documents.
With N documents in a place, P places asked for and k rows visited (rows
skipped by ``skip`` or ``include_deleted=False`` count):

    changes, all_docs   O(P log N + k log P)   bisect every place, heap-merge them
    count_changes       O(P log N)
    db_info             O(P)
    write, per document O(log N) to find + O(N) list shift (a memmove)

so answering for a set of places never walks the whole database.  Nothing
awaits inside a method, so every call is atomic on the event loop; a batch of
writes is staged and committed at the end, all-or-nothing like SQLite's
transaction.  Like SQLite's ``revs`` table, ``bodies`` keeps the body of every
revision written until ``revs_limit`` stems it out of the tree (a stemmed
revision replicated again comes back with its new body only).
"""

from __future__ import annotations

import heapq
import itertools
import time
import uuid
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Generic, TypeVar

from sync.errors import Conflict, NotFound, PreconditionFailed
from sync.replication import revtree
from sync.store import rules
from sync.store.base import (
    AllDocsQuery,
    AttachmentBlob,
    Change,
    DbInfo,
    DocMeta,
    LocalDoc,
    RevisionWrite,
    SeqStore,
    StoredRevision,
    WriteResult,
)

if TYPE_CHECKING:
    from sync.audit import AuditStamp, Entry

K = TypeVar("K", int, str)

DEFAULT_REVS_LIMIT = 1000


class _Sorted(Generic[K]):
    """Unique keys in order: bisect to find, a list shift to insert or remove."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: list[K] = []

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: K) -> None:
        insort(self._keys, key)

    def remove(self, key: K) -> None:
        i = bisect_left(self._keys, key)
        if i == len(self._keys) or self._keys[i] != key:
            raise KeyError(key)
        del self._keys[i]

    def count_after(self, low: K) -> int:
        return len(self._keys) - bisect_right(self._keys, low)

    def span(
        self,
        low: K | None,
        high: K | None,
        *,
        low_open: bool = False,
        high_open: bool = False,
        descending: bool = False,
    ) -> Iterator[K]:
        """Keys between the bounds (None: unbounded), lazily, in the order asked for."""
        keys = self._keys
        start = 0 if low is None else self._position(low, after=low_open)
        stop = len(keys) if high is None else self._position(high, after=not high_open)
        indices = range(stop - 1, start - 1, -1) if descending else range(start, stop)
        return (keys[i] for i in indices)

    def _position(self, key: K, after: bool) -> int:
        return bisect_right(self._keys, key) if after else bisect_left(self._keys, key)


class _Scope:
    """The documents of one place (or of all): their sequences and live ids."""

    __slots__ = ("live_ids", "seqs")

    def __init__(self) -> None:
        self.seqs: _Sorted[int] = _Sorted()
        self.live_ids: _Sorted[str] = _Sorted()

    def add(self, meta: DocMeta) -> None:
        self.seqs.add(meta.seq)
        if not meta.deleted:
            self.live_ids.add(meta.id)

    def remove(self, meta: DocMeta) -> None:
        self.seqs.remove(meta.seq)
        if not meta.deleted:
            self.live_ids.remove(meta.id)


@dataclass(frozen=True, slots=True)
class _Doc:
    meta: DocMeta
    change: Change
    bodies: Mapping[str, StoredRevision]


class _Db:
    def __init__(self) -> None:
        self.uuid = uuid.uuid4().hex
        self.update_seq = 0
        self.revs_limit = DEFAULT_REVS_LIMIT
        self.docs: dict[str, _Doc] = {}
        self.by_seq: dict[int, str] = {}
        self.everywhere = _Scope()
        self.scopes: dict[str, _Scope] = {}
        self.attachments: dict[str, dict[str, AttachmentBlob]] = {}
        self.local: dict[tuple[str, str], LocalDoc] = {}

    def scopes_for(self, places: frozenset[str] | None) -> list[_Scope]:
        if places is None:
            return [self.everywhere]
        return [self.scopes[p] for p in places if p in self.scopes]

    def commit(self, doc: _Doc) -> None:
        """Make ``doc`` the document's latest state, moving it in every index."""
        old = self.docs.get(doc.meta.id)
        if old is not None:
            del self.by_seq[old.meta.seq]
            self.everywhere.remove(old.meta)
            self.scopes[old.meta.place].remove(old.meta)
        self.docs[doc.meta.id] = doc
        self.by_seq[doc.meta.seq] = doc.meta.id
        self.everywhere.add(doc.meta)
        self.scopes.setdefault(doc.meta.place, _Scope()).add(doc.meta)

    def change_at(self, seq: int) -> Change:
        return self.docs[self.by_seq[seq]].change


class MemoryStore(SeqStore):
    """Every database in dicts; nothing survives the process."""

    def __init__(self) -> None:
        self._dbs: dict[str, _Db] = {}
        self._started = str(time.time_ns() // 1000)
        self.audit: list[Entry] = []  # entries of audited writes, appended with them

    def _db(self, name: str) -> _Db:
        found = self._dbs.get(name)
        if found is None:
            raise NotFound("Database does not exist.")
        return found

    async def close(self) -> None:
        """Nothing to release."""

    # -- databases ----------------------------------------------------------
    async def create_db(self, name: str) -> None:
        if name in self._dbs:
            raise PreconditionFailed(
                "The database could not be created, the file already exists.",
                error="file_exists",
            )
        self._dbs[name] = _Db()

    async def delete_db(self, name: str) -> None:
        self._db(name)
        del self._dbs[name]

    async def list_dbs(self) -> list[str]:
        return sorted(self._dbs)

    async def db_info(self, name: str, places: frozenset[str] | None) -> DbInfo:
        db = self._db(name)
        scopes = db.scopes_for(places)
        live = sum(len(s.live_ids) for s in scopes)
        deleted = sum(len(s.seqs) for s in scopes) - live
        return DbInfo(name, db.update_seq, live, deleted, db.revs_limit, self._started, db.uuid)

    async def set_revs_limit(self, name: str, limit: int) -> None:
        self._db(name).revs_limit = limit

    # -- documents ------------------------------------------------------------
    async def get_metas(
        self, db: str, ids: Sequence[str], *, recent: bool = False
    ) -> dict[str, DocMeta]:
        docs = self._db(db).docs
        return {i: docs[i].meta for i in ids if i in docs}

    async def get_revisions(
        self, db: str, wanted: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredRevision]:
        docs = self._db(db).docs
        found: dict[tuple[str, str], StoredRevision] = {}
        for doc_id, rev in wanted:
            doc = docs.get(doc_id)
            if doc is not None and rev in doc.bodies:
                found[(doc_id, rev)] = doc.bodies[rev]
        return found

    async def write(
        self, db: str, writes: Sequence[RevisionWrite], audit: AuditStamp | None = None
    ) -> list[WriteResult]:
        state = self._db(db)
        staged: dict[str, _Doc] = {}
        seq = state.update_seq
        results: list[WriteResult] = []
        blobs: list[AttachmentBlob] = []
        for w in writes:
            current = staged[w.doc_id] if w.doc_id in staged else state.docs.get(w.doc_id)
            result, updated = _apply_write(current, w, seq + 1, state.revs_limit)
            if updated is not None:
                staged[w.doc_id] = updated
                blobs.extend(w.attachments)
                seq += 1
            results.append(result)
        entry = audit.entry(db, sorted(staged)) if audit is not None and staged else None
        for doc in staged.values():
            state.commit(doc)
        for blob in blobs:  # the first blob of a digest in a place stays
            state.attachments.setdefault(blob.digest, {}).setdefault(blob.place, blob)
        state.update_seq = seq
        if entry is not None:  # made before the commit: a failure leaves nothing behind
            self.audit.append(entry)
        return results

    async def changes(
        self,
        db: str,
        places: frozenset[str] | None,
        since: int,
        limit: int,
        *,
        upto: int | None = None,
        include_deleted: bool = True,
        descending: bool = False,
    ) -> list[Change]:
        state = self._db(db)
        scopes = state.scopes_for(places)
        spans = [s.seqs.span(since, upto, low_open=True, descending=descending) for s in scopes]
        rows: Iterator[Change] = map(state.change_at, heapq.merge(*spans, reverse=descending))
        if not include_deleted:
            rows = (row for row in rows if not row.deleted)
        return list(itertools.islice(rows, _stop(0, limit)))

    async def count_changes(self, db: str, places: frozenset[str] | None, since: int) -> int:
        return sum(s.seqs.count_after(since) for s in self._db(db).scopes_for(places))

    async def all_docs(
        self, db: str, places: frozenset[str] | None, query: AllDocsQuery
    ) -> tuple[int, list[Change]]:
        state = self._db(db)
        scopes = state.scopes_for(places)
        low, high, low_open, high_open = _id_bounds(query)
        spans = [
            s.live_ids.span(
                low, high, low_open=low_open, high_open=high_open, descending=query.descending
            )
            for s in scopes
        ]
        ids = heapq.merge(*spans, reverse=query.descending)
        skip = max(query.skip, 0)
        page = itertools.islice(ids, skip, _stop(skip, query.limit))
        total = sum(len(s.live_ids) for s in scopes)
        return total, [state.docs[i].change for i in page]

    # -- attachments ------------------------------------------------------------
    async def get_attachment(
        self, db: str, digest: str, places: frozenset[str] | None
    ) -> AttachmentBlob | None:
        by_place = self._db(db).attachments.get(digest, {})
        candidates = by_place.keys() if places is None else places & by_place.keys()
        return by_place[min(candidates)] if candidates else None

    # -- local documents ----------------------------------------------------------
    async def get_local(self, db: str, owner: str, doc_id: str) -> LocalDoc | None:
        return self._db(db).local.get((owner, doc_id))

    async def put_local(
        self, db: str, owner: str, doc_id: str, expected_rev: str | None, body: bytes
    ) -> str:
        local = self._db(db).local
        current = local.get((owner, doc_id))
        if expected_rev != (None if current is None else current.rev):
            raise Conflict()
        number = 0 if current is None else int(current.rev.split("-", 1)[1])
        rev = f"0-{number + 1}"
        local[(owner, doc_id)] = LocalDoc(doc_id, rev, body)
        return rev

    async def delete_local(self, db: str, owner: str, doc_id: str, rev: str | None) -> None:
        local = self._db(db).local
        current = local.get((owner, doc_id))
        if current is None:
            raise NotFound("missing")
        if rev != current.rev:
            raise Conflict()
        del local[(owner, doc_id)]


def _stop(start: int, limit: int | None) -> int | None:
    """Where a page of ``limit`` rows from ``start`` ends; a negative limit is none (SQL)."""
    return None if limit is None or limit < 0 else start + limit


def _id_bounds(query: AllDocsQuery) -> tuple[str | None, str | None, bool, bool]:
    """(low, high, low_open, high_open): descending swaps the ends; inclusive_end is the end's."""
    if query.descending:
        return query.end, query.start, not query.inclusive_end, False
    return query.start, query.end, False, not query.inclusive_end


def _apply_write(
    current: _Doc | None, w: RevisionWrite, seq: int, revs_limit: int
) -> tuple[WriteResult, _Doc | None]:
    """Merge one revision into its document: (result, the new state or None if unchanged)."""
    rev = w.path[0]
    tree: Mapping[str, revtree.RevNode] = {} if current is None else current.meta.tree
    refused = rules.refusal(None if current is None else current.meta.place, tree, w)
    if refused is not None:
        return WriteResult(w.doc_id, rev, refused), None
    merged = rules.merge(tree, w, revs_limit)
    if merged is None:
        return WriteResult(w.doc_id, rev), None
    sealed = StoredRevision(w.doc_id, rev, w.place, w.deleted, w.key_ref, w.body)
    old = {} if current is None else current.bodies
    bodies = {**{r: b for r, b in old.items() if r not in merged.stemmed}, rev: sealed}
    previous = None if current is None else current.meta.place
    place = rules.winner_place(merged, w, lambda r: _body_place(bodies, r), previous)
    return WriteResult(w.doc_id, rev, place=place), _document(w.doc_id, seq, merged, place, bodies)


def _body_place(bodies: Mapping[str, StoredRevision], rev: str) -> str | None:
    found = bodies.get(rev)
    return None if found is None else found.place


def _document(
    doc_id: str,
    seq: int,
    merged: rules.Merged,
    place: str,
    bodies: Mapping[str, StoredRevision],
) -> _Doc:
    """The document's new state."""
    tree = merged.tree
    meta = DocMeta(doc_id, place, seq, merged.winner, merged.deleted, MappingProxyType(tree))
    change = Change(seq, doc_id, place, merged.winner, merged.deleted, merged.leaves)
    return _Doc(meta, change, bodies)
