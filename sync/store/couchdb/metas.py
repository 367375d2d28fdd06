"""Meta documents: a fieldsync document's revision tree, place and version in CouchDB.

A meta also holds its winning revision's sealed body (``wb``) when that body is
at most ``INLINE_BODY_BYTES``: a pull then reads one CouchDB document per change
(the meta, for the changes page), not two (the meta, then the body from the data
database).  Other revisions' bodies, and larger ones, are read from the data
database, where every body also lives.

A CouchDB cluster may fork a meta document when two instances update it at
once (each shard copy takes one write; internal replication then keeps both as
conflicting revisions).  Revision trees merge by union, so a forked meta is
read as the union of its branches, and the next write stores that union and
deletes the other branches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync.replication import revtree
from sync.store.base import Change, DocMeta, StoredRevision
from sync.store.couchdb import layout
from sync.store.couchdb.client import KEYS_PER_REQUEST, CouchClient


@dataclass(slots=True)
class Meta:
    doc_id: str
    couch_rev: str
    place: str
    version: int
    tree: dict[str, revtree.RevNode]
    places: dict[str, str]  # rev -> place, for revisions whose body is stored
    losers: list[str] = field(default_factory=list)  # forked branches to delete on next write
    winner_body: StoredRevision | None = None  # the winner's sealed body, when held inline
    pending: float | None = None  # set while the write's log entry may be missing (a time)
    _winner: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def winner(self) -> str:
        """CouchDB's winning revision of ``tree`` (worked out once: a meta's tree is never
        changed in place)."""
        if self._winner is None:
            self._winner = revtree.winner(self.tree)
        return self._winner

    def as_doc_meta(self) -> DocMeta:
        win = self.winner
        return DocMeta(
            self.doc_id, self.place, self.version, win, self.tree[win].deleted, self.tree
        )

    def as_change(self) -> Change:
        """The document's latest change; its ``seq`` is the document's version."""
        tree, ordered = self.tree, revtree.sorted_leaves(self.tree)
        win = self._winner = ordered[0]  # the winner comes first
        leaves = tuple((r, tree[r].deleted) for r in ordered)
        return Change(self.version, self.doc_id, self.place, win, tree[win].deleted, leaves)


# The largest sealed body a meta holds inline: metas stay far below Cloudant's 1 MB
# a document (a tree of 1,000 revisions is about 40 kB), and a CHW's record is a few kB.
INLINE_BODY_BYTES = 64 * 1024


def inline(stored: StoredRevision | None) -> StoredRevision | None:
    """``stored`` if a meta may hold it inline."""
    return stored if stored is not None and len(stored.body) <= INLINE_BODY_BYTES else None


def body(
    doc_id: str,
    place: str,
    version: int,
    tree: Mapping[str, revtree.RevNode],
    places: Mapping[str, str],
    winner_body: StoredRevision | None = None,
) -> dict[str, Any]:
    """The JSON of a meta document (without ``_rev``); ``winner_body`` is kept only if it is
    the winner's and small enough."""
    win = revtree.winner(tree)
    doc = {
        "_id": layout.meta_id(doc_id),
        "place": place,
        "v": version,
        "winner": win,
        "deleted": tree[win].deleted,
        "leaves": [[r, tree[r].deleted] for r in revtree.sorted_leaves(tree)],
        "tree": revtree.to_json(tree),
        "rp": dict(places),
    }
    held = inline(winner_body)
    if held is not None and held.rev == win:
        doc["wb"] = {"rev": win, "key_ref": held.key_ref, "body": layout.b64(held.body)}
    return doc


def parse(doc: Mapping[str, Any]) -> Meta:
    meta = Meta(
        doc_id=str(doc["_id"])[len(layout.META_PREFIX) :],
        couch_rev=str(doc["_rev"]),
        place=str(doc["place"]),
        version=int(doc["v"]),
        tree=revtree.from_json(doc["tree"]),
        places={str(k): str(v) for k, v in doc.get("rp", {}).items()},
    )
    if doc.get("pending"):
        meta.pending = float(doc["pending"])
    held = doc.get("wb")
    if isinstance(held, dict) and held.get("rev") == meta.winner:
        win = meta.winner
        meta.winner_body = StoredRevision(
            meta.doc_id,
            win,
            meta.places.get(win, meta.place),
            meta.tree[win].deleted,
            str(held["key_ref"]),
            layout.unb64(held["body"]),
        )
    return meta


def to_doc(meta: Meta) -> dict[str, Any]:
    """The JSON that :func:`parse` reads back as ``meta`` (a base keeps metas so)."""
    doc: dict[str, Any] = {
        "_id": layout.meta_id(meta.doc_id),
        "_rev": meta.couch_rev,
        "place": meta.place,
        "v": meta.version,
        "tree": revtree.to_json(meta.tree),
        "rp": meta.places,
    }
    held = meta.winner_body
    if held is not None and held.rev == meta.winner:
        doc["wb"] = {"rev": held.rev, "key_ref": held.key_ref, "body": layout.b64(held.body)}
    return doc


def _merge(main: Meta, others: Sequence[Meta]) -> Meta:
    tree, places, version = main.tree, dict(main.places), main.version
    for other in others:
        tree = revtree.merge_trees(tree, other.tree)
        places.update(other.places)
        version = max(version, other.version)
    win = revtree.winner(tree)
    place = places.get(win, main.place)
    losers = [o.couch_rev for o in others]
    held = [b for m in (main, *others) if (b := m.winner_body) is not None and b.rev == win]
    merged = Meta(main.doc_id, main.couch_rev, place, version, tree, places, losers)
    merged.winner_body = held[0] if held else None
    merged.pending = max((p for m in (main, *others) if (p := m.pending) is not None), default=None)
    return merged


async def load(
    client: CouchClient, meta_db: str, ids: Sequence[str], per_request: int = KEYS_PER_REQUEST
) -> dict[str, Meta]:
    """The metas of ``ids`` that exist, forks merged; read by id (quorum reads),
    ``per_request`` ids a request."""
    found: dict[str, Meta] = {}
    keys = [layout.meta_id(i) for i in dict.fromkeys(ids)]
    for leaves in (await client.leaves_by_id(meta_db, keys, per_request)).values():
        branches = [parse(doc) for doc in leaves if "tree" in doc]
        if branches:
            meta = _merge(branches[0], branches[1:]) if len(branches) > 1 else branches[0]
            found[meta.doc_id] = meta
    return found
