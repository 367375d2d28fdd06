"""On CouchDB, a place's first pull reads its base: the place's walk, kept (``bases.py``).

Issue 10, point 8.  A phone pulling a place from the start is sent what a phone
pulling it when the base was made was sent, then what changed since, from the
log.  These tests pull places through a base and through the log alone and
compare what the phone ends up with, and check what no base may do: hand a new
phone a document that moved out of the place, or anything after a shred or a
rotation moved the database's epoch on.

CouchDB is pouchdb-server by default, or ``FIELDSYNC_TEST_COUCHDB_URL``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from sync.config import Endpoint
from sync.store.base import LogPage, Position, RevisionWrite
from sync.store.couchdb import bases, layout
from sync.store.couchdb.ahead import after
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.store import CouchStore

DB = "health"
P1, P2 = "p1", "p2"
LIMIT = 10

Sent = dict[str, tuple[str, bool, tuple[tuple[str, bool], ...]]]


def rw(doc_id: str, *path: str, place: str = P1, deleted: bool = False) -> RevisionWrite:
    body = f"{doc_id}@{path[0]}".encode()
    return RevisionWrite(doc_id, path, deleted, place, f"key-{place}", body, False, None, ())


async def ok(store: CouchStore, *writes: RevisionWrite) -> None:
    results = await store.write(DB, writes)
    assert [r.error for r in results] == [None] * len(writes), results


def new_store(url: str, prefix: str, min_rows: int = 5) -> CouchStore:
    store = CouchStore(CouchClient(Endpoint.parse(url)), prefix)
    store.bases.min_rows = min_rows
    return store


@pytest.fixture
async def stores(couchdb_url: str, couch_prefix: str) -> AsyncIterator[list[CouchStore]]:
    """Two instances on one CouchDB; the database holds 30 documents of p1 (some edited,
    some deleted, one in conflict) and 3 of p2."""
    made = [new_store(couchdb_url, couch_prefix) for _ in range(2)]
    first = made[0]
    await first.create_db(DB)
    await ok(first, *(rw(f"d{n:02d}", "1-a") for n in range(30)))
    await ok(first, *(rw(f"d{n:02d}", "2-b", "1-a") for n in range(0, 30, 3)))
    await ok(first, *(rw(f"d{n:02d}", "3-c", "2-b", "1-a", deleted=True) for n in (3, 6)))
    await ok(first, rw("d09", "2-y", "1-a"))  # beside 2-b: a conflict
    await ok(first, *(rw(f"q{n}", "1-a", place=P2) for n in range(3)))
    try:
        yield made
    finally:
        for store in made:
            await store.close()


async def pull(
    store: CouchStore, places: frozenset[str], cursor: Mapping[str, Position] | None = None
) -> tuple[Sent, list[str]]:
    """Every page from ``cursor`` to the end: the last state sent of each document, and
    the ids in the order sent."""
    at: dict[str, Position] = dict(cursor or {})
    sent: Sent = {}
    order: list[str] = []
    for _ in range(1_000):
        page = await store.place_changes(DB, places, at, LIMIT)
        for row in page.rows:
            if row.change is not None:
                change = row.change
                sent[change.id] = (change.winner, change.deleted, change.leaves)
                order.append(change.id)
        at = after(at, page)
        if page.exhausted and not any(r.change for r in page.rows):
            return sent, order
    raise AssertionError("the pull did not end")


async def without_bases(store: CouchStore, places: frozenset[str]) -> Sent:
    async def none(*_: Any) -> dict[str, Any]:
        return {}

    store.bases.rows = none  # type: ignore[method-assign]
    return (await pull(store, places))[0]


async def read_through_logs(first: CouchStore, second: CouchStore, places: frozenset[str]) -> Sent:
    """``first``'s pull of ``places`` from the start: it reads no base, and ends where a pull
    through the logs alone (``second``'s) does."""
    sent, _ = await pull(first, places)
    assert first.bases.used == 0
    assert sent == await without_bases(second, places)
    return sent


async def made(store: CouchStore, place: str = P1) -> bool:
    """Make ``place``'s base now, as a first pull would in the background."""
    data = layout.data_db(store.prefix, DB)
    return await store.bases.build(data, place, store._base_pages(DB, place))


async def first_page_from_a_base(store: CouchStore) -> tuple[LogPage, dict[str, Position]]:
    """P1's base made, and a phone's first page of P1 read (from it); the cursor after it."""
    assert await made(store)
    page = await store.place_changes(DB, frozenset({P1}), {}, LIMIT)
    return page, after({}, page)


async def pointer(store: CouchStore, place: str = P1) -> dict[str, Any] | None:
    data = layout.data_db(store.prefix, DB)
    found = await store.client.leaves_by_id(data, [bases.pointer_id(place)])
    leaves = found.get(bases.pointer_id(place), [])
    return leaves[0] if leaves else None


async def test_a_first_pull_through_a_base_ends_where_one_through_the_log_does(
    stores: list[CouchStore],
) -> None:
    first, second = stores
    assert await made(first)
    # written after the base: these come from the log after it
    await ok(first, rw("d07", "3-e", "2-b", "1-a"), rw("d40", "1-a"), rw("d02", "2-f", "1-a"))
    through_base, order = await pull(first, frozenset({P1}))
    assert first.bases.used >= 30
    assert through_base == await without_bases(second, frozenset({P1}))
    assert through_base["d07"][0] == "3-e" and through_base["d02"][0] == "2-f"
    assert through_base["d03"][1] and "d40" in through_base
    assert not any(doc_id.startswith("q") for doc_id in order)


async def test_a_first_pull_makes_the_base_that_the_next_phone_reads(
    stores: list[CouchStore],
) -> None:
    first, _ = stores
    await pull(first, frozenset({P1}))
    assert first.bases.used == 0  # the first phone read the log
    for task in list(first.bases._tasks):
        await task
    found = await pointer(first)
    assert found is not None and found["token"]
    await pull(first, frozenset({P1}))
    assert first.bases.used >= 30


async def test_a_base_is_not_made_for_a_small_place(couchdb_url: str, couch_prefix: str) -> None:
    store = new_store(couchdb_url, couch_prefix, min_rows=31)
    try:
        await store.create_db(DB)
        await ok(store, *(rw(f"d{n:02d}", "1-a") for n in range(30)))
        assert not await made(store)
        assert await pointer(store) is None
    finally:
        await store.close()


async def test_a_document_that_moved_away_never_comes_from_the_base(
    stores: list[CouchStore],
) -> None:
    first, second = stores
    assert await made(first)
    await ok(second, rw("d05", "2-m", "1-a", place=P2))  # through the other instance
    found = await pointer(first)
    assert found is not None and found["token"] is None  # the move dropped it first
    assert "d05" not in await read_through_logs(first, second, frozenset({P1}))


async def test_a_move_while_a_phone_is_inside_the_base_stops_its_use(
    stores: list[CouchStore],
) -> None:
    first, second = stores
    _, at = await first_page_from_a_base(first)
    assert first.bases.used == LIMIT
    await ok(second, rw("d29", "2-m", "1-a", place=P2))
    used = first.bases.used
    sent, _ = await pull(first, frozenset({P1}), at)
    assert first.bases.used == used
    assert "d29" not in sent


@pytest.mark.parametrize("dropped_before", [False, True], ids=["no-pointer", "dropped-pointer"])
async def test_a_move_during_a_build_throws_the_build_away(
    stores: list[CouchStore], dropped_before: bool
) -> None:
    first, second = stores
    data = layout.data_db(first.prefix, DB)
    if dropped_before:  # the place has a pointer, naming no base
        await first.bases.drop(data, [P1])

    async def walk_then_move() -> AsyncIterator[list[Any]]:
        async for rows in first._base_pages(DB, P1):
            yield rows
        await ok(second, rw("d08", "2-m", "1-a", place=P2))

    assert not await first.bases.build(data, P1, walk_then_move())
    found = await pointer(first)
    assert found is not None and found["token"] is None
    chunks = {"startkey": '"c:"', "endkey": '"c:\ufff0"'}
    listed = await first.client.json("GET", path(data, "_all_docs"), params=chunks)
    assert listed["rows"] == []  # its chunks went with it
    sent, _ = await pull(first, frozenset({P1}))
    assert "d08" not in sent


async def test_a_base_made_before_the_epoch_moved_on_is_not_used(
    stores: list[CouchStore],
) -> None:
    first, second = stores
    assert await made(first)
    await bases.bump_epoch(first.client, layout.data_db(first.prefix, DB))
    await read_through_logs(first, second, frozenset({P1}))


async def test_a_phone_inside_a_base_goes_on_through_an_instance_that_never_read_it(
    stores: list[CouchStore],
) -> None:
    first, second = stores
    page, at = await first_page_from_a_base(first)
    first_part = {r.change.id for r in page.rows if r.change}
    rest, _ = await pull(second, frozenset({P1}), at)
    assert second.bases.used == 0  # its cursor is past the start: the log
    assert first_part | set(rest) == set(await without_bases(first, frozenset({P1})))


async def test_a_scope_that_grows_reads_the_new_places_base(stores: list[CouchStore]) -> None:
    first, _ = stores
    await ok(first, *(rw(f"q{n}", "1-a", place=P2) for n in range(3, 12)))
    assert await made(first, P2)
    caught_up = after({}, await first.place_changes(DB, frozenset({P1}), {}, 1_000))
    grown, _ = await pull(first, frozenset({P1, P2}), caught_up)
    assert set(grown) == {f"q{n}" for n in range(12)}
    assert first.bases.used >= 12


async def test_drop_all_takes_every_base_and_chunk_away(stores: list[CouchStore]) -> None:
    first, second = stores
    await ok(first, *(rw(f"q{n}", "1-a", place=P2) for n in range(3, 12)))
    assert await made(first, P1) and await made(first, P2)
    data = layout.data_db(first.prefix, DB)
    assert await bases.drop_all(first.client, data) >= 4  # two pointers, two chunks or more
    for prefix in (bases.POINTER_PREFIX, bases.CHUNK_PREFIX):
        rows = {"startkey": f'"{prefix}"', "endkey": f'"{prefix}\ufff0"'}
        assert (await first.client.json("GET", path(data, "_all_docs"), params=rows))["rows"] == []
    await read_through_logs(first, second, frozenset({P1, P2}))


def test_chunks_hold_at_most_a_page_of_rows_and_stay_under_cloudants_document_size() -> None:
    from sync.replication.revtree import RevNode
    from sync.store.base import StoredRevision
    from sync.store.couchdb.metas import Meta

    def meta(n: int, size: int) -> Meta:
        found = Meta(f"d{n}", "1-x", P1, 1, {"1-a": RevNode(None, False)}, {"1-a": P1})
        found.winner_body = StoredRevision(f"d{n}", "1-a", P1, False, "k", b"x" * size)
        return found

    rows = [((n + 1, 0), meta(n, 10)) for n in range(250)]
    made_chunks = bases._chunks("t", rows)
    assert [len(bases._parse_rows({"rows": text})) for _, _, text in made_chunks] == [100, 100, 50]
    assert [last for _, last, _ in made_chunks] == [(100, 0), (200, 0), (250, 0)]
    big = [((n + 1, 0), meta(n, 60_000)) for n in range(30)]
    texts = [text for _, _, text in bases._chunks("t", big)]
    assert all(len(text) <= bases.CHUNK_CHARACTERS for text in texts)
    assert sum(len(bases._parse_rows({"rows": t})) for t in texts) == 30


async def test_a_pull_of_several_places_with_bases_ends_where_one_through_the_logs_does(
    stores: list[CouchStore],
) -> None:
    first, second = stores
    await ok(first, *(rw(f"q{n}", "1-a", place=P2) for n in range(3, 25)))
    assert await made(first, P1) and await made(first, P2)
    await ok(first, rw("q30", "1-a", place=P2), rw("d41", "1-a"))
    both = frozenset({P1, P2})
    sent, _ = await pull(first, both)
    assert first.bases.used >= 50
    assert sent == await without_bases(second, both)


async def test_a_place_too_small_for_a_base_is_not_walked_again_at_each_first_pull(
    couchdb_url: str, couch_prefix: str
) -> None:
    store = new_store(couchdb_url, couch_prefix, min_rows=50)
    try:
        await store.create_db(DB)
        await ok(store, *(rw(f"d{n:02d}", "1-a") for n in range(30)))
        walks = []
        pages = store._base_pages

        def counted(db: str, place: str) -> AsyncIterator[list[Any]]:
            walks.append(place)
            return pages(db, place)

        store._base_pages = counted  # type: ignore[method-assign,assignment]
        for _ in range(3):
            await pull(store, frozenset({P1}))
            for task in list(store.bases._tasks):
                await task
        assert walks == [P1]  # walked once, found too small
        assert await pointer(store) is None
    finally:
        await store.close()
