"""One contract for every DocStore backend: SQLite and in-memory answer alike.

Every test runs against both stores (the ``store`` fixture), through the
public primitives only, with literal revisions; bodies are opaque bytes at this
layer.  That the same assertions pass for both shows the interface is not
shaped around SQLite.  A last, property-based test feeds random batches of
writes to both stores side by side and compares everything they answer.

Expected values follow CouchDB: the update rule and winner of
https://docs.couchdb.org/en/stable/replication/conflicts.html, ``_changes``
(latest change of each document, in sequence order) and ``_all_docs`` paging
(https://docs.couchdb.org/en/stable/api/database/bulk-api.html).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync import audit
from sync.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    StoreError,
)
from sync.replication.revtree import RevNode
from sync.store.base import (
    SHARED,
    AllDocsQuery,
    AttachmentBlob,
    Change,
    DocMeta,
    DocStore,
    LocalDoc,
    RevisionWrite,
    StoredRevision,
    WriteResult,
)
from sync.store.memory import MemoryStore
from sync.store.rules import DocumentElsewhere as Elsewhere  # a Forbidden the writer counts
from sync.store.sqlite import SqliteStore

DB = "health"
P1, P2, P3 = frozenset({"p1"}), frozenset({"p2"}), frozenset({"p3"})


def make_store(kind: str, directory: Path) -> DocStore:
    return SqliteStore(directory / "x.sqlite3") if kind == "sqlite" else MemoryStore()


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DocStore]:
    backend = make_store(request.param, tmp_path)
    await backend.create_db(DB)
    try:
        yield backend
    finally:
        await backend.close()


def rw(
    doc_id: str,
    *path: str,
    place: str = "p1",
    deleted: bool = False,
    new_edits: bool = False,
    allowed: frozenset[str] | None = None,
    attachments: tuple[AttachmentBlob, ...] = (),
) -> RevisionWrite:
    """A revision whose body names it, so a body read back shows which write it came from."""
    body = f"{doc_id}@{path[0]}".encode()
    key = f"key-{place}"
    return RevisionWrite(doc_id, path, deleted, place, key, body, new_edits, allowed, attachments)


async def ok(store: DocStore, *writes: RevisionWrite, db: str = DB) -> None:
    results = await store.write(db, writes)
    assert [r.error for r in results] == [None] * len(writes), results


async def meta(store: DocStore, doc_id: str) -> DocMeta:
    return (await store.get_metas(DB, [doc_id]))[doc_id]


async def update_seq(store: DocStore) -> int:
    return (await store.db_info(DB, None)).update_seq


def rows(changes: Sequence[Change]) -> list[tuple[str, int]]:
    return [(c.id, c.seq) for c in changes]


# -- databases -----------------------------------------------------------------
async def test_databases_are_created_listed_and_deleted(store: DocStore) -> None:
    await store.create_db("b-db")
    await store.create_db("a-db")
    assert await store.list_dbs() == ["a-db", "b-db", DB]
    with pytest.raises(PreconditionFailed) as exists:
        await store.create_db("a-db")
    assert exists.value.error_token == "file_exists"
    await store.delete_db("a-db")
    assert await store.list_dbs() == ["b-db", DB]
    with pytest.raises(NotFound, match=r"^Database does not exist\.$"):
        await store.delete_db("a-db")


async def test_a_new_database_is_empty_and_has_its_own_identity(store: DocStore) -> None:
    await store.create_db("other")
    info, other = await store.db_info(DB, None), await store.db_info("other", None)
    assert (info.name, info.update_seq, info.doc_count, info.doc_del_count) == (DB, 0, 0, 0)
    assert info.revs_limit == 1000
    assert info.uuid and other.uuid and info.uuid != other.uuid
    assert isinstance(info.instance_start_time, str)
    await store.set_revs_limit(DB, 7)
    assert (await store.db_info(DB, None)).revs_limit == 7
    assert (await store.db_info("other", None)).revs_limit == 1000


async def test_a_recreated_database_starts_empty(store: DocStore) -> None:
    await ok(store, rw("a", "1-a"), rw("b", "1-b"))
    await store.put_local(DB, "alice", "cp", None, b"{}")
    await ok(store, rw("c", "1-c", attachments=(AttachmentBlob("md5-x", "p1", "k", 1, b"x"),)))
    await store.delete_db(DB)
    await store.create_db(DB)
    assert await update_seq(store) == 0
    assert await store.get_metas(DB, ["a", "b"]) == {}
    assert await store.changes(DB, None, 0, 100) == []
    assert await store.get_local(DB, "alice", "cp") is None
    assert await store.get_attachment(DB, "md5-x", None) is None


async def test_databases_do_not_share_documents_or_sequences(store: DocStore) -> None:
    await store.create_db("other")
    await ok(store, rw("a", "1-a"), rw("b", "1-b"))
    await ok(store, rw("a", "1-z"), db="other")
    assert (await store.db_info("other", None)).update_seq == 1
    assert (await store.get_metas("other", ["a", "b"]))["a"].winner == "1-z"
    assert "b" not in await store.get_metas("other", ["b"])
    assert rows(await store.changes("other", None, 0, 10)) == [("a", 1)]


Call = Callable[[DocStore], Awaitable[object]]
ON_A_MISSING_DB: list[Any] = [
    pytest.param(lambda s: s.delete_db("nope"), id="delete_db"),
    pytest.param(lambda s: s.db_info("nope", None), id="db_info"),
    pytest.param(lambda s: s.set_revs_limit("nope", 5), id="set_revs_limit"),
    pytest.param(lambda s: s.get_metas("nope", ["a"]), id="get_metas"),
    pytest.param(lambda s: s.get_revisions("nope", [("a", "1-a")]), id="get_revisions"),
    pytest.param(lambda s: s.write("nope", [rw("a", "1-a")]), id="write"),
    pytest.param(lambda s: s.changes("nope", None, 0, 10), id="changes"),
    pytest.param(lambda s: s.count_changes("nope", None, 0), id="count_changes"),
    pytest.param(lambda s: s.all_docs("nope", None, AllDocsQuery()), id="all_docs"),
    pytest.param(lambda s: s.get_attachment("nope", "md5-x", None), id="get_attachment"),
    pytest.param(lambda s: s.get_local("nope", "o", "cp"), id="get_local"),
    pytest.param(lambda s: s.put_local("nope", "o", "cp", None, b"{}"), id="put_local"),
    pytest.param(lambda s: s.delete_local("nope", "o", "cp", "0-1"), id="delete_local"),
]


@pytest.mark.parametrize("call", ON_A_MISSING_DB)
async def test_every_primitive_refuses_a_missing_database(store: DocStore, call: Call) -> None:
    with pytest.raises(NotFound, match=r"^Database does not exist\.$"):
        await call(store)


# -- writes with new_edits (CouchDB's update rule) ------------------------------
async def test_new_edits_create_then_update_from_the_leaf(store: DocStore) -> None:
    assert await store.write(DB, [rw("a", "1-a", new_edits=True)]) == [WriteResult("a", "1-a")]
    assert await store.write(DB, [rw("a", "2-b", "1-a", new_edits=True)]) == [
        WriteResult("a", "2-b")
    ]
    tree = {"1-a": RevNode(None, False), "2-b": RevNode("1-a", False)}
    assert await meta(store, "a") == DocMeta("a", "p1", 2, "2-b", False, tree)
    await ok(store, rw("a", "3-c", "2-b", deleted=True, new_edits=True))
    assert (await meta(store, "a")).deleted
    await ok(store, rw("a", "4-d", "3-c", new_edits=True))
    found = await meta(store, "a")
    assert (found.winner, found.deleted, found.seq) == ("4-d", False, 4)


async def test_new_edits_may_extend_any_leaf_even_a_losing_one(store: DocStore) -> None:
    await ok(store, rw("a", "1-a"), rw("a", "2-b", "1-a"), rw("a", "2-c", "1-a"))
    assert (await meta(store, "a")).winner == "2-c"
    await ok(store, rw("a", "3-b", "2-b", new_edits=True))
    assert (await meta(store, "a")).winner == "3-b"


NEW_EDIT_CONFLICTS = [
    pytest.param([], ("2-b", "1-a"), id="parent-of-a-missing-document"),
    pytest.param([rw("a", "1-a")], ("1-z",), id="create-over-an-existing-document"),
    pytest.param(
        [rw("a", "1-a", deleted=True)], ("1-z",), id="create-over-a-deleted-one-without-parent"
    ),
    pytest.param([rw("a", "1-a"), rw("a", "2-b", "1-a")], ("2-c", "1-a"), id="parent-not-a-leaf"),
    pytest.param([rw("a", "1-a")], ("2-c", "1-x"), id="unknown-parent"),
    pytest.param([rw("a", "1-a"), rw("a", "2-b", "1-a")], ("2-b", "1-a"), id="the-same-edit-again"),
]


@pytest.mark.parametrize(("setup", "path"), NEW_EDIT_CONFLICTS)
async def test_new_edits_conflicts(
    store: DocStore, setup: list[RevisionWrite], path: tuple[str, ...]
) -> None:
    await ok(store, *setup)
    before = await store.get_metas(DB, ["a"])
    [result] = await store.write(DB, [rw("a", *path, new_edits=True)])
    assert (result.doc_id, result.rev) == ("a", path[0])
    assert isinstance(result.error, Conflict)
    assert await update_seq(store) == len(setup)
    assert await store.get_metas(DB, ["a"]) == before


# -- replicated writes (new_edits=false) -----------------------------------------
WINNERS = [
    pytest.param(
        [rw("a", "1-a"), rw("a", "2-b", "1-a"), rw("a", "2-c", "1-a")],
        "2-c",
        (("2-c", False), ("2-b", False)),
        id="same-depth-higher-hash-wins",
    ),
    pytest.param(
        [rw("a", "2-c", "1-a"), rw("a", "2-b", "1-a")],
        "2-c",
        (("2-c", False), ("2-b", False)),
        id="arrival-order-does-not-matter",
    ),
    pytest.param(
        [rw("a", "2-z", "1-a"), rw("a", "3-b", "2-b", "1-a")],
        "3-b",
        (("3-b", False), ("2-z", False)),
        id="longer-branch-wins",
    ),
    pytest.param(
        [rw("a", "9-z", "8-z"), rw("a", "10-a", "9-z")],
        "10-a",
        (("10-a", False),),
        id="position-compares-as-a-number",
    ),
    pytest.param(
        [rw("a", "3-z", "2-z", "1-a", deleted=True), rw("a", "2-b", "1-a")],
        "2-b",
        (("2-b", False), ("3-z", True)),
        id="a-live-leaf-beats-a-longer-deleted-one",
    ),
    pytest.param(
        [rw("a", "2-b", "1-a", deleted=True), rw("a", "2-c", "1-a", deleted=True)],
        "2-c",
        (("2-c", True), ("2-b", True)),
        id="all-deleted-the-best-deleted-wins",
    ),
    pytest.param(
        [rw("a", "3-c", "2-b", "1-a")], "3-c", (("3-c", False),), id="history-arrives-with-it"
    ),
]


@pytest.mark.parametrize(("writes", "winner", "leaves"), WINNERS)
async def test_replicated_branches_and_the_winner(
    store: DocStore,
    writes: list[RevisionWrite],
    winner: str,
    leaves: tuple[tuple[str, bool], ...],
) -> None:
    await ok(store, *writes)
    found = await meta(store, "a")
    deleted = dict(leaves)[winner]
    assert (found.winner, found.deleted) == (winner, deleted)
    [change] = await store.changes(DB, None, 0, 10)
    assert change == Change(len(writes), "a", "p1", winner, deleted, leaves)


async def test_resending_a_known_revision_changes_nothing(store: DocStore) -> None:
    await ok(store, rw("a", "1-a"), rw("a", "2-b", "1-a"))
    other = RevisionWrite("a", ("2-b", "1-a"), False, "p9", "other-key", b"other", False)
    assert await store.write(DB, [other, rw("a", "1-a")]) == [
        WriteResult("a", "2-b"),
        WriteResult("a", "1-a"),
    ]
    assert await update_seq(store) == 2
    assert rows(await store.changes(DB, None, 0, 10)) == [("a", 2)]
    stored = await store.get_revisions(DB, [("a", "2-b")])
    assert stored[("a", "2-b")] == StoredRevision("a", "2-b", "p1", False, "key-p1", b"a@2-b")


async def test_a_batch_takes_one_sequence_per_change(store: DocStore) -> None:
    results = await store.write(
        DB,
        [
            rw("a", "1-a", new_edits=True),
            rw("b", "1-b", new_edits=True),
            rw("a", "1-z", new_edits=True),
            rw("c", "1-c"),
            rw("c", "1-c"),
            rw("a", "2-a", "1-a", new_edits=True),
        ],
    )
    assert [r.rev for r in results] == ["1-a", "1-b", "1-z", "1-c", "1-c", "2-a"]
    assert [type(r.error) for r in results] == [type(None)] * 2 + [Conflict] + [type(None)] * 3
    assert await update_seq(store) == 4
    assert rows(await store.changes(DB, None, 0, 10)) == [("b", 2), ("c", 3), ("a", 4)]


async def test_a_batch_is_all_or_nothing(store: DocStore) -> None:
    with pytest.raises(BadRequest):
        await store.write(DB, [rw("a", "1-a"), rw("b", "not-a-rev")])
    assert await update_seq(store) == 0
    assert await store.get_metas(DB, ["a", "b"]) == {}


async def test_the_document_lives_where_its_winning_revision_does(store: DocStore) -> None:
    await ok(store, rw("a", "1-a", place="p1"), rw("a", "2-b", "1-a", place="p2"))
    assert (await meta(store, "a")).place == "p2"
    await ok(store, rw("a", "2-c", "1-a", place="p3"))
    await ok(store, rw("a", "2-a", "1-a", place="p4"))
    found = await meta(store, "a")
    assert (found.winner, found.place, found.seq) == ("2-c", "p3", 4)
    assert rows(await store.changes(DB, P3, 0, 10)) == [("a", 4)]
    for place in ("p1", "p2", "p4"):
        assert await store.changes(DB, frozenset({place}), 0, 10) == []
        assert (await store.all_docs(DB, frozenset({place}), AllDocsQuery()))[0] == 0
    assert (await store.db_info(DB, P3)).doc_count == 1
    stored = await store.get_revisions(DB, [("a", "2-a")])
    assert stored[("a", "2-a")].place == "p4"


# -- revs_limit -------------------------------------------------------------------
STEMMING = [
    pytest.param(
        2,
        [rw("a", "1-a", new_edits=True), rw("a", "2-b", "1-a", new_edits=True)],
        rw("a", "3-c", "2-b", new_edits=True),
        {"3-c": RevNode("2-b", False), "2-b": RevNode(None, False)},
        id="edits-past-the-limit",
    ),
    pytest.param(
        3,
        [],
        rw("a", "5-e", "4-d", "3-c", "2-b", "1-a"),
        {"5-e": RevNode("4-d", False), "4-d": RevNode("3-c", False), "3-c": RevNode(None, False)},
        id="a-long-replicated-history",
    ),
    pytest.param(
        2,
        [rw("a", "2-x", "1-a")],
        rw("a", "3-c", "2-b", "1-a"),
        {
            "3-c": RevNode("2-b", False),
            "2-b": RevNode("1-a", False),
            "2-x": RevNode("1-a", False),
            "1-a": RevNode(None, False),
        },
        id="a-root-a-short-branch-needs-is-kept",
    ),
    pytest.param(
        2,
        [rw("a", "3-c", "2-b", "1-a")],
        rw("a", "2-x", "1-a"),
        {
            "3-c": RevNode("2-b", False),
            "2-b": RevNode(None, False),
            "2-x": RevNode("1-a", False),
            "1-a": RevNode(None, False),
        },
        id="stemmed-history-stays-cut",
    ),
]


@pytest.mark.parametrize(("limit", "setup", "last", "tree"), STEMMING)
async def test_revs_limit_stems_every_branch(
    store: DocStore,
    limit: int,
    setup: list[RevisionWrite],
    last: RevisionWrite,
    tree: dict[str, RevNode],
) -> None:
    await store.set_revs_limit(DB, limit)
    await ok(store, *setup, last)
    assert (await meta(store, "a")).tree == tree


# -- allowed_places --------------------------------------------------------------
ALLOWED = [
    pytest.param(
        rw("a", "2-b", "1-a", place="p2", new_edits=True, allowed=P2), Elsewhere, id="elsewhere"
    ),
    pytest.param(rw("a", "1-a", allowed=P2), Elsewhere, id="resend-is-refused-too"),
    pytest.param(rw("a", "1-z", new_edits=True, allowed=P2), Elsewhere, id="before-conflict"),
    pytest.param(rw("a", "1-z", new_edits=True, allowed=P1), Conflict, id="allowed-conflict"),
    pytest.param(rw("a", "2-b", "1-a", place="p2", new_edits=True, allowed=P1), None, id="move"),
    pytest.param(rw("b", "1-b", place="p3", allowed=P1), None, id="a-new-document-has-no-place"),
]


@pytest.mark.parametrize(("attempt", "error"), ALLOWED)
async def test_allowed_places_is_checked_against_the_current_place(
    store: DocStore, attempt: RevisionWrite, error: type[Exception] | None
) -> None:
    await ok(store, rw("a", "1-a", place="p1"))
    [result] = await store.write(DB, [attempt])
    assert type(result.error) is (type(None) if error is None else error)
    if error is Elsewhere:
        assert isinstance(result.error, Forbidden) and result.error.error_token == "forbidden"
    assert await update_seq(store) == (1 if error else 2)
    if error is None:
        assert (await meta(store, attempt.doc_id)).place == attempt.place


# -- reads -------------------------------------------------------------------------
async def test_metas_and_revisions(store: DocStore) -> None:
    await ok(
        store,
        rw("a", "1-a"),
        rw("a", "2-b", "1-a", place="p2", deleted=True),
        rw("b", "3-c", "2-c", "1-c", place=SHARED),
    )
    a_tree = {"1-a": RevNode(None, False), "2-b": RevNode("1-a", True)}
    b_tree = {
        "3-c": RevNode("2-c", False),
        "2-c": RevNode("1-c", False),
        "1-c": RevNode(None, False),
    }
    assert await store.get_metas(DB, ["a", "zz", "b", "a"]) == {
        "a": DocMeta("a", "p2", 2, "2-b", True, a_tree),
        "b": DocMeta("b", SHARED, 3, "3-c", False, b_tree),
    }
    wanted = [("a", "1-a"), ("a", "2-b"), ("b", "2-c"), ("b", "3-c"), ("zz", "1-a"), ("a", "9-z")]
    assert await store.get_revisions(DB, wanted) == {
        ("a", "1-a"): StoredRevision("a", "1-a", "p1", False, "key-p1", b"a@1-a"),
        ("a", "2-b"): StoredRevision("a", "2-b", "p2", True, "key-p2", b"a@2-b"),
        ("b", "3-c"): StoredRevision("b", "3-c", SHARED, False, "key-", b"b@3-c"),
    }


async def seed_changes(store: DocStore) -> None:
    """Latest changes: c@3 (shared), d@4 (p1), a@5 (p1), b@6 (p2, deleted), e@7 (p3)."""
    await ok(
        store,
        rw("a", "1-a", place="p1"),
        rw("b", "1-b", place="p2"),
        rw("c", "1-c", place=SHARED),
        rw("d", "1-d", place="p1"),
        rw("a", "2-a", "1-a", place="p1"),
        rw("b", "2-b", "1-b", place="p2", deleted=True),
        rw("e", "1-e", place="p3"),
    )


EVERYTHING = [("c", 3), ("d", 4), ("a", 5), ("b", 6), ("e", 7)]
CHANGES = [
    pytest.param(None, 0, {}, EVERYTHING, id="all"),
    pytest.param(P1, 0, {}, [("d", 4), ("a", 5)], id="one-place"),
    pytest.param(P1 | P2, 0, {}, [("d", 4), ("a", 5), ("b", 6)], id="two-places-merged"),
    pytest.param(P1 | {SHARED}, 0, {}, [("c", 3), ("d", 4), ("a", 5)], id="with-shared"),
    pytest.param(P1 | P2, 4, {}, [("a", 5), ("b", 6)], id="since"),
    pytest.param(None, 7, {}, [], id="since-the-end"),
    pytest.param(None, 0, {"limit": 2}, [("c", 3), ("d", 4)], id="limit"),
    pytest.param(None, 0, {"limit": 0}, [], id="limit-zero"),
    pytest.param(None, 0, {"upto": 5}, [("c", 3), ("d", 4), ("a", 5)], id="upto"),
    pytest.param(None, 0, {"upto": 2}, [], id="upto-before-every-latest-change"),
    pytest.param(None, 3, {"upto": 6}, [("d", 4), ("a", 5), ("b", 6)], id="since-upto"),
    pytest.param(P2, 0, {"include_deleted": False}, [], id="no-deleted"),
    pytest.param(
        None, 4, {"include_deleted": False, "limit": 2}, [("a", 5), ("e", 7)], id="filter-first"
    ),
    pytest.param(None, 0, {"descending": True}, EVERYTHING[::-1], id="descending"),
    pytest.param(None, 4, {"descending": True, "limit": 2}, [("e", 7), ("b", 6)], id="desc-page"),
    pytest.param(P1 | P3, 0, {"descending": True}, [("e", 7), ("a", 5), ("d", 4)], id="desc-set"),
    pytest.param(frozenset(), 0, {}, [], id="no-places"),
    pytest.param(frozenset({"nowhere"}), 0, {}, [], id="unknown-place"),
]


@pytest.mark.parametrize(("places", "since", "options", "expected"), CHANGES)
async def test_changes(
    store: DocStore,
    places: frozenset[str] | None,
    since: int,
    options: dict[str, Any],
    expected: list[tuple[str, int]],
) -> None:
    await seed_changes(store)
    limit = options.get("limit", 100)
    flags = {k: v for k, v in options.items() if k != "limit"}
    assert rows(await store.changes(DB, places, since, limit, **flags)) == expected


async def test_a_change_row_carries_the_winner_and_leaves(store: DocStore) -> None:
    await seed_changes(store)
    assert await store.changes(DB, P2, 0, 10) == [
        Change(6, "b", "p2", "2-b", True, (("2-b", True),))
    ]


COUNTS = [
    pytest.param(None, 0, 5, id="all"),
    pytest.param(P1, 0, 2, id="one-place"),
    pytest.param(P2, 0, 1, id="deleted-count"),
    pytest.param(P1 | P2, 4, 2, id="since"),
    pytest.param(None, 7, 0, id="since-the-end"),
    pytest.param(frozenset(), 0, 0, id="no-places"),
]


@pytest.mark.parametrize(("places", "since", "expected"), COUNTS)
async def test_count_changes(
    store: DocStore, places: frozenset[str] | None, since: int, expected: int
) -> None:
    await seed_changes(store)
    assert await store.count_changes(DB, places, since) == expected


INFO_COUNTS = [
    pytest.param(None, 4, 1, id="all"),
    pytest.param(P1, 2, 0, id="one-place"),
    pytest.param(P2, 0, 1, id="deleted"),
    pytest.param(P1 | P2 | {SHARED}, 3, 1, id="a-set"),
    pytest.param(frozenset(), 0, 0, id="no-places"),
    pytest.param(frozenset({"nowhere"}), 0, 0, id="unknown-place"),
]


@pytest.mark.parametrize(("places", "live", "deleted"), INFO_COUNTS)
async def test_db_info_counts_the_places_asked_for(
    store: DocStore, places: frozenset[str] | None, live: int, deleted: int
) -> None:
    await seed_changes(store)
    info = await store.db_info(DB, places)
    assert (info.doc_count, info.doc_del_count, info.update_seq) == (live, deleted, 7)


async def seed_all_docs(store: DocStore) -> None:
    """Live: a (p1), b (p2), d (p1), e (p2), f (shared); c (p1) is deleted."""
    await ok(
        store,
        rw("f", "1-f", place=SHARED),
        rw("e", "1-e", place="p2"),
        rw("d", "1-d", place="p1"),
        rw("c", "1-c", place="p1", deleted=True),
        rw("b", "1-b", place="p2"),
        rw("a", "1-a", place="p1"),
    )


Q = AllDocsQuery
ALL_DOCS = [
    pytest.param(None, Q(), 5, "abdef", id="all"),
    pytest.param(P1, Q(), 2, "ad", id="one-place"),
    pytest.param(P1 | P2, Q(), 4, "abde", id="two-places-merged"),
    pytest.param(frozenset(), Q(), 0, "", id="no-places"),
    pytest.param(None, Q(start="b"), 5, "bdef", id="start"),
    pytest.param(None, Q(start="b", end="e"), 5, "bde", id="start-end"),
    pytest.param(None, Q(end="e", inclusive_end=False), 5, "abd", id="exclusive-end"),
    pytest.param(None, Q(start="bb", end="dd"), 5, "d", id="bounds-between-ids"),
    pytest.param(None, Q(start="e", end="b"), 5, "", id="start-after-end"),
    pytest.param(None, Q(descending=True), 5, "fedba", id="descending"),
    pytest.param(None, Q(descending=True, start="e"), 5, "edba", id="desc-start"),
    pytest.param(None, Q(descending=True, start="e", end="b"), 5, "edb", id="desc-start-end"),
    pytest.param(
        None, Q(descending=True, start="e", end="b", inclusive_end=False), 5, "ed", id="desc-excl"
    ),
    pytest.param(None, Q(limit=2), 5, "ab", id="limit"),
    pytest.param(None, Q(limit=0), 5, "", id="limit-zero-still-counts"),
    pytest.param(None, Q(skip=1, limit=2), 5, "bd", id="skip-limit"),
    pytest.param(None, Q(skip=4), 5, "f", id="skip"),
    pytest.param(None, Q(skip=10), 5, "", id="skip-past-the-end"),
    pytest.param(P2, Q(descending=True, limit=1), 2, "e", id="place-desc-limit"),
    pytest.param(P1 | P2, Q(start="b", skip=1, limit=2), 4, "de", id="set-start-skip-limit"),
]


@pytest.mark.parametrize(("places", "query", "total", "ids"), ALL_DOCS)
async def test_all_docs(
    store: DocStore, places: frozenset[str] | None, query: AllDocsQuery, total: int, ids: str
) -> None:
    await seed_all_docs(store)
    found_total, page = await store.all_docs(DB, places, query)
    assert (found_total, "".join(c.id for c in page)) == (total, ids)


async def test_an_all_docs_row_is_the_documents_latest_change(store: DocStore) -> None:
    await seed_all_docs(store)
    _, page = await store.all_docs(DB, P1, Q(limit=1))
    assert page == [Change(6, "a", "p1", "1-a", False, (("1-a", False),))]


async def test_all_docs_orders_ids_by_code_point(store: DocStore) -> None:
    """CouchDB compares _all_docs ids raw, not by UCA (docs: ddocs/views/collation.html)."""
    ids = ["é", "a", "_design/x", "Z", "aa", "10", "9"]
    await ok(store, *(rw(i, "1-a") for i in ids))
    _, page = await store.all_docs(DB, None, AllDocsQuery())
    assert [c.id for c in page] == ["10", "9", "Z", "_design/x", "a", "aa", "é"]


# -- attachments -----------------------------------------------------------------
X1 = AttachmentBlob("md5-x", "p1", "k1", 3, b"one")
X2 = AttachmentBlob("md5-x", "p2", "k2", 3, b"two")
Y1 = AttachmentBlob("md5-y", "p1", "k1", 5, b"three")
LOOKUPS = [
    pytest.param("md5-x", P1, {X1}, id="x-in-p1"),
    pytest.param("md5-x", P2, {X2}, id="x-in-p2"),
    pytest.param("md5-x", P1 | P2, {X1, X2}, id="x-in-either"),
    pytest.param("md5-x", None, {X1, X2}, id="x-anywhere"),
    pytest.param("md5-x", P3, {None}, id="x-not-in-p3"),
    pytest.param("md5-x", frozenset(), {None}, id="x-in-no-place"),
    pytest.param("md5-y", P2, {None}, id="y-only-in-p1"),
    pytest.param("md5-y", None, {Y1}, id="y-anywhere"),
    pytest.param("md5-z", None, {None}, id="unknown-digest"),
]


@pytest.mark.parametrize(("digest", "places", "acceptable"), LOOKUPS)
async def test_attachments_are_found_by_digest_within_places(
    store: DocStore,
    digest: str,
    places: frozenset[str] | None,
    acceptable: set[AttachmentBlob | None],
) -> None:
    await ok(store, rw("a", "1-a", attachments=(X1, Y1)), rw("b", "1-b", attachments=(X2,)))
    assert await store.get_attachment(DB, digest, places) in acceptable


async def test_storing_an_attachment_again_keeps_the_first(store: DocStore) -> None:
    await ok(store, rw("a", "1-a", attachments=(X1,)))
    again = AttachmentBlob("md5-x", "p1", "k9", 3, b"new")
    await ok(store, rw("a", "2-a", "1-a", attachments=(again, X2)))
    assert await store.get_attachment(DB, "md5-x", P1) == X1
    assert await store.get_attachment(DB, "md5-x", P2) == X2


async def test_attachments_come_only_with_a_revision_that_is_written(store: DocStore) -> None:
    """A refused or conflicting write leaves no blob behind; a repeated one adds none."""
    await ok(store, rw("a", "1-a"))
    conflict = rw("a", "1-b", new_edits=True, attachments=(X1,))
    refused = rw("a", "2-c", "1-a", allowed=frozenset({"p9"}), attachments=(X2,))
    results = await store.write(DB, [conflict, refused])
    assert [type(r.error).__name__ for r in results] == ["Conflict", "DocumentElsewhere"]
    await ok(store, rw("a", "1-a", attachments=(Y1,)))  # already there: nothing changes
    for digest in ("md5-x", "md5-y"):
        assert await store.get_attachment(DB, digest, None) is None
    assert await update_seq(store) == 1


# -- local documents ---------------------------------------------------------------
async def test_local_docs_count_their_revisions_and_refuse_stale_ones(store: DocStore) -> None:
    assert await store.get_local(DB, "alice", "cp") is None
    assert await store.put_local(DB, "alice", "cp", None, b"one") == "0-1"
    for stale in (None, "0-9"):
        with pytest.raises(Conflict):
            await store.put_local(DB, "alice", "cp", stale, b"nope")
    assert await store.put_local(DB, "alice", "cp", "0-1", b"two") == "0-2"
    with pytest.raises(Conflict):
        await store.put_local(DB, "alice", "cp", "0-1", b"stale")
    assert await store.get_local(DB, "alice", "cp") == LocalDoc("cp", "0-2", b"two")
    assert await update_seq(store) == 0
    assert await store.changes(DB, None, 0, 10) == []


async def test_local_docs_belong_to_their_owner(store: DocStore) -> None:
    await store.put_local(DB, "alice", "cp", None, b"alice's")
    assert await store.get_local(DB, "bob", "cp") is None
    assert await store.put_local(DB, "bob", "cp", None, b"bob's") == "0-1"
    assert await store.get_local(DB, "alice", "cp") == LocalDoc("cp", "0-1", b"alice's")
    with pytest.raises(NotFound):
        await store.delete_local(DB, "carol", "cp", "0-1")


async def test_deleting_a_local_doc_needs_its_current_rev(store: DocStore) -> None:
    await store.put_local(DB, "alice", "cp", None, b"one")
    await store.put_local(DB, "alice", "cp", "0-1", b"two")
    for wrong in (None, "0-1", "0-3"):
        with pytest.raises(Conflict):
            await store.delete_local(DB, "alice", "cp", wrong)
    await store.delete_local(DB, "alice", "cp", "0-2")
    assert await store.get_local(DB, "alice", "cp") is None
    with pytest.raises(NotFound):
        await store.delete_local(DB, "alice", "cp", "0-2")
    assert await store.put_local(DB, "alice", "cp", None, b"again") == "0-1"


# -- both stores side by side ------------------------------------------------------
def _path(pos: int, hashes: str) -> tuple[str, ...]:
    return tuple(f"{pos - i}-{h}" for i, h in enumerate(hashes[:pos]))


WRITES = st.builds(
    lambda doc_id, pos, hashes, place, deleted, new_edits, allowed: rw(
        doc_id,
        *_path(pos, hashes)[: 2 if new_edits else None],
        place=place,
        deleted=deleted,
        new_edits=new_edits,
        allowed=allowed,
    ),
    st.sampled_from("ab"),
    st.integers(1, 4),
    st.text("xyz", min_size=4, max_size=4),
    st.sampled_from(["p1", "p2", SHARED]),
    st.booleans(),
    st.booleans(),
    st.sampled_from([None, P1, P1 | P2]),
)


async def _observe(store: DocStore, batches: list[list[RevisionWrite]], limit: int) -> Any:
    """Everything a store answers after the batches, in comparable form."""
    await store.create_db(DB)
    await store.set_revs_limit(DB, limit)
    results = [[(r.rev, type(r.error)) for r in await store.write(DB, b)] for b in batches]
    metas = await store.get_metas(DB, ["a", "b"])
    revs = {(m.id, rev) for m in metas.values() for rev in m.tree}
    seen: list[Any] = [results, {i: (m, dict(m.tree)) for i, m in metas.items()}]
    seen.append(await store.get_revisions(DB, sorted(revs)))
    for places in (None, P1, P2, P1 | {SHARED}):
        seen.append(await store.changes(DB, places, 1, 100, include_deleted=False))
        seen.append(await store.all_docs(DB, places, AllDocsQuery(descending=True)))
        seen.append(await store.count_changes(DB, places, 2))
        info = await store.db_info(DB, places)
        seen.append((info.update_seq, info.doc_count, info.doc_del_count))
    await store.close()
    return seen


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(WRITES, min_size=1, max_size=4), max_size=5), st.sampled_from([2, 1000]))
def test_both_stores_answer_alike(batches: list[list[RevisionWrite]], limit: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = asyncio.run(_observe(make_store("sqlite", Path(tmp)), batches, limit))
    assert asyncio.run(_observe(MemoryStore(), batches, limit)) == sqlite


# -- the audit entry of a write --------------------------------------------------
async def _audited(store: DocStore) -> list[tuple[str, str, str | None, tuple[str, ...]]]:
    if isinstance(store, MemoryStore):
        return [(e.actor, e.action, e.db, e.doc_ids) for e in store.audit]
    assert isinstance(store, SqliteStore)
    found = await store.read(
        lambda c: c.execute("SELECT actor, action, db, doc_ids FROM audit ORDER BY id").fetchall()
    )
    return [(a, b, c, tuple(json.loads(d))) for a, b, c, d in found]


async def test_a_write_appends_its_audit_entry_naming_what_it_wrote(store: DocStore) -> None:
    stamp = audit.AuditStamp(audit.Chain(b"k" * 32), "alice", "dev-1")
    await store.write(DB, [rw("a", "1-a"), rw("b", "1-b")], stamp)
    results = await store.write(
        DB,
        [
            rw("a", "1-a"),  # already there: nothing written
            rw("b", "2-x", "1-zz", new_edits=True),  # conflict: nothing written
            rw("c", "1-c"),
        ],
        stamp,
    )
    assert results[1].error is not None
    await store.write(DB, [rw("a", "1-a")], stamp)  # nothing written: no entry
    await store.write(DB, [rw("d", "1-d")])  # no stamp: no entry
    assert await _audited(store) == [
        ("alice", "write", DB, ("a", "b")),
        ("alice", "write", DB, ("c",)),
    ]


async def test_a_failing_audit_append_takes_the_write_with_it(store: DocStore) -> None:
    class Broken(audit.AuditStamp):
        def append(self, conn: Any, db: str | None, doc_ids: Sequence[str]) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        def entry(self, db: str | None, doc_ids: Sequence[str]) -> audit.Entry:
            raise OSError("no room for the entry")

    with pytest.raises((StoreError, OSError)):
        await store.write(DB, [rw("a", "1-a")], Broken(audit.Chain(b"k" * 32), "alice", None))
    assert await store.get_metas(DB, ["a"]) == {}
