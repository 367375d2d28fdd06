"""One contract for every DocStore backend: SQLite, in-memory and CouchDB answer alike.

Every test runs against the three stores (the ``store`` fixture), through the
public primitives only, with literal revisions; bodies are opaque bytes at this
layer.  That the same assertions pass for all shows the interface is not
shaped around SQLite.  Property-based tests feed random batches of writes to
two stores side by side and compare everything they answer.

Two kinds of store list changes differently (:mod:`sync.store.base`): the
sequence stores (SQLite, memory) number every change of a database with one
integer sequence; the log store (CouchDB) keeps a change log per place.  So:

- tests marked ``@on_seq_stores`` are about that one sequence (``changes()``,
  ``count_changes()``, ``update_seq``, a document's ``seq`` as the database's
  sequence) and are collected for the sequence stores only;
- tests marked ``@on_log_stores`` are about the per-place logs (``place_changes``,
  ``global_changes``, the settler) and are collected for CouchDB only;
- every other test runs on all three.  It reads changes through :func:`latest`
  and :func:`changed_since`, which ask each kind of store its own way.  A
  document's ``seq`` grows by one with each accepted write of it on every store
  (on a sequence store it is the database's sequence, on a log store the
  document's version), so tests of a single document assert it on all three.

CouchDB is pouchdb-server by default, or ``FIELDSYNC_TEST_COUCHDB_URL``
(tests/couchdb_server.py).

Expected values follow CouchDB: the update rule and winner of
https://docs.couchdb.org/en/stable/replication/conflicts.html, ``_changes``
(latest change of each document, in sequence order) and ``_all_docs`` paging
(https://docs.couchdb.org/en/stable/api/database/bulk-api.html).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from couchdb_server import delete_databases, new_prefix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync import audit
from sync.audit_store.links import ChainKey
from sync.config import Endpoint
from sync.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
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
    LogRow,
    LogStore,
    Position,
    RevisionWrite,
    SeqStore,
    StoredRevision,
    WriteResult,
)
from sync.store.couchdb import layout
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.store import CouchStore
from sync.store.memory import MemoryStore
from sync.store.rules import DocumentElsewhere as Elsewhere  # a Forbidden the writer counts
from sync.store.sqlite import SqliteStore

DB = "health"
P1, P2, P3 = frozenset({"p1"}), frozenset({"p2"}), frozenset({"p3"})
PLACES = frozenset({"p1", "p2", "p3", "p4", "p9", SHARED})  # every place a test writes to

SEQ_BACKENDS = ["sqlite", "memory"]
LOG_BACKENDS = ["couchdb"]
# Collected for the sequence stores only: the test is about the one integer sequence.
on_seq_stores = pytest.mark.parametrize("store", SEQ_BACKENDS, indirect=True)
# Collected for the stores that commit a batch and its audit entry in one transaction
# (CouchDB has no transaction across documents; its audit sink runs after the write).
on_transactional_stores = pytest.mark.parametrize("store", SEQ_BACKENDS, indirect=True)
# Collected for the log store only: the test is about the per-place change logs.
on_log_stores = pytest.mark.parametrize("store", LOG_BACKENDS, indirect=True)


class AuditedCouchStore(CouchStore):
    """The CouchDB store with an audit sink that keeps the entries in a list, as the
    in-memory store does (the server's sink appends them to its SQLite trail)."""

    def __init__(self, client: CouchClient, prefix: str) -> None:
        super().__init__(client, prefix)
        self.audit: list[audit.Entry] = []
        self.audit_sink = self._record

    async def _record(self, stamp: audit.AuditStamp, db: str, doc_ids: list[str]) -> None:
        self.audit.append(stamp.entry(db, doc_ids))


def make_store(kind: str, directory: Path) -> DocStore:
    return SqliteStore(directory / "x.sqlite3") if kind == "sqlite" else MemoryStore()


def couch_store(url: str, prefix: str) -> AuditedCouchStore:
    return AuditedCouchStore(CouchClient(Endpoint.parse(url)), prefix)


@pytest.fixture(params=SEQ_BACKENDS + LOG_BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DocStore]:
    if request.param == "couchdb":
        url: str = request.getfixturevalue("couchdb_url")
        backend = couch_store(url, request.getfixturevalue("couch_prefix"))
    else:
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


async def update_seq(store: DocStore) -> int | str:
    return (await store.db_info(DB, None)).update_seq


def rows(changes: Sequence[Change]) -> list[tuple[str, int]]:
    return [(c.id, c.seq) for c in changes]


def unnumbered(change: Change) -> Change:
    """A change without its ``seq`` (which differs between kinds of store for many docs)."""
    return dataclasses.replace(change, seq=0)


async def latest(
    store: DocStore, places: frozenset[str] | None = None, db: str = DB
) -> list[Change]:
    """The latest change of every document in ``places`` (None: all), in id order, read from
    the start of the store's feed: ``changes()`` of a sequence store, the place logs (and
    for None, CouchDB's own feed too, which must agree) of a log store."""
    if isinstance(store, SeqStore):
        found = await store.changes(db, places, 0, 10_000)
    else:
        assert isinstance(store, LogStore)
        page = await store.place_changes(db, PLACES if places is None else places, {}, 10_000)
        assert page.exhausted
        found = [row.change for row in page.rows if row.change is not None]
        if places is None:
            everything = await store.global_changes(db, None, 10_000)
            by_id = sorted((c for c, _ in everything.rows), key=lambda c: c.id)
            assert by_id == sorted(found, key=lambda c: c.id)
    return sorted(found, key=lambda c: c.id)


async def feed_mark(store: DocStore, db: str = DB) -> Any:
    """Where the store's change feeds stand now (for :func:`changed_since`).

    On a CouchDB cluster a mark may lag (ADR 0001: tails and the admin feed come from
    one copy per range, never too high), and would list writes made before it: the mark
    is taken again until nothing is listed after it (at most a few seconds; then the
    last one, and the test says what it lists)."""
    if isinstance(store, SeqStore):
        return (await store.db_info(db, None)).update_seq
    assert isinstance(store, LogStore)
    for _ in range(50):
        mark = (
            (await store.global_changes(db, None, 10_000)).last,
            await store.log_tails(db, PLACES),
        )
        if await changed_since(store, mark, db) == []:
            break
        await asyncio.sleep(0.1)
    return mark


async def changed_since(store: DocStore, mark: Any, db: str = DB) -> list[str]:
    """The ids of the documents the store's feeds list after ``mark``: [] if nothing was
    written.  A log row that names a document now elsewhere shows as ``"(elsewhere)"``."""
    if isinstance(store, SeqStore):
        return sorted({c.id for c in await store.changes(db, None, mark, 10_000)})
    assert isinstance(store, LogStore)
    token, tails = mark
    by_token = {c.id for c, _ in (await store.global_changes(db, token, 10_000)).rows}
    cursor = {p: (n, 0) for p, n in tails.items()}
    page = await store.place_changes(db, PLACES, cursor, 10_000)
    by_log = {"(elsewhere)" if r.change is None else r.change.id for r in page.rows}
    return sorted(by_token | by_log)


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
    assert (info.name, info.doc_count, info.doc_del_count) == (DB, 0, 0)
    assert await latest(store) == []
    assert info.revs_limit == 1000
    assert info.uuid and other.uuid and info.uuid != other.uuid
    assert isinstance(info.instance_start_time, str)
    await store.set_revs_limit(DB, 7)
    assert (await store.db_info(DB, None)).revs_limit == 7
    assert (await store.db_info("other", None)).revs_limit == 1000


async def test_a_recreated_database_starts_empty(store: DocStore) -> None:
    """Deleted and created again by the same store instance: nothing it remembered of the
    old one (settings, where each place's log ends) survives."""
    await store.set_revs_limit(DB, 7)
    await ok(store, rw("a", "1-a"), rw("b", "1-b"), rw("a", "2-a", "1-a"))
    await store.put_local(DB, "alice", "cp", None, b"{}")
    await ok(store, rw("c", "1-c", attachments=(AttachmentBlob("md5-x", "p1", "k", 1, b"x"),)))
    assert len(await latest(store)) == 3
    await store.delete_db(DB)
    await store.create_db(DB)
    assert await store.get_metas(DB, ["a", "b"]) == {}
    assert await latest(store) == []
    assert await store.get_local(DB, "alice", "cp") is None
    assert await store.get_attachment(DB, "md5-x", None) is None
    assert (await store.db_info(DB, None)).revs_limit == 1000
    await ok(store, rw("d", "1-d"))
    assert await latest(store) == [Change(1, "d", "p1", "1-d", False, (("1-d", False),))]


async def test_databases_do_not_share_documents_or_changes(store: DocStore) -> None:
    await store.create_db("other")
    await ok(store, rw("a", "1-a"), rw("b", "1-b"))
    await ok(store, rw("a", "1-z"), db="other")
    assert (await store.get_metas("other", ["a", "b"]))["a"].winner == "1-z"
    assert "b" not in await store.get_metas("other", ["b"])
    assert await latest(store, db="other") == [
        Change(1, "a", "p1", "1-z", False, (("1-z", False),))
    ]
    assert [c.id for c in await latest(store)] == ["a", "b"]


@on_seq_stores
async def test_each_database_has_its_own_sequence_from_zero(store: SeqStore) -> None:
    await store.create_db("other")
    assert await update_seq(store) == 0
    await ok(store, rw("a", "1-a"), rw("b", "1-b"))
    await ok(store, rw("a", "1-z"), db="other")
    assert (await store.db_info("other", None)).update_seq == 1
    assert rows(await store.changes("other", None, 0, 10)) == [("a", 1)]
    await store.delete_db(DB)
    await store.create_db(DB)
    assert await update_seq(store) == 0
    assert await store.changes(DB, None, 0, 100) == []


Call = Callable[[DocStore], Awaitable[object]]
ON_A_MISSING_DB: list[Any] = [
    pytest.param(lambda s: s.delete_db("nope"), id="delete_db"),
    pytest.param(lambda s: s.db_info("nope", None), id="db_info"),
    pytest.param(lambda s: s.set_revs_limit("nope", 5), id="set_revs_limit"),
    pytest.param(lambda s: s.get_metas("nope", ["a"]), id="get_metas"),
    pytest.param(lambda s: s.get_revisions("nope", [("a", "1-a")]), id="get_revisions"),
    pytest.param(lambda s: s.write("nope", [rw("a", "1-a")]), id="write"),
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


SEQ_ON_A_MISSING_DB: list[Any] = [
    pytest.param(lambda s: s.changes("nope", None, 0, 10), id="changes"),
    pytest.param(lambda s: s.count_changes("nope", None, 0), id="count_changes"),
]


@on_seq_stores
@pytest.mark.parametrize("call", SEQ_ON_A_MISSING_DB)
async def test_sequence_primitives_refuse_a_missing_database(store: SeqStore, call: Call) -> None:
    with pytest.raises(NotFound, match=r"^Database does not exist\.$"):
        await call(store)


LOG_ON_A_MISSING_DB: list[Any] = [
    pytest.param(lambda s: s.place_changes("nope", P1, {}, 10), id="place_changes"),
    pytest.param(lambda s: s.global_changes("nope", None, 10), id="global_changes"),
    pytest.param(lambda s: s.log_tails("nope", P1), id="log_tails"),
    pytest.param(lambda s: s.wait_for_change("nope", 1.0), id="wait_for_change"),
    pytest.param(lambda s: s.settle("nope"), id="settle"),
    pytest.param(lambda s: s.save_cursor("nope", "k", {"p1": (1, 0)}), id="save_cursor"),
    pytest.param(lambda s: s.load_cursor("nope", "k"), id="load_cursor"),
]


@on_log_stores
@pytest.mark.parametrize("call", LOG_ON_A_MISSING_DB)
async def test_log_primitives_refuse_a_missing_database(store: LogStore, call: Call) -> None:
    with pytest.raises(NotFound, match=r"^Database does not exist\.$"):
        await call(store)


# -- writes with new_edits (CouchDB's update rule) ------------------------------
async def test_new_edits_create_then_update_from_the_leaf(store: DocStore) -> None:
    made = await store.write(DB, [rw("a", "1-a", new_edits=True)])
    assert made == [WriteResult("a", "1-a", place="p1")]
    assert await store.write(DB, [rw("a", "2-b", "1-a", new_edits=True)]) == [
        WriteResult("a", "2-b", place="p1")
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
    before, mark = await store.get_metas(DB, ["a"]), await feed_mark(store)
    [result] = await store.write(DB, [rw("a", *path, new_edits=True)])
    assert (result.doc_id, result.rev) == ("a", path[0])
    assert isinstance(result.error, Conflict)
    assert await changed_since(store, mark) == []
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
    assert await latest(store) == [Change(len(writes), "a", "p1", winner, deleted, leaves)]


async def test_resending_a_known_revision_changes_nothing(store: DocStore) -> None:
    await ok(store, rw("a", "1-a"), rw("a", "2-b", "1-a"))
    mark = await feed_mark(store)
    other = RevisionWrite("a", ("2-b", "1-a"), False, "p9", "other-key", b"other", False)
    assert await store.write(DB, [other, rw("a", "1-a")]) == [
        WriteResult("a", "2-b"),
        WriteResult("a", "1-a"),
    ]
    assert await changed_since(store, mark) == []
    assert rows(await latest(store)) == [("a", 2)]
    stored = await store.get_revisions(DB, [("a", "2-b")])
    assert stored[("a", "2-b")] == StoredRevision("a", "2-b", "p1", False, "key-p1", b"a@2-b")


async def test_a_write_names_the_place_its_document_is_in_after_it(store: DocStore) -> None:
    """What wakes the long polls of that place (sync.replication.notifier): the winner's
    place, which a write in one place can move to another; nothing for a write that
    changed nothing."""
    [made] = await store.write(DB, [rw("a", "1-a", place="p1")])
    [branch] = await store.write(DB, [rw("a", "1-0", place="p2")])  # loses to 1-a
    assert (made.place, branch.place) == ("p1", "p1") == ((await meta(store, "a")).place,) * 2
    [gone] = await store.write(DB, [rw("a", "2-d", "1-a", place="p1", deleted=True)])
    assert gone.place == "p2" == (await meta(store, "a")).place  # the live leaf won
    [again] = await store.write(DB, [rw("a", "1-a", place="p1")])
    [refused] = await store.write(DB, [rw("a", "3-e", "2-d", allowed=frozenset({"p9"}))])
    assert (again.place, again.error) == (None, None)
    assert refused.error is not None and refused.place is None


BATCH = [
    rw("a", "1-a", new_edits=True),
    rw("b", "1-b", new_edits=True),
    rw("a", "1-z", new_edits=True),
    rw("c", "1-c"),
    rw("c", "1-c"),
    rw("a", "2-a", "1-a", new_edits=True),
]


async def test_a_batch_applies_its_writes_in_order(store: DocStore) -> None:
    """A document written twice in one batch: the second write sees the first."""
    results = await store.write(DB, BATCH)
    assert [r.rev for r in results] == ["1-a", "1-b", "1-z", "1-c", "1-c", "2-a"]
    assert [type(r.error) for r in results] == [type(None)] * 2 + [Conflict] + [type(None)] * 3
    assert [(c.id, c.winner) for c in await latest(store)] == [
        ("a", "2-a"),
        ("b", "1-b"),
        ("c", "1-c"),
    ]


@on_seq_stores
async def test_a_batch_takes_one_sequence_per_change(store: SeqStore) -> None:
    await store.write(DB, BATCH)
    assert await update_seq(store) == 4
    assert rows(await store.changes(DB, None, 0, 10)) == [("b", 2), ("c", 3), ("a", 4)]


async def test_a_batch_is_all_or_nothing(store: DocStore) -> None:
    mark = await feed_mark(store)
    with pytest.raises(BadRequest):
        await store.write(DB, [rw("a", "1-a"), rw("b", "not-a-rev")])
    with pytest.raises(BadRequest):  # the bad one after a first write of the same document
        await store.write(DB, [rw("c", "1-c"), rw("c", "2-x", "1-c"), rw("c", "x-bad")])
    assert await changed_since(store, mark) == []
    assert await store.get_metas(DB, ["a", "b", "c"]) == {}


async def test_the_document_lives_where_its_winning_revision_does(store: DocStore) -> None:
    await ok(store, rw("a", "1-a", place="p1"), rw("a", "2-b", "1-a", place="p2"))
    assert (await meta(store, "a")).place == "p2"
    await ok(store, rw("a", "2-c", "1-a", place="p3"))
    await ok(store, rw("a", "2-a", "1-a", place="p4"))
    found = await meta(store, "a")
    assert (found.winner, found.place, found.seq) == ("2-c", "p3", 4)
    assert rows(await latest(store, P3)) == [("a", 4)]
    for place in ("p1", "p2", "p4"):
        assert await latest(store, frozenset({place})) == []
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


async def test_a_stemmed_revisions_body_is_freed_and_comes_back_new(store: DocStore) -> None:
    """As SQLite frees the body of a revision ``revs_limit`` cut from the tree; replicated
    again, the revision comes back with the body it arrives with."""
    await store.set_revs_limit(DB, 2)
    await ok(store, rw("a", "1-a"))
    await ok(store, rw("a", "2-b", "1-a"))
    await ok(store, rw("a", "3-c", "2-b"))
    found = await store.get_revisions(DB, [("a", "1-a"), ("a", "2-b"), ("a", "3-c")])
    assert set(found) == {("a", "2-b"), ("a", "3-c")}
    again = RevisionWrite("a", ("1-a",), False, "p2", "key-new", b"new body", False)
    await ok(store, again)
    assert await store.get_revisions(DB, [("a", "1-a")]) == {
        ("a", "1-a"): StoredRevision("a", "1-a", "p2", False, "key-new", b"new body")
    }


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
    mark = await feed_mark(store)
    [result] = await store.write(DB, [attempt])
    assert type(result.error) is (type(None) if error is None else error)
    if error is Elsewhere:
        assert isinstance(result.error, Forbidden) and result.error.error_token == "forbidden"
    assert await changed_since(store, mark) == ([] if error else [attempt.doc_id])
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
        "b": DocMeta("b", SHARED, ANY, "3-c", False, b_tree),  # seq: the next two tests
    }
    wanted = [("a", "1-a"), ("a", "2-b"), ("b", "2-c"), ("b", "3-c"), ("zz", "1-a"), ("a", "9-z")]
    assert await store.get_revisions(DB, wanted) == {
        ("a", "1-a"): StoredRevision("a", "1-a", "p1", False, "key-p1", b"a@1-a"),
        ("a", "2-b"): StoredRevision("a", "2-b", "p2", True, "key-p2", b"a@2-b"),
        ("b", "3-c"): StoredRevision("b", "3-c", SHARED, False, "key-", b"b@3-c"),
    }


@on_seq_stores
async def test_a_documents_seq_is_the_database_sequence(store: SeqStore) -> None:
    await ok(store, rw("a", "1-a"), rw("a", "2-b", "1-a"), rw("b", "1-b"))
    found = await store.get_metas(DB, ["a", "b"])
    assert (found["a"].seq, found["b"].seq) == (2, 3)


@on_log_stores
async def test_a_documents_seq_is_its_version(store: LogStore) -> None:
    """On a log store, ``seq`` counts the accepted writes of the document itself."""
    await ok(store, rw("a", "1-a"), rw("a", "2-b", "1-a"), rw("b", "1-b"))
    await store.write(DB, [rw("a", "2-b", "1-a"), rw("a", "1-x", new_edits=True)])  # refused
    found = await store.get_metas(DB, ["a", "b"])
    assert (found["a"].seq, found["b"].seq) == (2, 1)


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


@on_seq_stores
@pytest.mark.parametrize(("places", "since", "options", "expected"), CHANGES)
async def test_changes(
    store: SeqStore,
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
    await ok(store, rw("a", "2-z", "1-a", place="p1"))
    found = await store.get_metas(DB, ["a", "b"])
    assert await latest(store, P2) == [
        Change(found["b"].seq, "b", "p2", "2-b", True, (("2-b", True),))
    ]
    [a] = [c for c in await latest(store, P1) if c.id == "a"]
    assert a == Change(found["a"].seq, "a", "p1", "2-z", False, (("2-z", False), ("2-a", False)))


@on_seq_stores
async def test_a_change_row_carries_its_sequence(store: SeqStore) -> None:
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


@on_seq_stores
@pytest.mark.parametrize(("places", "since", "expected"), COUNTS)
async def test_count_changes(
    store: SeqStore, places: frozenset[str] | None, since: int, expected: int
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
    assert (info.doc_count, info.doc_del_count) == (live, deleted)


async def test_live_counts_per_place(store: DocStore) -> None:
    """The supervisor console's set sizes: live documents of each place asked for."""
    await seed_changes(store)
    counts = await store.live_counts(DB, ["p1", "p2", SHARED, "p3", "nowhere"])
    assert {p: n for p, n in counts.items() if n} == {"p1": 2, SHARED: 1, "p3": 1}
    assert {p: n for p, n in (await store.live_counts(DB, ["p3"])).items() if n} == {"p3": 1}
    with pytest.raises(NotFound):
        await store.live_counts("no-such-db", ["p1"])


@on_seq_stores
@pytest.mark.parametrize("places", [None, P1, frozenset()])
async def test_db_info_update_seq_is_the_databases_last(
    store: SeqStore, places: frozenset[str] | None
) -> None:
    await seed_changes(store)
    assert (await store.db_info(DB, places)).update_seq == 7


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
    pytest.param(P1 | P2, Q(start="bb", end="dd"), 4, "d", id="set-bounds-between-ids"),
    pytest.param(P1, Q(end="d", inclusive_end=False), 2, "a", id="place-exclusive-end"),
    pytest.param(P2 | {SHARED}, Q(start="c"), 3, "ef", id="place-and-shared-start"),
    pytest.param(P1 | P2, Q(start="e", end="b"), 4, "", id="set-start-after-end"),
    pytest.param(P1 | P2, Q(descending=True, start="b", end="e"), 4, "", id="set-desc-reversed"),
    pytest.param(P1 | P2, Q(descending=True, skip=1, limit=2), 4, "db", id="set-desc-skip"),
    pytest.param(
        P1 | P2,
        Q(descending=True, start="e", end="b", inclusive_end=False),
        4,
        "ed",
        id="set-desc-excl",
    ),
    pytest.param(P1 | P2, Q(skip=3, limit=5), 4, "e", id="set-skip-near-the-end"),
    pytest.param(P1 | P2, Q(limit=0), 4, "", id="set-limit-zero"),
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
    assert [unnumbered(c) for c in page] == [Change(0, "a", "p1", "1-a", False, (("1-a", False),))]
    assert page == [c for c in await latest(store, P1) if c.id == "a"]


@pytest.mark.parametrize("places", [None, P1, P1 | P2])
async def test_all_docs_orders_ids_by_code_point(
    store: DocStore, places: frozenset[str] | None
) -> None:
    """CouchDB compares _all_docs ids raw, not by UCA (docs: ddocs/views/collation.html)."""
    ids = ["é", "a", "_design/x", "Z", "aa", "10", "9", "a!b", "a b", "\U0001f600"]
    await ok(store, *(rw(i, "1-a", place="p2" if i in ("Z", "aa") else "p1") for i in ids))
    expected = sorted(i for i in ids if places != P1 or i not in ("Z", "aa"))
    _, page = await store.all_docs(DB, places, AllDocsQuery())
    assert [c.id for c in page] == expected
    _, page = await store.all_docs(DB, places, AllDocsQuery(descending=True, start="a!b"))
    assert [c.id for c in page] == [i for i in expected[::-1] if i <= "a!b"]


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
    mark = await feed_mark(store)
    conflict = rw("a", "1-b", new_edits=True, attachments=(X1,))
    refused = rw("a", "2-c", "1-a", allowed=frozenset({"p9"}), attachments=(X2,))
    results = await store.write(DB, [conflict, refused])
    assert [type(r.error).__name__ for r in results] == ["Conflict", "DocumentElsewhere"]
    await ok(store, rw("a", "1-a", attachments=(Y1,)))  # already there: nothing changes
    for digest in ("md5-x", "md5-y"):
        assert await store.get_attachment(DB, digest, None) is None
    assert await changed_since(store, mark) == []


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
    assert await latest(store) == []


async def test_of_two_concurrent_local_writes_from_one_rev_one_wins(store: DocStore) -> None:
    for expected in (None, "0-1"):
        attempts = [store.put_local(DB, "alice", "cp", expected, b) for b in (b"x", b"y")]
        answers = await asyncio.gather(*attempts, return_exceptions=True)
        assert sorted(type(a).__name__ for a in answers) == ["Conflict", "str"]
        [won] = [b for a, b in zip(answers, (b"x", b"y"), strict=True) if isinstance(a, str)]
        found = await store.get_local(DB, "alice", "cp")
        assert found is not None and (found.rev, found.body) == (
            "0-1" if expected is None else "0-2",
            won,
        )


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


# -- the per-place logs (log stores) -------------------------------------------------
async def seed_logs(store: DocStore) -> None:
    """p1: a (four writes, two branches), b, c (deleted); p2: d, and e, moved from p1;
    shared: f.  The first entry of p1 names three documents."""
    await ok(store, rw("a", "1-a"), rw("b", "1-b"), rw("c", "1-c"))
    await ok(store, rw("e", "1-e"))
    await ok(store, rw("d", "1-d", place="p2"), rw("f", "1-f", place=SHARED))
    await ok(store, rw("a", "2-a", "1-a"), rw("a", "2-b", "1-a"))
    await ok(store, rw("c", "2-c", "1-c", deleted=True))
    await ok(store, rw("e", "2-e", "1-e", place="p2"))
    await ok(store, rw("a", "3-a", "2-a"))


LATEST = {
    "a": Change(4, "a", "p1", "3-a", False, (("3-a", False), ("2-b", False))),
    "b": Change(1, "b", "p1", "1-b", False, (("1-b", False),)),
    "c": Change(2, "c", "p1", "2-c", True, (("2-c", True),)),
    "d": Change(1, "d", "p2", "1-d", False, (("1-d", False),)),
    "e": Change(2, "e", "p2", "2-e", False, (("2-e", False),)),
    "f": Change(1, "f", SHARED, "1-f", False, (("1-f", False),)),
}
LOGGED = frozenset({"p1", "p2", SHARED})


async def walk(
    store: LogStore,
    places: frozenset[str],
    cursor: Mapping[str, Position] | None = None,
    limit: int = 1000,
) -> list[LogRow]:
    """Every row after ``cursor``, page by page as a reader takes them."""
    position = dict(cursor or {})
    rows: list[LogRow] = []
    for _ in range(100):
        page = await store.place_changes(DB, places, position, limit)
        assert len([r for r in page.rows if r.change is not None]) <= limit
        rows += page.rows
        position.update((row.place, row.after) for row in page.rows)
        if page.exhausted:
            return rows
        assert page.rows, "a page that neither ends the walk nor moves it forward"
    raise AssertionError("the walk does not end")


def sent(rows: Sequence[LogRow]) -> list[Change]:
    return [row.change for row in rows if row.change is not None]


@on_log_stores
@pytest.mark.parametrize("limit", [1, 2, 1000])
async def test_a_place_walk_sends_each_document_once_in_its_latest_state(
    store: LogStore, limit: int
) -> None:
    await seed_logs(store)
    for place, ids in {"p1": "abc", "p2": "de", SHARED: "f", "p3": ""}.items():
        changes = sent(await walk(store, frozenset({place}), limit=limit))
        assert sorted(c.id for c in changes) == list(ids), place
        assert changes == [LATEST[c.id] for c in changes]
    assert sorted(c.id for c in sent(await walk(store, LOGGED, limit=limit))) == list("abcdef")


@on_log_stores
async def test_resuming_from_any_rows_position_yields_exactly_the_rest(store: LogStore) -> None:
    await seed_logs(store)
    rows = await walk(store, LOGGED)
    assert any(row.change is None for row in rows)  # e's entry in p1, a's older ones
    assert any(row.after[1] > 0 for row in rows)  # a position inside p1's first entry
    cursor: dict[str, Position] = {}
    for i, row in enumerate(rows):
        cursor[row.place] = row.after
        assert await walk(store, LOGGED, cursor) == rows[i + 1 :], i


@on_log_stores
async def test_a_document_moved_away_is_not_sent_in_its_old_place(store: LogStore) -> None:
    await ok(store, rw("a", "1-a"), rw("b", "1-b"))
    tails = await store.log_tails(DB, P1 | P2)
    await ok(store, rw("a", "2-a", "1-a", place="p2"))
    assert [c.id for c in sent(await walk(store, P1))] == ["b"]
    assert [c.id for c in sent(await walk(store, P2))] == ["a"]
    since = {p: (n, 0) for p, n in tails.items()}
    assert sent(await walk(store, P1, since)) == []
    [moved] = sent(await walk(store, P2, since))
    assert (moved.id, moved.place, moved.winner) == ("a", "p2", "2-a")


@on_log_stores
async def test_places_missing_from_the_cursor_start_from_the_beginning(store: LogStore) -> None:
    """Scope growth: a place added to the reader's set is read from its first entry."""
    await seed_logs(store)
    cursor: dict[str, Position] = {}
    for row in await walk(store, P1):
        cursor[row.place] = row.after
    assert set(cursor) == {"p1"}
    grown = sent(await walk(store, P1 | P2, cursor))
    assert grown == [LATEST["d"], LATEST["e"]]


@on_log_stores
async def test_a_limit_inside_one_large_entry_walks_it_all(store: LogStore) -> None:
    ids = [f"doc{n:02d}" for n in range(30)]
    await ok(store, *(rw(i, "1-a") for i in ids))  # one write: one entry of 30 ids
    assert await store.log_tails(DB, P1) == {"p1": 1}
    cursor: dict[str, Position] = {}
    seen: list[str] = []
    for _ in range(10):
        page = await store.place_changes(DB, P1, cursor, 7)
        seen += [c.id for c in sent(page.rows)]
        cursor.update((row.place, row.after) for row in page.rows)
        if page.exhausted:
            break
        assert len(sent(page.rows)) == 7
    else:
        raise AssertionError("the walk does not end")
    assert sorted(seen) == ids and len(seen) == 30
    assert cursor == {"p1": (1, 0)}


@on_log_stores
async def test_global_changes_list_every_document_and_resume_from_a_token(
    store: LogStore,
) -> None:
    await seed_logs(store)
    everything = await store.global_changes(DB, None, 1000)
    assert sorted((c for c, _ in everything.rows), key=lambda c: c.id) == list(LATEST.values())
    for i, (_, token) in enumerate(everything.rows):
        rest = await store.global_changes(DB, token, 1000)
        assert {c.id for c, _ in rest.rows} == {c.id for c, _ in everything.rows[i + 1 :]}
    assert (await store.global_changes(DB, everything.last, 1000)).rows == []
    paged: list[str] = []
    since = None
    for _ in range(20):  # small pages: the design document in the feed must not end them early
        page = await store.global_changes(DB, since, 2)
        paged += [c.id for c, _ in page.rows]
        if len(page.rows) < 2:
            break
        since = page.last
    assert sorted(paged) == list("abcdef")


@on_log_stores
async def test_a_write_whose_log_append_failed_is_logged_by_the_settler(
    store: CouchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ok(store, rw("a", "1-a"))

    async def lost(log_db: str, place: str, ids: Sequence[tuple[str, int]]) -> int:
        raise StoreUnavailable("the writer stopped between its meta and its log entry")

    monkeypatch.setattr(store.log, "append", lost)
    with pytest.raises(StoreUnavailable):
        await store.write(DB, [rw("a", "2-a", "1-a"), rw("b", "1-b")])
    monkeypatch.undo()
    assert (await meta(store, "a")).winner == "2-a"  # the metas were updated...
    assert [c.id for c in sent(await walk(store, P1))] == []  # ...their entries are missing
    assert await store.settle(DB, older_than=0) == 2
    assert [(c.id, c.winner) for c in sent(await walk(store, P1))] == [("a", "2-a"), ("b", "1-b")]
    assert await store.settle(DB, older_than=0) == 0


@on_log_stores
async def test_writers_waiting_for_a_place_log_share_its_next_entry(
    store: CouchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent writers in one place do not race for one log position (each lost race
    cost a 409 and a tail read, and after 50 the write was answered 503 with its meta
    already saved): while one entry is written, the others wait and share the next."""
    gate = asyncio.Event()
    entries: list[list[str]] = []
    append = store.log._append

    async def held(log_db: str, place: str, ids: Mapping[str, int]) -> int:
        entries.append(sorted(ids))
        await gate.wait()
        return await append(log_db, place, ids)

    monkeypatch.setattr(store.log, "_append", held)
    first = asyncio.create_task(store.write(DB, [rw("a00", "1-a")]))
    while not entries:
        await asyncio.sleep(0.01)
    others = [asyncio.create_task(store.write(DB, [rw(f"a{n:02d}", "1-a")])) for n in range(1, 11)]
    waiting = store.log._waiting
    while sum(len(b.ids) for b in waiting.values()) < 10:
        await asyncio.sleep(0.01)
    gate.set()
    for done in await asyncio.gather(first, *others):
        assert [r.error for r in done] == [None]
    assert entries == [["a00"], [f"a{n:02d}" for n in range(1, 11)]]
    assert await store.log_tails(DB, P1) == {"p1": 2}
    assert sorted(c.id for c in sent(await walk(store, P1))) == [f"a{n:02d}" for n in range(11)]


@on_log_stores
async def test_a_walk_stops_at_an_entry_whose_meta_it_cannot_see_yet(store: CouchStore) -> None:
    await ok(store, rw("x", "1-x"), rw("y", "1-y", place="p2"))
    ahead = layout.entry_id("p1", 2)  # names x's next version, which no meta shows yet
    where = path(layout.log_db(store.prefix, DB), ahead)
    await store.client.json("PUT", where, body={"ids": [["x", 2]], "at": time.time()})
    await ok(store, rw("z", "1-z"))  # appended after it, at position 3
    rows = await walk(store, P1 | P2)
    assert [(r.place, r.change and r.change.id, r.after) for r in rows] == [
        ("p1", "x", (1, 0)),
        ("p2", "y", (1, 0)),
    ]
    assert await walk(store, P1, {"p1": (1, 0)}) == []  # it waits there, however often asked
    await ok(store, rw("x", "2-x", "1-x"))  # x's meta reaches version 2: the entry is visible
    resumed = await walk(store, P1, {"p1": (1, 0)})
    assert [(c.id, c.winner) for c in sent(resumed)] == [("x", "2-x"), ("z", "1-z")]


@on_log_stores
async def test_a_body_left_behind_is_replaced_by_the_one_written_with_the_tree(
    store: CouchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that stopped before freeing a stemmed body leaves it; the revision,
    replicated again, must not come back with that stale body."""
    await store.set_revs_limit(DB, 1)
    await ok(store, rw("a", "1-a"))

    async def stopped(db: str, stemmed: Sequence[tuple[str, str]]) -> None:
        return None

    monkeypatch.setattr(store, "_free", stopped)
    await ok(store, rw("a", "2-b", "1-a"))
    again = RevisionWrite("a", ("1-a",), False, "p2", "key-new", b"new body", False)
    await ok(store, again)
    [(_, stored)] = (await store.get_revisions(DB, [("a", "1-a")])).items()
    assert (stored.place, stored.key_ref, stored.body) == ("p2", "key-new", b"new body")


@on_log_stores
async def test_a_create_stopped_half_way_is_finished_by_the_next(store: CouchStore) -> None:
    await store.client.json("PUT", path(layout.meta_db(store.prefix, "half")))
    with pytest.raises(NotFound):
        await store.db_info("half", None)
    await store.create_db("half")
    await ok(store, rw("a", "1-a"), db="half")
    assert [c.id for c in await latest(store, db="half")] == ["a"]
    with pytest.raises(PreconditionFailed):
        await store.create_db("half")


@on_log_stores
async def test_a_saved_cursor_is_loaded_by_any_instance_until_the_database_goes(
    store: CouchStore, couchdb_url: str
) -> None:
    async def loaded_elsewhere() -> dict[str, Position] | None:
        other = couch_store(couchdb_url, store.prefix)
        try:
            return await other.load_cursor(DB, "k1")
        finally:
            await other.close()

    cursor = {"p1": (3, 1), SHARED: (7, 0)}
    assert await store.load_cursor(DB, "k1") is None
    await store.save_cursor(DB, "k1", cursor)
    assert await store.load_cursor(DB, "k1") == cursor
    assert await loaded_elsewhere() == cursor
    await store.delete_db(DB)
    await store.create_db(DB)
    assert await store.load_cursor(DB, "k1") is None
    assert await loaded_elsewhere() is None
    await store.save_cursor(DB, "k1", cursor)  # kept again: this instance forgot it had
    assert await loaded_elsewhere() == cursor


# -- stores side by side ------------------------------------------------------------
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


BATCHES = st.lists(st.lists(WRITES, min_size=1, max_size=4), max_size=5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BATCHES, st.sampled_from([2, 1000]))
def test_both_sequence_stores_answer_alike(batches: list[list[RevisionWrite]], limit: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = asyncio.run(_observe(make_store("sqlite", Path(tmp)), batches, limit))
    assert asyncio.run(_observe(MemoryStore(), batches, limit)) == sqlite


async def _observe_alike(store: DocStore, batches: list[list[RevisionWrite]], limit: int) -> Any:
    """What every kind of store answers alike after the batches: all but sequence numbers."""
    try:
        await store.create_db(DB)
        await store.set_revs_limit(DB, limit)
        results = [[(r.rev, type(r.error)) for r in await store.write(DB, b)] for b in batches]
        metas = await store.get_metas(DB, ["a", "b"])
        revs = {(m.id, rev) for m in metas.values() for rev in m.tree}
        seen: list[Any] = [results]
        seen.append({i: (dataclasses.replace(m, seq=0), dict(m.tree)) for i, m in metas.items()})
        seen.append(await store.get_revisions(DB, sorted(revs)))
        for places in (None, P1, P2, P1 | {SHARED}):
            seen.append([unnumbered(c) for c in await latest(store, places)])
            total, page = await store.all_docs(DB, places, AllDocsQuery(descending=True))
            seen.append((total, [unnumbered(c) for c in page]))
            info = await store.db_info(DB, places)
            seen.append((info.doc_count, info.doc_del_count))
        return seen
    finally:
        await store.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=BATCHES, limit=st.sampled_from([2, 1000]))
def test_couchdb_answers_like_sqlite(
    couchdb_url: str, batches: list[list[RevisionWrite]], limit: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = asyncio.run(_observe_alike(make_store("sqlite", Path(tmp)), batches, limit))
    prefix = new_prefix()
    try:
        couch = asyncio.run(_observe_alike(couch_store(couchdb_url, prefix), batches, limit))
    finally:
        delete_databases(couchdb_url, prefix)
    assert couch == sqlite


# -- the audit entry of a write --------------------------------------------------
async def _audited(store: DocStore) -> list[tuple[str, str, str | None, tuple[str, ...]]]:
    if isinstance(store, MemoryStore | AuditedCouchStore):
        return [(e.actor, e.action, e.db, e.doc_ids) for e in store.audit]
    assert isinstance(store, SqliteStore)
    found = await store.read(
        lambda c: c.execute("SELECT actor, action, db, doc_ids FROM audit ORDER BY id").fetchall()
    )
    return [(a, b, c, tuple(json.loads(d))) for a, b, c, d in found]


async def test_a_write_appends_its_audit_entry_naming_what_it_wrote(store: DocStore) -> None:
    stamp = audit.AuditStamp(ChainKey(b"k" * 32), "alice", "dev-1")
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


class BrokenStamp(audit.AuditStamp):
    def entry(self, db: str | None, doc_ids: Sequence[str]) -> audit.Entry:
        raise OSError("no room for the entry")


async def test_a_failing_audit_append_fails_the_write(store: DocStore) -> None:
    with pytest.raises((StoreError, OSError)):
        await store.write(DB, [rw("a", "1-a")], BrokenStamp(ChainKey(b"k" * 32), "alice", None))


@on_transactional_stores
async def test_a_failing_audit_append_takes_the_write_with_it(store: DocStore) -> None:
    with pytest.raises((StoreError, OSError)):
        await store.write(DB, [rw("a", "1-a")], BrokenStamp(ChainKey(b"k" * 32), "alice", None))
    assert await store.get_metas(DB, ["a"]) == {}
