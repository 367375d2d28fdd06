"""Tests for the pure revision-tree module.

Expected values follow CouchDB's documented semantics
(https://docs.couchdb.org/en/stable/replication/conflicts.html and the
``_revs_diff`` / ``open_revs`` API docs) and CouchDB's ``couch_key_tree``
behaviour for merging and stemming.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.errors import BadRequest
from sync.replication.revtree import (
    RevNode,
    conflicts,
    deleted_conflicts,
    from_json,
    history,
    is_deleted,
    known_from,
    leaves,
    leaves_under,
    merge_path,
    merge_trees,
    missing_revs,
    parse_rev,
    path_from_revisions,
    possible_ancestors,
    rev_pos,
    revisions_field,
    sorted_leaves,
    stem,
    to_json,
    winner,
)

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

Spec = Mapping[str, tuple[str | None, bool]]


def T(spec: Spec) -> dict[str, RevNode]:
    """Build a tree from ``{rev: (parent, deleted)}``."""
    return {rev: RevNode(parent, deleted) for rev, (parent, deleted) in spec.items()}


def build(paths: Sequence[tuple[Sequence[str], bool]]) -> dict[str, RevNode]:
    tree: dict[str, RevNode] = {}
    for path, deleted in paths:
        tree = merge_path(tree, path, deleted)
    return tree


# A document edited 1-a -> 2-b, then branched:
#
#   1-a -> 2-b -> 3-c
#              \-> 3-d -> 4-e (deleted)
#       \-> 2-f
BRANCHY_SPEC: Spec = {
    "1-a": (None, False),
    "2-b": ("1-a", False),
    "3-c": ("2-b", False),
    "3-d": ("2-b", False),
    "4-e": ("3-d", True),
    "2-f": ("1-a", False),
}
BRANCHY = T(BRANCHY_SPEC)

LINEAR5_SPEC: Spec = {
    "1-a": (None, False),
    "2-b": ("1-a", False),
    "3-c": ("2-b", False),
    "4-d": ("3-c", False),
    "5-e": ("4-d", False),
}
LINEAR5 = T(LINEAR5_SPEC)


# --------------------------------------------------------------------------
# parse_rev
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rev", "expected"),
    [
        ("1-a", (1, "a")),
        ("10-abc", (10, "abc")),
        ("2-967a00dff5e02add41819138abb3284d", (2, "967a00dff5e02add41819138abb3284d")),
        ("9999999999-Z9z", (9999999999, "Z9z")),
        ("123-0", (123, "0")),
        # CouchDB takes everything after the first "-" as the id (couch_doc:parse_rev)
        ("3-totally_fake_rev", (3, "totally_fake_rev")),
        ("1-a-b", (1, "a-b")),
        ("1-ab_c", (1, "ab_c")),
        ("1-a ", (1, "a ")),
        ("1-é", (1, "é")),
    ],
)
def test_parse_rev_valid(rev: str, expected: tuple[int, str]) -> None:
    assert parse_rev(rev) == expected
    assert rev_pos(rev) == expected[0]


@pytest.mark.parametrize(
    "rev",
    [
        "0-a",
        "x-a",
        "1-",
        "-1-a",
        1,
        None,
        "",
        "-",
        "1",
        "a",
        "01-a",  # not canonical: would be a second key for "1-a"
        " 1-a",
        "1-a\n",  # control characters are refused
        "1-a\tb",
        "1-\x00",
        "1-a\x7f",
        "1-\x85",
        "\u0661-a",  # ARABIC-INDIC DIGIT ONE
        "12345678901-a",  # more than 10 digits
        b"1-a",
        ["1-a"],
        1.5,
    ],
)
def test_parse_rev_invalid(rev: object) -> None:
    with pytest.raises(BadRequest):
        parse_rev(rev)


def test_parse_rev_error_is_a_400() -> None:
    with pytest.raises(BadRequest) as info:
        parse_rev("nope")
    assert info.value.status == 400
    assert info.value.to_json()["error"] == "bad_request"


# --------------------------------------------------------------------------
# winner, conflicts, deleted_conflicts, leaves
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected_winner"),
    [
        pytest.param({"1-a": (None, False)}, "1-a", id="single"),
        pytest.param({"1-a": (None, True)}, "1-a", id="single-deleted"),
        pytest.param(
            {"1-a": (None, False), "2-b": ("1-a", False)},
            "2-b",
            id="internal-node-never-wins",
        ),
        pytest.param(
            {"1-a": (None, False), "2-b": ("1-a", False), "2-c": ("1-a", False)},
            "2-c",
            id="tie-highest-hash",
        ),
        pytest.param(
            {"1-a": (None, False), "2-c": ("1-a", False), "2-b": ("1-a", False)},
            "2-c",
            id="tie-independent-of-insertion-order",
        ),
        pytest.param(
            {"1-x": (None, False), "2-B": ("1-x", False), "2-a": ("1-x", False)},
            "2-a",
            id="tie-string-order-lowercase-beats-uppercase",
        ),
        pytest.param(
            {"1-x": (None, False), "2-9": ("1-x", False), "2-10": ("1-x", False)},
            "2-9",
            id="tie-string-not-numeric",
        ),
        pytest.param(
            {
                "1-a": (None, False),
                "2-b": ("1-a", False),
                "3-c": ("2-b", True),
                "2-z": ("1-a", False),
            },
            "2-z",
            id="deleted-longer-branch-loses",
        ),
        pytest.param(
            {"1-a": (None, False), "2-b": ("1-a", True), "2-c": ("1-a", True)},
            "2-c",
            id="all-deleted-tie-highest-hash",
        ),
        pytest.param(
            {
                "1-a": (None, False),
                "2-b": ("1-a", False),
                "3-c": ("2-b", True),
                "2-d": ("1-a", True),
            },
            "3-c",
            id="all-deleted-highest-pos",
        ),
        pytest.param(
            {
                "1-a": (None, False),
                "2-b": ("1-a", False),
                "3-c": ("2-b", False),
                "4-d": ("3-c", False),
                "5-e": ("4-d", False),
                "6-f": ("5-e", False),
                "7-g": ("6-f", False),
                "8-h": ("7-g", False),
                "9-i": ("8-h", False),
                "10-a": ("9-i", False),
                "9-z": ("8-h", False),
            },
            "10-a",
            id="pos-compared-as-integer",
        ),
        pytest.param(
            {"3-c": (None, False), "4-d": ("3-c", False), "7-x": (None, False)},
            "7-x",
            id="stemmed-disconnected-roots",
        ),
        pytest.param(
            {"1-a": (None, False), "1-b": (None, False)},
            "1-b",
            id="two-roots",
        ),
    ],
)
def test_winner(spec: Spec, expected_winner: str) -> None:
    tree = T(spec)
    assert winner(tree) == expected_winner
    assert sorted_leaves(tree)[0] == expected_winner
    assert is_deleted(tree) is tree[expected_winner].deleted


def test_winner_of_empty_tree() -> None:
    with pytest.raises(ValueError):
        winner({})


@pytest.mark.parametrize(
    ("spec", "expected_conflicts", "expected_deleted_conflicts"),
    [
        pytest.param({"1-a": (None, False)}, [], [], id="single"),
        pytest.param(
            {"1-a": (None, False), "2-b": ("1-a", False)},
            [],
            [],
            id="linear",
        ),
        pytest.param(
            {"1-a": (None, False), "2-b": ("1-a", False), "2-c": ("1-a", False)},
            ["2-b"],
            [],
            id="simple-conflict",
        ),
        pytest.param(
            {
                "1-a": (None, False),
                "2-b": ("1-a", False),
                "2-c": ("1-a", False),
                "3-d": ("2-b", False),
                "2-e": ("1-a", True),
                "3-f": ("2-b", True),
            },
            ["2-c"],
            ["3-f", "2-e"],
            id="mixed-best-first",
        ),
        pytest.param(
            {"1-a": (None, False), "2-b": ("1-a", True), "2-c": ("1-a", True)},
            [],
            ["2-b"],
            id="all-deleted",
        ),
        pytest.param(
            {
                "1-a": (None, False),
                "2-b": ("1-a", False),
                "2-c": ("1-a", False),
                "2-d": ("1-a", False),
                "2-a": ("1-a", False),
            },
            ["2-c", "2-b", "2-a"],
            [],
            id="several-conflicts-sorted-desc",
        ),
        pytest.param(
            {
                "1-a": (None, False),
                "2-b": ("1-a", False),
                "3-c": ("2-b", False),
                "2-z": ("1-a", False),
            },
            ["2-z"],
            [],
            id="pos-before-hash",
        ),
    ],
)
def test_conflicts(
    spec: Spec, expected_conflicts: list[str], expected_deleted_conflicts: list[str]
) -> None:
    tree = T(spec)
    assert conflicts(tree) == expected_conflicts
    assert deleted_conflicts(tree) == expected_deleted_conflicts


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"1-a": (None, False)}, {"1-a"}, id="single"),
        pytest.param({"1-x": (None, True)}, {"1-x"}, id="deleted-leaf"),
        pytest.param({"1-a": (None, False), "2-b": ("1-a", False)}, {"2-b"}, id="linear"),
        pytest.param(BRANCHY_SPEC, {"3-c", "4-e", "2-f"}, id="branchy"),
        pytest.param(
            {"3-c": (None, False), "4-d": ("3-c", False), "4-e": ("3-c", False)},
            {"4-d", "4-e"},
            id="stemmed",
        ),
    ],
)
def test_leaves(spec: Spec, expected: set[str]) -> None:
    found = leaves(T(spec))
    assert len(found) == len(expected)
    assert set(found) == expected


def test_sorted_leaves_order() -> None:
    assert sorted_leaves(BRANCHY) == ["3-c", "2-f", "4-e"]


# --------------------------------------------------------------------------
# history, revisions_field
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tree", "rev", "limit", "expected"),
    [
        (BRANCHY, "4-e", None, ["4-e", "3-d", "2-b", "1-a"]),
        (BRANCHY, "4-e", 2, ["4-e", "3-d"]),
        (BRANCHY, "4-e", 1, ["4-e"]),
        (BRANCHY, "4-e", 4, ["4-e", "3-d", "2-b", "1-a"]),
        (BRANCHY, "4-e", 100, ["4-e", "3-d", "2-b", "1-a"]),
        (BRANCHY, "3-c", None, ["3-c", "2-b", "1-a"]),
        (BRANCHY, "2-b", None, ["2-b", "1-a"]),
        (BRANCHY, "2-f", None, ["2-f", "1-a"]),
        (BRANCHY, "1-a", None, ["1-a"]),
        (BRANCHY, "9-zz", None, []),
        (T({"3-c": (None, False), "4-d": ("3-c", False)}), "4-d", None, ["4-d", "3-c"]),
    ],
)
def test_history(
    tree: dict[str, RevNode], rev: str, limit: int | None, expected: list[str]
) -> None:
    assert history(tree, rev, limit) == expected


@pytest.mark.parametrize(
    ("tree", "rev", "limit", "expected"),
    [
        (BRANCHY, "4-e", None, {"start": 4, "ids": ["e", "d", "b", "a"]}),
        (BRANCHY, "4-e", 2, {"start": 4, "ids": ["e", "d"]}),
        (BRANCHY, "2-f", None, {"start": 2, "ids": ["f", "a"]}),
        (
            T({"7-x": (None, False), "8-yy": ("7-x", True)}),
            "8-yy",
            None,
            {"start": 8, "ids": ["yy", "x"]},
        ),
    ],
)
def test_revisions_field(
    tree: dict[str, RevNode], rev: str, limit: int | None, expected: dict[str, object]
) -> None:
    field = revisions_field(tree, rev, limit)
    assert field == expected
    # The _revisions object turns back into the same history.
    ids = field["ids"]
    start = field["start"]
    assert isinstance(ids, list)
    assert isinstance(start, int)
    assert path_from_revisions(start, ids) == history(tree, rev, limit)


# --------------------------------------------------------------------------
# leaves_under (open_revs with latest=true)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rev", "expected"),
    [
        ("1-a", ["3-c", "2-f", "4-e"]),
        ("2-b", ["3-c", "4-e"]),
        ("3-d", ["4-e"]),
        ("3-c", ["3-c"]),
        ("4-e", ["4-e"]),
        ("2-f", ["2-f"]),
        # A rev the tree does not know has no leaves: CouchDB answers "missing".
        ("5-zzz", []),
        ("1-b", []),
    ],
)
def test_leaves_under(rev: str, expected: list[str]) -> None:
    assert leaves_under(BRANCHY, rev) == expected


# --------------------------------------------------------------------------
# known_from (the branches a caller may know of)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("readable", "expected"),
    [
        (["3-c", "2-f", "4-e"], {"1-a", "2-b", "3-c", "3-d", "4-e", "2-f"}),
        (["3-c"], {"1-a", "2-b", "3-c"}),
        (["2-f"], {"1-a", "2-f"}),
        (["4-e", "2-f"], {"1-a", "2-b", "3-d", "4-e", "2-f"}),
        ([], set()),
    ],
)
def test_known_from(readable: list[str], expected: set[str]) -> None:
    known = known_from(BRANCHY, readable)
    assert set(known) == expected
    assert all(known[rev] == BRANCHY[rev] for rev in known)
    assert sorted(leaves(known)) == sorted(readable)


def test_leaves_under_stemmed_tree() -> None:
    tree = T({"3-c": (None, False), "4-d": ("3-c", False), "4-e": ("3-c", True)})
    assert leaves_under(tree, "3-c") == ["4-d", "4-e"]
    # The stemmed ancestor is not known any more.
    assert leaves_under(tree, "2-b") == []


# --------------------------------------------------------------------------
# stem
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "limit", "expected"),
    [
        pytest.param(LINEAR5_SPEC, 10, LINEAR5_SPEC, id="under-limit"),
        pytest.param(LINEAR5_SPEC, 5, LINEAR5_SPEC, id="at-limit"),
        pytest.param(
            LINEAR5_SPEC,
            3,
            {"3-c": (None, False), "4-d": ("3-c", False), "5-e": ("4-d", False)},
            id="linear-3",
        ),
        pytest.param(LINEAR5_SPEC, 1, {"5-e": (None, False)}, id="linear-1"),
        pytest.param(
            BRANCHY_SPEC,
            1,
            {"3-c": (None, False), "4-e": (None, True), "2-f": (None, False)},
            id="branchy-1-leaves-only",
        ),
        # CouchDB's couch_key_tree:stem keeps a rev when it is among the `limit`
        # newest of *some* branch, and keeps the links between kept revs.  With
        # limit 2, 2-f keeps 1-a and 3-c keeps 2-b, so nothing of BRANCHY goes.
        pytest.param(BRANCHY_SPEC, 2, BRANCHY_SPEC, id="branchy-2-shared-ancestors-kept"),
        pytest.param(
            {
                "1-a": (None, False),
                "2-b": ("1-a", False),
                "3-c": ("2-b", False),
                "4-d": ("3-c", False),
                "3-x": ("2-b", False),
            },
            2,
            {
                "2-b": (None, False),
                "3-c": ("2-b", False),
                "4-d": ("3-c", False),
                "3-x": ("2-b", False),
            },
            id="shared-ancestor-kept-by-short-branch",
        ),
        pytest.param(
            {
                "1-a": (None, False),
                "2-b": ("1-a", False),
                "3-c": ("2-b", False),
                "4-d": ("3-c", False),
                "5-e": ("4-d", False),
                "3-x": ("2-b", True),
            },
            2,
            {
                "4-d": (None, False),
                "5-e": ("4-d", False),
                "2-b": (None, False),
                "3-x": ("2-b", True),
            },
            id="branch-splits-into-two-trees",
        ),
        pytest.param(
            {"3-c": (None, False), "4-d": ("3-c", False), "5-e": ("4-d", True)},
            2,
            {"4-d": (None, False), "5-e": ("4-d", True)},
            id="already-stemmed",
        ),
    ],
)
def test_stem(spec: Spec, limit: int, expected: Spec) -> None:
    tree = T(spec)
    before = copy.deepcopy(tree)
    stemmed = stem(tree, limit)
    assert stemmed == T(expected)
    assert tree == before  # pure
    assert winner(stemmed) == winner(tree)
    assert conflicts(stemmed) == conflicts(tree)
    assert deleted_conflicts(stemmed) == deleted_conflicts(tree)


# --------------------------------------------------------------------------
# merge_path, merge_trees
# --------------------------------------------------------------------------


def test_merge_path_into_empty_tree() -> None:
    tree = merge_path({}, ["3-c", "2-b", "1-a"], False)
    assert tree == T({"3-c": ("2-b", False), "2-b": ("1-a", False), "1-a": (None, False)})


def test_merge_path_deleted_flag_only_on_the_newest() -> None:
    tree = merge_path({}, ["3-c", "2-b", "1-a"], True)
    assert tree == T({"3-c": ("2-b", True), "2-b": ("1-a", False), "1-a": (None, False)})
    assert is_deleted(tree)


def test_merge_path_stemmed_history_has_no_parent() -> None:
    tree = merge_path({}, ["7-g", "6-f"], False)
    assert tree == T({"7-g": ("6-f", False), "6-f": (None, False)})


def test_merge_path_empty_path_is_a_no_op() -> None:
    assert merge_path(BRANCHY, [], False) == BRANCHY


def test_merge_path_new_branch_makes_a_conflict() -> None:
    base = T({"1-a": (None, False), "2-b": ("1-a", False)})
    tree = merge_path(base, ["2-c", "1-a"], False)
    assert tree == T({"1-a": (None, False), "2-b": ("1-a", False), "2-c": ("1-a", False)})
    assert winner(tree) == "2-c"
    assert conflicts(tree) == ["2-b"]


def test_merge_path_extends_a_branch() -> None:
    base = T({"1-a": (None, False), "2-b": ("1-a", False)})
    tree = merge_path(base, ["4-d", "3-c", "2-b", "1-a"], False)
    assert tree == T(
        {
            "1-a": (None, False),
            "2-b": ("1-a", False),
            "3-c": ("2-b", False),
            "4-d": ("3-c", False),
        }
    )
    assert leaves(tree) == ["4-d"]
    assert conflicts(tree) == []


def test_merge_path_partial_history_joins_the_tree() -> None:
    # A client sends only the last two revs of its history (revs_limit on its side).
    base = T({"1-a": (None, False), "2-b": ("1-a", False)})
    tree = merge_path(base, ["3-c", "2-b"], False)
    assert tree == T({"1-a": (None, False), "2-b": ("1-a", False), "3-c": ("2-b", False)})


def test_merge_path_restores_stemmed_parent_link() -> None:
    stemmed = T({"3-c": (None, False), "4-d": ("3-c", False)})
    tree = merge_path(stemmed, ["4-d", "3-c", "2-b", "1-a"], False)
    assert tree == T(
        {
            "1-a": (None, False),
            "2-b": ("1-a", False),
            "3-c": ("2-b", False),
            "4-d": ("3-c", False),
        }
    )
    assert history(tree, "4-d") == ["4-d", "3-c", "2-b", "1-a"]


def test_merge_path_restoring_parent_keeps_deleted_flag() -> None:
    stemmed = T({"3-c": (None, True)})
    tree = merge_path(stemmed, ["3-c", "2-b"], False)
    assert tree == T({"3-c": ("2-b", True), "2-b": (None, False)})


def test_merge_path_shorter_history_does_not_forget_a_parent() -> None:
    base = T({"1-a": (None, False), "2-b": ("1-a", False), "3-c": ("2-b", False)})
    assert merge_path(base, ["3-c", "2-b"], False) == base
    assert merge_path(base, ["3-c"], False) == base


def test_merge_path_known_deleted_rev_stays_deleted_when_extended() -> None:
    # CouchDB lets a tombstone be extended (the document is re-created).
    base = T({"1-a": (None, False), "2-b": ("1-a", True)})
    tree = merge_path(base, ["3-c", "2-b", "1-a"], False)
    assert tree == T({"1-a": (None, False), "2-b": ("1-a", True), "3-c": ("2-b", False)})
    assert winner(tree) == "3-c"
    assert not is_deleted(tree)


def test_merge_path_known_leaf_keeps_deleted_flag() -> None:
    base = T({"1-a": (None, False), "2-b": ("1-a", True), "2-c": ("1-a", False)})
    assert merge_path(base, ["2-b", "1-a"], True) == base
    assert merge_path(base, ["2-c", "1-a"], False) == base
    assert merge_path(base, ["2-b"], True) == base


def test_merge_path_known_internal_rev_keeps_deleted_flag() -> None:
    base = T({"1-a": (None, False), "2-b": ("1-a", False), "3-c": ("2-b", False)})
    # 2-b passes through as an ancestor: it is not marked deleted.
    tree = merge_path(base, ["3-d", "2-b", "1-a"], True)
    assert tree["2-b"] == RevNode("1-a", False)
    assert tree["3-d"] == RevNode("2-b", True)


def test_merge_path_tombstone_learned_after_its_descendant() -> None:
    """The deleted flag of a rev does not depend on arrival order.

    1-a -> 2-b (deleted) -> 3-c: 2-b was a tombstone that was later extended.
    Whether a peer first sends 3-c (with 2-b only as an ancestor) or first
    sends the tombstone 2-b, the resulting tree must be the same, as the
    module promises and as CouchDB's couch_key_tree (which prefers a real
    revision value over a placeholder for a missing ancestor) does.
    """
    full = ["3-c", "2-b", "1-a"]
    tomb = ["2-b", "1-a"]
    first = build([(tomb, True), (full, False)])
    second = build([(full, False), (tomb, True)])
    expected = T({"1-a": (None, False), "2-b": ("1-a", True), "3-c": ("2-b", False)})
    assert first == expected
    assert second == expected


def test_merge_path_does_not_mutate() -> None:
    base = T({"3-c": (None, False)})
    snapshot = copy.deepcopy(base)
    merge_path(base, ["4-d", "3-c", "2-b"], True)
    assert base == snapshot


def test_merge_trees() -> None:
    left = T({"1-a": (None, False), "2-b": ("1-a", False)})
    right = T({"3-c": (None, True), "2-x": (None, False)})
    assert merge_trees(left, right) == T(
        {
            "1-a": (None, False),
            "2-b": ("1-a", False),
            "3-c": (None, True),
            "2-x": (None, False),
        }
    )


def test_merge_trees_known_parent_beats_unknown_either_side() -> None:
    full = T({"1-a": (None, False), "2-b": ("1-a", False), "3-c": ("2-b", True)})
    stemmed = T({"3-c": (None, True)})
    assert merge_trees(full, stemmed) == full
    assert merge_trees(stemmed, full) == full


def test_merge_trees_identity_and_purity() -> None:
    left = copy.deepcopy(BRANCHY)
    assert merge_trees(BRANCHY, {}) == BRANCHY
    assert merge_trees({}, BRANCHY) == BRANCHY
    assert merge_trees(BRANCHY, BRANCHY) == BRANCHY
    merge_trees(BRANCHY, T({"5-q": ("4-e", False)}))
    assert left == BRANCHY


# --------------------------------------------------------------------------
# path_from_revisions
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "ids", "expected"),
    [
        (3, ["c", "b", "a"], ["3-c", "2-b", "1-a"]),
        (1, ["a"], ["1-a"]),
        (10, ["j", "i"], ["10-j", "9-i"]),
        (3, ("c", "b", "a"), ["3-c", "2-b", "1-a"]),
        (3, ["c", "b-x", "a b"], ["3-c", "2-b-x", "1-a b"]),  # any id CouchDB accepts
    ],
)
def test_path_from_revisions(start: int, ids: Sequence[str], expected: list[str]) -> None:
    assert path_from_revisions(start, ids) == expected


@pytest.mark.parametrize(
    ("start", "ids"),
    [
        pytest.param(2, ["c", "b", "a"], id="start-smaller-than-history"),
        pytest.param(0, ["a"], id="start-zero"),
        pytest.param(-1, ["a"], id="start-negative"),
        pytest.param(3, [], id="no-ids"),
        pytest.param(0, [], id="start-zero-no-ids"),
        pytest.param(3, ["c", "", "a"], id="empty-hash"),
        pytest.param(3, ["c", "b\nx", "a"], id="newline-in-hash"),
        pytest.param(12345678901, ["a"], id="start-too-large"),
        pytest.param(3, ["c", None, "a"], id="null-hash"),
        pytest.param(3, ["c", 5, "a"], id="number-hash"),
        pytest.param(3, "cba", id="ids-is-a-string"),
        pytest.param("3", ["c", "b", "a"], id="start-is-a-string"),
        pytest.param(3.0, ["c", "b", "a"], id="start-is-a-float"),
        pytest.param(None, ["a"], id="start-is-null"),
        pytest.param(True, ["a"], id="start-is-a-bool"),
    ],
)
def test_path_from_revisions_errors(start: object, ids: object) -> None:
    with pytest.raises(BadRequest):
        path_from_revisions(start, ids)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# missing_revs, possible_ancestors (_revs_diff)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("revs", "expected"),
    [
        ([], []),
        (["1-a", "4-e"], []),
        (["5-x"], ["5-x"]),
        (["5-x", "1-a", "3-q"], ["5-x", "3-q"]),
        (["3-q", "5-x"], ["3-q", "5-x"]),  # order given is kept
        (["5-x", "5-x", "1-a", "5-x"], ["5-x"]),  # duplicates reported once
        (iter(["2-b", "2-y"]), ["2-y"]),  # any iterable
    ],
)
def test_missing_revs(revs: list[str], expected: list[str]) -> None:
    assert missing_revs(BRANCHY, revs) == expected


def test_missing_revs_of_empty_tree() -> None:
    assert missing_revs({}, ["1-a", "2-b"]) == ["1-a", "2-b"]


# Leaves of BRANCHY: 3-c, 4-e (deleted), 2-f.  CouchDB's possible_ancestors are
# the leaves whose position is lower than the missing rev's (deleted ones too);
# internal revisions are never listed.
@pytest.mark.parametrize(
    ("rev", "expected"),
    [
        ("5-x", ["2-f", "3-c", "4-e"]),
        ("4-x", ["2-f", "3-c"]),
        ("3-x", ["2-f"]),
        ("2-x", []),
        ("1-x", []),
        ("100-x", ["2-f", "3-c", "4-e"]),
    ],
)
def test_possible_ancestors(rev: str, expected: list[str]) -> None:
    assert sorted(possible_ancestors(BRANCHY, rev)) == expected


def test_possible_ancestors_of_empty_tree() -> None:
    assert possible_ancestors({}, "3-x") == []


def test_possible_ancestors_rejects_bad_rev() -> None:
    with pytest.raises(BadRequest):
        possible_ancestors(BRANCHY, "bogus")


# --------------------------------------------------------------------------
# to_json / from_json
# --------------------------------------------------------------------------


@pytest.mark.parametrize("tree", [{}, LINEAR5, BRANCHY, stem(BRANCHY, 1)])
def test_json_round_trip(tree: dict[str, RevNode]) -> None:
    data = to_json(tree)
    assert from_json(json.loads(json.dumps(data))) == tree


def test_to_json_format() -> None:
    tree = T({"1-a": (None, False), "2-b": ("1-a", True)})
    assert to_json(tree) == {"1-a": [None, False], "2-b": ["1-a", True]}


def test_from_json_normalises() -> None:
    assert from_json({"1-a": [None, 0], "2-b": ["1-a", 1]}) == T(
        {"1-a": (None, False), "2-b": ("1-a", True)}
    )


# --------------------------------------------------------------------------
# property tests
# --------------------------------------------------------------------------

HASH = st.text(alphabet="0123456789abcdefABZ", min_size=1, max_size=3)


@st.composite
def rev_trees(draw: st.DrawFn, *, internal_deleted: bool = False) -> dict[str, RevNode]:
    """A random rev tree: several roots (maybe stemmed), random branching.

    Deleted flags are random on leaves; on internal revs only when
    ``internal_deleted`` (a tombstone that was later extended).
    """
    size = draw(st.integers(min_value=1, max_value=14))
    tree: dict[str, RevNode] = {}
    flags: dict[str, bool] = {}
    for _ in range(size):
        revs = list(tree)
        parent = draw(st.none() | st.sampled_from(revs)) if revs else None
        pos = draw(st.integers(1, 3)) if parent is None else rev_pos(parent) + 1
        rev = f"{pos}-{draw(HASH)}"
        if rev in tree:
            continue
        tree[rev] = RevNode(parent, False)
        flags[rev] = draw(st.booleans())
    tips = set(leaves(tree))
    return {
        rev: RevNode(node.parent, flags[rev] if internal_deleted or rev in tips else False)
        for rev, node in tree.items()
    }


def leaf_paths(tree: Mapping[str, RevNode]) -> list[tuple[list[str], bool]]:
    return [(history(tree, leaf), tree[leaf].deleted) for leaf in leaves(tree)]


def assert_same_outcome(got: Mapping[str, RevNode], tree: Mapping[str, RevNode]) -> None:
    assert got == tree
    assert winner(got) == winner(tree)
    assert conflicts(got) == conflicts(tree)
    assert deleted_conflicts(got) == deleted_conflicts(tree)


@given(st.data())
def test_prop_merging_leaf_paths_in_any_order_rebuilds_the_tree(data: st.DataObject) -> None:
    tree = data.draw(rev_trees())
    paths = data.draw(st.permutations(leaf_paths(tree)))
    assert_same_outcome(build(paths), tree)


@given(st.data())
def test_prop_merging_chunks_with_merge_trees_rebuilds_the_tree(data: st.DataObject) -> None:
    tree = data.draw(rev_trees())
    paths = data.draw(st.permutations(leaf_paths(tree)))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(paths)), max_size=4)))
    bounds = [0, *cuts, len(paths)]
    chunks = [build(paths[a:b]) for a, b in itertools.pairwise(bounds)]
    chunks = data.draw(st.permutations(chunks))
    assert_same_outcome(functools.reduce(merge_trees, chunks, {}), tree)


@given(st.data())
def test_prop_partial_histories_in_any_order_rebuild_the_tree(data: st.DataObject) -> None:
    """Paths also arrive truncated (revs_limit on the sender); full ones fill the gaps."""
    tree = data.draw(rev_trees())
    paths = leaf_paths(tree)
    partial = [
        (path[: data.draw(st.integers(1, len(path)))], deleted)
        for path, deleted in data.draw(st.lists(st.sampled_from(paths), max_size=6))
    ]
    order = data.draw(st.permutations(paths + partial))
    assert_same_outcome(build(order), tree)


@given(st.data())
def test_prop_every_rev_sent_as_it_was_made_in_any_order(data: st.DataObject) -> None:
    """Each rev arrives once as the head of its own history, tombstones included."""
    tree = data.draw(rev_trees(internal_deleted=True))
    paths = [(history(tree, rev), node.deleted) for rev, node in tree.items()]
    order = data.draw(st.permutations(paths))
    assert_same_outcome(build(order), tree)


@given(rev_trees())
def test_prop_winner_is_a_leaf_and_prefers_live_leaves(tree: dict[str, RevNode]) -> None:
    win = winner(tree)
    tips = leaves(tree)
    assert win in tips
    if any(not tree[t].deleted for t in tips):
        assert not tree[win].deleted
    for tip in tips:
        if tip == win or tree[tip].deleted != tree[win].deleted:
            continue
        pos, digest = parse_rev(tip)
        win_pos, win_digest = parse_rev(win)
        assert pos < win_pos or (pos == win_pos and digest < win_digest)
    # winner + conflicts + deleted conflicts partition the leaves
    live = conflicts(tree)
    dead = deleted_conflicts(tree)
    assert sorted([win, *live, *dead]) == sorted(tips)
    assert all(not tree[r].deleted for r in live)
    assert all(tree[r].deleted for r in dead)


@given(rev_trees(), st.integers(1, 6))
def test_prop_stem(tree: dict[str, RevNode], limit: int) -> None:
    before = copy.deepcopy(tree)
    stemmed = stem(tree, limit)
    assert tree == before

    # Every leaf is kept, with its deleted flag: the winner cannot change.
    assert set(leaves(stemmed)) == set(leaves(tree))
    assert winner(stemmed) == winner(tree)
    assert conflicts(stemmed) == conflicts(tree)
    assert deleted_conflicts(stemmed) == deleted_conflicts(tree)

    newest = {leaf: history(tree, leaf, limit) for leaf in leaves(tree)}
    kept = set().union(*map(set, newest.values()))
    # Exactly the `limit` newest revs of each branch survive...
    assert set(stemmed) == kept
    # ... so no branch keeps more than `limit` revs of its own: each kept rev is
    # within `limit` of its nearest leaf.
    for rev in stemmed:
        assert any(rev in chain for chain in newest.values())
    for leaf, chain in newest.items():
        assert history(stemmed, leaf)[:limit] == chain
    # Links are the original ones, or None where the parent was stemmed.
    for rev, node in stemmed.items():
        original = tree[rev]
        assert node.deleted == original.deleted
        if original.parent in kept:
            assert node.parent == original.parent
        else:
            assert node.parent is None


@given(st.lists(HASH, min_size=1, max_size=12, unique=True), st.integers(1, 6))
def test_prop_stem_linear_branch_is_exactly_limit_long(hashes: list[str], limit: int) -> None:
    path = [f"{len(hashes) - i}-{h}" for i, h in enumerate(hashes)]
    stemmed = stem(merge_path({}, path, False), limit)
    assert history(stemmed, path[0]) == path[:limit]
    assert len(stemmed) == min(limit, len(path))


@given(rev_trees(), st.integers(1, 6), st.integers(1, 6))
def test_prop_stem_idempotent_and_composes(tree: dict[str, RevNode], a: int, b: int) -> None:
    once = stem(tree, a)
    assert stem(once, a) == once
    assert stem(once, b) == stem(tree, min(a, b))


@given(st.data())
def test_prop_merge_is_idempotent(data: st.DataObject) -> None:
    tree = data.draw(rev_trees())
    other = data.draw(rev_trees())
    path, deleted = data.draw(st.sampled_from(leaf_paths(other)))
    once = merge_path(tree, path, deleted)
    assert merge_path(once, path, deleted) == once
    # Merging a history the tree already holds changes nothing.
    for known, flag in leaf_paths(tree):
        assert merge_path(tree, known, flag) == tree
        assert merge_path(tree, known[: data.draw(st.integers(1, len(known)))], flag) == tree
    assert merge_trees(tree, tree) == tree
    merged = merge_trees(tree, other)
    assert merge_trees(merged, other) == merged
    assert merge_trees(merged, tree) == merged


@given(st.data())
def test_prop_merge_trees_is_commutative(data: st.DataObject) -> None:
    """Two partial views of one history merge the same either way round.

    A view may have lost a rev's parent (stemmed) or know a tombstone only as
    an ancestor (no deleted flag of its own).
    """
    tree = data.draw(rev_trees(internal_deleted=True))

    def view() -> dict[str, RevNode]:
        revs = data.draw(st.lists(st.sampled_from(list(tree)), unique=True))
        return {
            rev: RevNode(
                tree[rev].parent if data.draw(st.booleans()) else None,
                tree[rev].deleted and data.draw(st.booleans()),
            )
            for rev in revs
        }

    left, right = view(), view()
    assert merge_trees(left, right) == merge_trees(right, left)
    assert merge_trees(merge_trees(left, right), tree) == tree
    assert merge_trees(tree, merge_trees(left, right)) == tree


@given(rev_trees(internal_deleted=True))
def test_prop_json_round_trip(tree: dict[str, RevNode]) -> None:
    assert from_json(json.loads(json.dumps(to_json(tree)))) == tree


@given(rev_trees(), st.lists(st.integers(1, 5).map(lambda p: f"{p}-q"), max_size=4))
def test_prop_revs_diff(tree: dict[str, RevNode], extra: list[str]) -> None:
    known = list(tree)
    asked = known + extra
    missing = missing_revs(tree, asked)
    assert missing == list(dict.fromkeys(r for r in extra if r not in tree))
    for rev in missing:
        ancestors = possible_ancestors(tree, rev)
        assert set(ancestors) <= set(leaves(tree))
        assert {a for a in leaves(tree) if rev_pos(a) < rev_pos(rev)} == set(ancestors)
