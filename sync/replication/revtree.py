"""Revision trees, as CouchDB keeps them.

Grammar (https://docs.couchdb.org/en/stable/replication/conflicts.html and
https://docs.couchdb.org/en/stable/api/database/misc.html#db-revs-diff)::

    rev      := POS "-" HASH            POS >= 1 (canonical decimal), HASH any non-empty
                                        string without control characters
    tree     := { rev: node }           every revision the store knows of
    node     := (parent, deleted)       parent is the rev at POS-1, or None for a
                                        root or when the ancestor was stemmed away

A *leaf* is a rev that is nobody's parent.  The *winner* is the non-deleted
leaf with the highest POS, ties broken by the highest HASH (string order);
when every leaf is deleted, the same rule over deleted leaves.  The other
non-deleted leaves are the document's ``_conflicts``; deleted ones are
``_deleted_conflicts``.

CouchDB takes everything after the first "-" as the revision id (couch_doc:parse_rev),
so "3-totally_fake_rev" is a rev: a write naming it as a parent that is not a leaf is a
409 conflict, not a malformed request.

Trees are plain dicts treated as values: every function returns a new dict
and never mutates its argument, so merging is a pure union and the order in
which revisions arrive cannot change the result.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sync.errors import BadRequest

# C0 and C1 control characters are refused: they have no business in a revision id.
_REV_RE = re.compile(r"([1-9][0-9]{0,9})-([^\x00-\x1f\x7f-\x9f]+)")


@dataclass(frozen=True, slots=True)
class RevNode:
    parent: str | None
    deleted: bool


RevTree = Mapping[str, RevNode]


def parse_rev(rev: object) -> tuple[int, str]:
    """Split ``"N-hash"`` into ``(N, hash)``; anything else is a bad request."""
    if not isinstance(rev, str):
        raise BadRequest("Invalid rev format")
    match = _REV_RE.fullmatch(rev)
    if match is None:
        raise BadRequest("Invalid rev format")
    return int(match.group(1)), match.group(2)


def rev_pos(rev: str) -> int:
    return parse_rev(rev)[0]


def path_from_revisions(start: int, ids: Sequence[str]) -> list[str]:
    """Turn a ``_revisions`` object (newest first) into a list of revs."""
    if (
        not isinstance(start, int)
        or isinstance(start, bool)
        or isinstance(ids, str)
        or not all(isinstance(h, str) for h in ids)
    ):
        raise BadRequest("Invalid _revisions: start must be an integer, ids strings")
    if start < len(ids) or not ids:
        raise BadRequest("Invalid _revisions: start is smaller than the history")
    path = [f"{start - i}-{h}" for i, h in enumerate(ids)]
    for rev in path:
        parse_rev(rev)
    return path


def merge_path(tree: RevTree, path: Sequence[str], deleted: bool) -> dict[str, RevNode]:
    """Add a linear history (newest first) to a tree; the newest is ``deleted`` or not.

    Known revisions keep their deleted flag, except that a revision first
    seen only as an ancestor (which carries no flag of its own) learns it is
    deleted when it arrives as a deleted newest revision; a known revision
    whose parent was unknown (a stemmed or partial history) learns its parent.
    """
    merged = dict(tree)
    for i, rev in enumerate(path):
        parent = path[i + 1] if i + 1 < len(path) else None
        merged[rev] = _join(merged.get(rev), RevNode(parent, deleted and i == 0))
    return merged


def _join(known: RevNode | None, node: RevNode) -> RevNode:
    """One revision seen twice: a known parent beats an unknown one, deleted sticks.

    Commutative, so merging is order-independent (CouchDB's key tree likewise
    prefers a revision's own value over an ancestor's placeholder).
    """
    if known is None:
        return node
    return RevNode(
        known.parent if known.parent is not None else node.parent,
        known.deleted or node.deleted,
    )


def merge_trees(left: RevTree, right: RevTree) -> dict[str, RevNode]:
    """Union of two trees; a known parent beats an unknown one."""
    merged = dict(left)
    for rev, node in right.items():
        merged[rev] = _join(merged.get(rev), node)
    return merged


def leaves(tree: RevTree) -> list[str]:
    parents = {node.parent for node in tree.values()}
    return [rev for rev in tree if rev not in parents]


def _rank(tree: RevTree, rev: str) -> tuple[bool, int, str]:
    pos, digest = parse_rev(rev)
    return (not tree[rev].deleted, pos, digest)


def sorted_leaves(tree: RevTree) -> list[str]:
    """Leaves, winner first, in CouchDB's order."""
    return sorted(leaves(tree), key=lambda rev: _rank(tree, rev), reverse=True)


