"""What a batch of writes does to each document, decided before anything is saved.

The rules are :mod:`sync.store.rules` (the same for every backend); here they are
applied, document by document, to the metas just read, each write of a batch to
the tree the ones before it left (as SQLite's one transaction does).  Nothing is
saved until every document of the batch is planned, so a batch that a rule refuses
as a bad request leaves nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync.errors import FieldsyncError
from sync.replication import revtree
from sync.store import rules
from sync.store.base import RevisionWrite, StoredRevision, WriteResult
from sync.store.couchdb import metas


@dataclass(frozen=True, slots=True)
class Limits:
    """What the database and the store allow beside the rules."""

    revs_limit: int
    too_large: Callable[[RevisionWrite], FieldsyncError | None]  # a write CouchDB would refuse


@dataclass(slots=True)
class Plan:
    """One document's part of a write."""

    doc_id: str
    meta: dict[str, Any]  # the meta document to save; ``_rev`` when it exists
    old: metas.Meta | None
    written: list[RevisionWrite] = field(default_factory=list)  # accepted, in order
    stemmed: list[str] = field(default_factory=list)  # stored bodies the tree no longer holds

    @property
    def place(self) -> str:
        return str(self.meta["place"])

    @property
    def version(self) -> int:
        return int(self.meta["v"])

    def bodies(self) -> list[RevisionWrite]:
        """The accepted writes whose revision the tree still holds: their bodies are stored."""
        tree = self.meta["tree"]
        return [w for w in self.written if w.path[0] in tree]


def plan(
    doc_id: str,
    items: Sequence[tuple[int, RevisionWrite]],
    old: metas.Meta | None,
    limits: Limits,
    results: list[WriteResult | None],
) -> Plan | None:
    """Apply the writes ``items`` (index in the batch, write) of one document to ``old``.

    Sets each write's result; the plan, or None when nothing is to be saved.
    """
    tree: dict[str, revtree.RevNode] = dict(old.tree) if old else {}
    place = old.place if old else None
    places = dict(old.places) if old else {}
    version = old.version if old else 0
    written: list[RevisionWrite] = []
    for index, w in items:
        refused = rules.refusal(place, tree, w) or limits.too_large(w)
        results[index] = WriteResult(w.doc_id, w.path[0], refused)
        if refused is not None:
            continue
        merged = rules.merge(tree, w, limits.revs_limit)
        if merged is None:  # a known revision, sent again
            continue
        places = {r: p for r, p in places.items() if r in merged.tree}
        places[w.path[0]] = w.place
        place = rules.winner_place(merged, w, places.get, place)
        tree, version = merged.tree, version + 1
        written.append(w)
    if not written or place is None:
        return None
    doc = metas.body(doc_id, place, version, tree, places, _winner_body(tree, written, old))
    doc["pending"] = time.time()
    if old is not None:
        doc["_rev"] = old.couch_rev
    stemmed = [r for r in (old.places if old else {}) if r not in tree]
    return Plan(doc_id, doc, old, written, stemmed)


def _winner_body(
    tree: dict[str, revtree.RevNode], written: Sequence[RevisionWrite], old: metas.Meta | None
) -> StoredRevision | None:
    """The new winner's sealed body if it is at hand: written now, or held by the old meta.
    (A winner neither wrote nor held, such as the other branch when the winner is
    deleted, is read from the data database until a write brings its body.)"""
    win = revtree.winner(tree)
    for w in reversed(written):
        if w.path[0] == win:
            return StoredRevision(w.doc_id, win, w.place, w.deleted, w.key_ref, w.body)
    held = old.winner_body if old is not None else None
    return held if held is not None and held.rev == win else None


def settling(meta: metas.Meta) -> Plan:
    """The plan that re-saves ``meta`` as it is (forks merged) and appends its entry."""
    doc = metas.body(
        meta.doc_id, meta.place, meta.version, meta.tree, meta.places, meta.winner_body
    )
    doc["_rev"] = meta.couch_rev
    return Plan(meta.doc_id, doc, meta)
