"""One contract for the refused-records port (sync.refusals.ports): every adapter alike.

The embedded adapter runs on a real SQLite file through the server's store
(``SqliteStore``); the memory one is a dict; the CouchDB one runs on a CouchDB-API
server (pouchdb-server, or a real CouchDB with FIELDSYNC_TEST_COUCHDB_URL), where a
second client and adapter on the same database stands for a second instance.
Bodies are opaque sealed bytes here.  Pruning is driven by an injected clock
(``prune_once``), never by waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from couchdb_server import couch_request

from sync.config import Endpoint
from sync.refusals import couchdb as couch_refusals
from sync.refusals.couchdb import CouchRefusals
from sync.refusals.embedded import EmbeddedRefusals
from sync.refusals.memory import MemoryRefusals
from sync.refusals.ports import Cursor, NewRefusal, RefusalStore, SealedBody
from sync.refusals.routes import prune_once
from sync.store.couchdb.client import CouchClient
from sync.store.schema import db_path, initialise
from sync.store.sqlite import SqliteStore

T0 = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)


def at(minutes: float) -> str:
    return (T0 + dt.timedelta(minutes=minutes)).isoformat(timespec="microseconds")


def refused(
    doc_id: str, minutes: float, worker: str = "alice", rev: str = "1-a", times: int = 1
) -> NewRefusal:
    body = SealedBody("ref-1", f"sealed {doc_id}".encode(), False)
    return NewRefusal(
        worker, "SN-1", doc_id, rev, "form_schema", "field 'weeks': must be at most 42",
        at(minutes), body, 120, times,
    )  # fmt: skip


@pytest.fixture(params=["embedded", "memory", "couchdb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RefusalStore]:
    if request.param == "memory":
        yield MemoryRefusals()
        return
    if request.param == "couchdb":
        async with couch_pair(request) as (first, _):
            yield first
        return
    initialise(db_path(tmp_path))
    sqlite = SqliteStore(db_path(tmp_path))
    yield await EmbeddedRefusals.opened(sqlite)
    await sqlite.close()


@contextlib.asynccontextmanager
async def couch_pair(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[CouchRefusals, CouchRefusals]]:
    """Two adapters, each with its own client, on one CouchDB database: two instances."""
    url: str = request.getfixturevalue("couchdb_url")
    prefix: str = request.getfixturevalue("couch_prefix")
    clients = [CouchClient(Endpoint.parse(url)) for _ in range(2)]
    try:
        yield (
            CouchRefusals.for_prefix(clients[0], prefix),
            CouchRefusals.for_prefix(clients[1], prefix),
        )
    finally:
        for client in clients:
            await client.close()


@pytest.fixture
async def two(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RefusalStore, RefusalStore]]:
    async with couch_pair(request) as pair:
        yield pair


async def test_a_refusal_is_kept_with_everything_it_says(store: RefusalStore) -> None:
    await store.record([refused("r1", 0)], per_worker=10)
    [kept] = await store.for_workers(["alice"], 10)
    assert (kept.worker, kept.device, kept.doc_id, kept.rev) == ("alice", "SN-1", "r1", "1-a")
    assert (kept.reason, kept.count, kept.body_bytes) == ("form_schema", 1, 120)
    assert kept.first_at == kept.last_at == at(0)
    found = await store.get(kept.id)
    assert found is not None
    assert found[1] == SealedBody("ref-1", b"sealed r1", False)
    assert await store.get(kept.id + 1000) is None


async def test_a_repeat_only_counts_and_moves_last_at(store: RefusalStore) -> None:
    await store.record([refused("r1", 0)], per_worker=10)
    again = NewRefusal(
        "alice", "SN-2", "r1", "1-a", "too_large", "other", at(5),
        SealedBody("ref-2", b"another body", True), 999, 3,
    )  # fmt: skip
    await store.record([again], per_worker=10)
    [kept] = await store.for_workers(None, 10)
    assert (kept.count, kept.first_at, kept.last_at) == (4, at(0), at(5))
    assert (kept.device, kept.reason, kept.body_bytes) == ("SN-1", "form_schema", 120)
    found = await store.get(kept.id)
    assert found is not None and found[1] is not None and found[1].data == b"sealed r1"


async def test_another_rev_or_worker_is_another_refusal(store: RefusalStore) -> None:
    await store.record(
        [refused("r1", 0), refused("r1", 1, rev="2-b"), refused("r1", 2, worker="bob")], 10
    )
    rows = await store.for_workers(None, 10)
    assert sorted((r.worker, r.rev) for r in rows) == [
        ("alice", "1-a"),
        ("alice", "2-b"),
        ("bob", "1-a"),
    ]
    assert await store.counts(["alice", "bob", "carol"]) == {"alice": 2, "bob": 1}


async def test_newest_first_with_a_cursor_and_worker_filter(store: RefusalStore) -> None:
    await store.record([refused(f"r{i}", i) for i in range(5)], per_worker=10)
    await store.record([refused("b1", 2.5, worker="bob")], per_worker=10)
    first = await store.for_workers(["alice"], 2)
    assert [r.doc_id for r in first] == ["r4", "r3"]
    cursor = str(Cursor(first[-1].last_at, first[-1].id))
    rest = await store.for_workers(["alice"], 10, before=cursor)
    assert [r.doc_id for r in rest] == ["r2", "r1", "r0"]
    both = await store.for_workers(["alice", "bob"], 10)
    assert [r.doc_id for r in both] == ["r4", "r3", "b1", "r2", "r1", "r0"]
    assert await store.for_workers([], 10) == []


async def test_same_time_pages_do_not_repeat_or_skip(store: RefusalStore) -> None:
    await store.record([refused(f"r{i}", 0) for i in range(4)], per_worker=10)
    seen: list[str] = []
    before = None
    while True:
        page = await store.for_workers(None, 3, before=before)
        seen += [r.doc_id for r in page]
        if len(page) < 3:
            break
        before = str(Cursor(page[-1].last_at, page[-1].id))
    assert sorted(seen) == ["r0", "r1", "r2", "r3"]


async def test_the_cap_keeps_the_newest_per_worker_and_counts_the_dropped(
    store: RefusalStore,
) -> None:
    await store.record([refused(f"r{i}", i) for i in range(5)], per_worker=3)
    await store.record([refused("b1", 0, worker="bob")], per_worker=3)
    assert [r.doc_id for r in await store.for_workers(["alice"], 10)] == ["r4", "r3", "r2"]
    assert await store.counts(["alice", "bob"]) == {"alice": 5, "bob": 1}
    await store.record([refused("r9", 9)], per_worker=3)
    assert [r.doc_id for r in await store.for_workers(["alice"], 10)] == ["r9", "r4", "r3"]
    assert await store.counts(["alice"]) == {"alice": 6}


async def test_pruning_with_an_injected_clock(store: RefusalStore) -> None:
    await store.record([refused("old", 0), refused("new", 60 * 24 * 50)], per_worker=10)
    ninety_one_days_on = T0 + dt.timedelta(days=91)
    assert await prune_once(store, 90, lambda: ninety_one_days_on) == 1
    assert [r.doc_id for r in await store.for_workers(None, 10)] == ["new"]
    assert await prune_once(store, 90, lambda: ninety_one_days_on) == 0
    much_later = T0 + dt.timedelta(days=200)
    assert await prune_once(store, 90, lambda: much_later) == 1
    assert await store.for_workers(None, 10) == []
    assert await store.counts(["alice"]) == {}


# -- two instances on one CouchDB ---------------------------------------------------------


async def test_two_instances_recording_one_refusal_at_once_lose_no_count(
    two: tuple[RefusalStore, RefusalStore],
) -> None:
    first, second = two
    rounds = [
        store.record([refused("r1", minute, times=2)], per_worker=10)
        for minute in range(10)
        for store in (first, second)
    ]
    await asyncio.gather(*rounds)  # 20 writers on one document: 409s, read again, retried
    [kept] = await second.for_workers(["alice"], 10)
    assert (kept.count, kept.first_at, kept.last_at) == (40, at(0), at(9))
    assert await first.counts(["alice"]) == {"alice": 1}
    found = await first.get(kept.id)
    assert found is not None and found[1] == SealedBody("ref-1", b"sealed r1", False)


async def test_a_write_made_from_a_read_that_missed_our_last_one_loses_no_count(
    two: tuple[RefusalStore, RefusalStore],
) -> None:
    """On a cluster, a copy that has not had our last write yet may answer our next read,
    and take the write made from it (202), beside the other: the count that write carries
    must still hold what we added before, not what that copy showed."""
    first, _ = two
    assert isinstance(first, CouchRefusals)
    await first.record([refused("r1", 0)], per_worker=10)
    key = couch_refusals.doc_id_of(couch_refusals.ident_of("alice", "r1", "1-a"))
    client = first._client
    [behind] = (await client.leaves_by_id(first._db, [key]))[key]
    await first.record([refused("r1", 1)], per_worker=10)
    leaves_by_id, json = client.leaves_by_id, client.json
    lagging = [True]

    async def read_from_the_copy_behind(db: str, ids: Sequence[str], **kw: Any) -> Any:
        if key in ids and lagging[0]:
            return {key: [behind]}
        return await leaves_by_id(db, ids, **kw)

    async def taken_by_the_copy_behind(method: str, where: str, **kw: Any) -> Any:
        docs = (kw.get("body") or {}).get("docs") or [{}]
        if where.endswith("/_bulk_docs") and docs[0].get("_rev") == behind["_rev"]:
            lagging[0] = False
            start, parent = behind["_rev"].split("-")
            ours = {**docs[0], "_rev": f"{int(start) + 1}-{'f' * 32}"}
            ours["_revisions"] = {"start": int(start) + 1, "ids": ["f" * 32, parent]}
            body = {"docs": [ours], "new_edits": False}
            await json("POST", where, body=body)  # a branch beside our last write
            return [{"id": key, "rev": ours["_rev"], "ok": True}]
        return await json(method, where, **kw)

    client.leaves_by_id = read_from_the_copy_behind  # type: ignore[method-assign,assignment]
    client.json = taken_by_the_copy_behind  # type: ignore[method-assign]
    await first.record([refused("r1", 2)], per_worker=10)
    assert not lagging[0]
    [kept] = await first.for_workers(["alice"], 10)
    assert kept.count == 3


async def test_a_refusal_cut_and_made_again_counts_from_nothing(
    two: tuple[RefusalStore, RefusalStore],
) -> None:
    """What an instance remembers adding to a document is for that document's life: cut,
    then made again by another instance, it does not carry the old count."""
    first, second = two
    await first.record([refused("r1", 0, times=3)], per_worker=10)
    await first.record([refused(f"n{i}", 10 + i) for i in range(3)], per_worker=3)  # r1 cut
    assert "r1" not in [r.doc_id for r in await first.for_workers(["alice"], 10)]
    await second.record([refused("r1", 20)], per_worker=10)
    await first.record([refused("r1", 21)], per_worker=10)
    kept = {r.doc_id: r.count for r in await second.for_workers(["alice"], 10)}
    assert kept["r1"] == 2


async def test_two_instances_cutting_at_once_count_each_dropped_refusal_once(
    two: tuple[RefusalStore, RefusalStore],
) -> None:
    first, second = two
    await asyncio.gather(
        first.record([refused(f"a{i}", i) for i in range(6)], per_worker=3),
        second.record([refused(f"b{i}", i + 0.5) for i in range(6)], per_worker=3),
    )
    for store in (first, second):  # whatever the interleaving, the cap holds afterwards
        await store.record([refused("late", 100)], per_worker=3)
    kept = await first.for_workers(["alice"], 10)
    assert len(kept) == 3 and kept[0].doc_id == "late"
    assert await second.counts(["alice"]) == {"alice": 13}


async def test_a_cut_between_another_instances_count_and_its_list_keeps_the_newest(
    two: tuple[RefusalStore, RefusalStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instance B counts the worker's refusals, then instance A cuts them to the cap, then
    B lists what to delete: B must not reach into the newest that A kept (it listed the
    oldest "count minus cap" of what was left, and cut them all, on a real CouchDB)."""
    first, second = two
    assert isinstance(first, CouchRefusals) and isinstance(second, CouchRefusals)
    await first.record([refused(f"r{i}", i) for i in range(12)], per_worker=100)
    client = second._client
    json = client.json

    async def counted_then_cut_elsewhere(method: str, where: str, **kw: object) -> object:
        answer = await json(method, where, **kw)  # type: ignore[arg-type]
        params = kw.get("params")
        if isinstance(params, dict) and params.get("group_level") == "1":
            assert await first.cut("alice", 3) == 9  # between B's count and B's list
        return answer

    monkeypatch.setattr(client, "json", counted_then_cut_elsewhere)
    assert await second.cut("alice", 3) == 0
    kept = await first.for_workers(["alice"], 10)
    assert [k.doc_id for k in kept] == ["r11", "r10", "r9"]