def winner(tree: RevTree) -> str:
    if not tree:
        raise ValueError("an empty tree has no winner")
    return max(leaves(tree), key=lambda rev: _rank(tree, rev))


def conflicts(tree: RevTree) -> list[str]:
    """Non-deleted leaves that lost, best first."""
    win = winner(tree)
    return [rev for rev in sorted_leaves(tree) if rev != win and not tree[rev].deleted]


def deleted_conflicts(tree: RevTree) -> list[str]:
    win = winner(tree)
    return [rev for rev in sorted_leaves(tree) if rev != win and tree[rev].deleted]


def is_deleted(tree: RevTree) -> bool:
    return tree[winner(tree)].deleted


def history(tree: RevTree, rev: str, limit: int | None = None) -> list[str]:
    """``rev`` and its known ancestors, newest first (the ``_revisions`` order)."""
    chain: list[str] = []
    current: str | None = rev
    while current is not None and current in tree:
        chain.append(current)
        if limit is not None and len(chain) >= limit:
            break
        current = tree[current].parent
    return chain


def known_from(tree: RevTree, leaves: Iterable[str]) -> dict[str, RevNode]:
    """The part of ``tree`` these leaves and their ancestors make up (a caller's branches)."""
    keep: set[str] = set()
    for leaf in leaves:
        keep.update(history(tree, leaf))
    return {rev: node for rev, node in tree.items() if rev in keep}


def revisions_field(tree: RevTree, rev: str, limit: int | None = None) -> dict[str, object]:
    chain = history(tree, rev, limit)
    return {"start": rev_pos(rev), "ids": [r.split("-", 1)[1] for r in chain]}


def leaves_under(tree: RevTree, rev: str) -> list[str]:
    """The leaves that descend from ``rev`` (``rev`` itself if it is a leaf): ``latest``.

    A rev the tree does not hold has none (CouchDB reports it as missing).
    """
    if rev not in tree:
        return []
    children: dict[str, list[str]] = {}
    for child, node in tree.items():
        if node.parent is not None:
            children.setdefault(node.parent, []).append(child)
    found: list[str] = []
    stack = [rev]
    while stack:
        current = stack.pop()
        kids = children.get(current)
        if kids:
            stack.extend(kids)
        else:
            found.append(current)
    return sorted(found, key=lambda r: _rank(tree, r), reverse=True)


def stem(tree: RevTree, limit: int) -> dict[str, RevNode]:
    """Keep only the ``limit`` newest revisions on every branch (``revs_limit``)."""
    keep: set[str] = set()
    for leaf in leaves(tree):
        keep.update(history(tree, leaf, limit))
    return {
        rev: node if node.parent in keep else RevNode(None, node.deleted)
        for rev, node in tree.items()
        if rev in keep
    }


def missing_revs(tree: RevTree, revs: Iterable[str]) -> list[str]:
    """Revs of ``revs`` the tree does not hold, in the order given (``_revs_diff``)."""
    return [rev for rev in dict.fromkeys(revs) if rev not in tree]


def possible_ancestors(tree: RevTree, rev: str) -> list[str]:
    """Leaves of the tree that could be ancestors of a missing ``rev`` (lower POS)."""
    pos = rev_pos(rev)
    return sorted(r for r in leaves(tree) if rev_pos(r) < pos)


def to_json(tree: RevTree) -> dict[str, list[object]]:
    return {rev: [node.parent, node.deleted] for rev, node in tree.items()}


def from_json(data: Mapping[str, Sequence[object]]) -> dict[str, RevNode]:
    return {
        rev: RevNode(parent if isinstance(parent, str) else None, bool(deleted))
        for rev, (parent, deleted) in data.items()
    }
