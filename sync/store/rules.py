"""The write rules every backend applies, as pure functions over revision trees.

A backend loads a document's tree and place, asks :func:`refusal` whether the
write may happen, :func:`merge` for the new tree, and :func:`winner_place` for
the document's new place; it then only saves.  (STYLE.md, point 3: protocol
logic once, above the storage primitives.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sync.errors import Conflict, FieldsyncError, Forbidden
from sync.replication import revtree
from sync.store.base import SHARED, RevisionWrite

Tree = Mapping[str, revtree.RevNode]


class DocumentElsewhere(Forbidden):
    """A write to a document that lives in a place outside the writer's capture scope."""

    default_reason = "You may not write this document."


@dataclass(frozen=True, slots=True)
class Merged:
    """A document's tree after a write, and what a backend must save or free."""

    tree: dict[str, revtree.RevNode]
    winner: str
    deleted: bool
    leaves: tuple[tuple[str, bool], ...]
    stemmed: tuple[str, ...]


def extends_a_leaf(tree: Tree, path: Sequence[str]) -> bool:
    """CouchDB's update rule: a new document, or a new child of a current leaf."""
    if len(path) == 1:
        return not tree
    return path[1] in revtree.leaves(tree) and path[0] not in tree


def refusal(current_place: str | None, tree: Tree, w: RevisionWrite) -> FieldsyncError | None:
    """Why this write may not happen (the document is elsewhere, or it conflicts), or None."""
    allowed = w.allowed_places
    if current_place is not None and allowed is not None and current_place not in allowed:
        return DocumentElsewhere()
    if w.new_edits and not extends_a_leaf(tree, w.path):
        return Conflict()
    return None


def merge(tree: Tree, w: RevisionWrite, revs_limit: int) -> Merged | None:
    """The tree with ``w`` merged and stemmed; None when the replicator re-sends a known rev."""
    if not w.new_edits and w.path[0] in tree:
        return None
    merged = revtree.stem(revtree.merge_path(tree, w.path, w.deleted), revs_limit)
    win = revtree.winner(merged)
    leaves = tuple((leaf, merged[leaf].deleted) for leaf in revtree.sorted_leaves(merged))
    stemmed = tuple(rev for rev in tree if rev not in merged)
    return Merged(merged, win, merged[win].deleted, leaves, stemmed)


def winner_place(
    merged: Merged, w: RevisionWrite, place_of: Callable[[str], str | None], previous: str | None
) -> str:
    """A document lives where its winning revision says."""
    if merged.winner == w.path[0]:
        return w.place
    found = place_of(merged.winner)
    if found is not None:
        return found
    return SHARED if previous is None else previous