async def test_two_instances_pruning_at_once_delete_each_refusal_once(
    two: tuple[RefusalStore, RefusalStore],
) -> None:
    first, second = two
    await first.record([refused(f"r{i}", i) for i in range(30)], per_worker=100)
    later = T0 + dt.timedelta(days=91)
    gone = await asyncio.gather(*(prune_once(s, 90, lambda: later) for s in (first, second)))
    assert sum(gone) == 30
    assert await second.for_workers(None, 100) == []


async def test_no_body_is_stored_in_plaintext_in_couchdb(
    two: tuple[RefusalStore, RefusalStore], couchdb_url: str, couch_prefix: str
) -> None:
    first, _ = two
    await first.record([refused("r1", 0)], per_worker=10)
    [kept] = await first.for_workers(None, 10)
    status, doc = couch_request(couchdb_url, "GET", f"/{couch_prefix}refusals/r:{kept.id}")
    assert status == 200
    assert "sealed r1" not in str(doc)  # the sealed body is an attachment, not a field
    assert set(doc["_attachments"]) == {"body"}


async def test_many_workers_are_read_along_the_time_view(
    two: tuple[RefusalStore, RefusalStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past FEW_WORKERS workers with refusals, one walk of by_time filtered by worker."""
    monkeypatch.setattr(couch_refusals, "FEW_WORKERS", 1)
    first, _ = two
    await first.record([refused(f"r{i}", i) for i in range(5)], per_worker=10)
    await first.record([refused("b1", 2.5, worker="bob")], per_worker=10)
    await first.record([refused("c1", 3.5, worker="carol")], per_worker=10)
    page = await first.for_workers(["alice", "bob"], 2)
    assert [r.doc_id for r in page] == ["r4", "r3"]
    cursor = str(Cursor(page[-1].last_at, page[-1].id))
    rest = await first.for_workers(["alice", "bob"], 10, before=cursor)
    assert [r.doc_id for r in rest] == ["b1", "r2", "r1", "r0"]
