"""The sync-activity port: one contract over every adapter, and the recorder's sessions.

The CouchDB adapter runs on a CouchDB-API server (pouchdb-server, or a real CouchDB
with FIELDSYNC_TEST_COUCHDB_URL); two adapters with their own clients on one
database stand for two instances writing at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest

from sync.activity.couchdb import CouchActivity
from sync.activity.embedded import EmbeddedActivity
from sync.activity.memory import MemoryActivity
from sync.activity.ports import ActivityStore, DayActivity
from sync.activity.recorder import ActivityRecorder
from sync.config import Endpoint
from sync.errors import StoreUnavailable
from sync.store.couchdb.client import CouchClient
from sync.store.sqlite import SqliteStore

T = TypeVar("T")


@pytest.fixture(params=["embedded", "memory", "couchdb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ActivityStore]:
    if request.param == "memory":
        yield MemoryActivity()
        return
    if request.param == "couchdb":
        client = CouchClient(Endpoint.parse(request.getfixturevalue("couchdb_url")))
        yield CouchActivity.for_prefix(client, request.getfixturevalue("couch_prefix"))
        await client.close()
        return
    sqlite = SqliteStore(tmp_path / "fieldsync.sqlite3")
    try:
        yield await EmbeddedActivity.opened(sqlite)
    finally:
        await sqlite.close()


async def test_adding_sums_per_worker_device_and_day(store: ActivityStore) -> None:
    await store.add([DayActivity("alice", "A1", "2026-05-01", 1, 3)])
    await store.add(
        [
            DayActivity("alice", "A1", "2026-05-01", 2, 1),
            DayActivity("alice", "", "2026-05-02", 1, 0),
            DayActivity("bob", "B1", "2026-04-30", 1, 9),
        ]
    )
    assert await store.days("2026-05-01", ["alice"]) == [
        DayActivity("alice", "A1", "2026-05-01", 3, 4),
        DayActivity("alice", "", "2026-05-02", 1, 0),
    ]
    assert [b.worker for b in await store.days("2026-01-01")] == ["alice", "alice", "bob"]
    assert await store.days("2026-05-01", ["bob"]) == []
    assert await store.totals("2026-05-01") == {"alice": (4, 4)}
    assert await store.totals("2026-04-01") == {"alice": (4, 4), "bob": (1, 9)}


async def test_a_session_is_one_sync_and_a_new_day_starts_another() -> None:
    store = MemoryActivity()
    moment, day = [0.0], ["2026-05-01"]
    recorder = ActivityRecorder(
        store, session_gap=300, clock=lambda: moment[0], today=lambda: day[0]
    )
    for step in range(10):  # one PouchDB sync: many requests seconds apart
        moment[0] = step * 2.0
        recorder.heard("alice", "A1")
    recorder.received("alice", "A1", 3)
    recorder.received("alice", "A1", 0)
    moment[0] = 1000.0  # after a silence: a new session
    recorder.heard("alice", "A1")
    recorder.heard("alice", "A2")  # another phone: its own session
    day[0], moment[0] = "2026-05-02", 1001.0  # midnight inside a session: counted on the new day
    recorder.heard("alice", "A1")
    assert recorder.pending == 3
    await recorder.flush()
    assert recorder.pending == 0
    assert await store.days("2026-01-01") == [
        DayActivity("alice", "A1", "2026-05-01", 2, 3),
        DayActivity("alice", "A2", "2026-05-01", 1, 0),
        DayActivity("alice", "A1", "2026-05-02", 1, 0),
    ]


class _Broken(MemoryActivity):
    fail = True

    async def add(self, buckets: object) -> None:  # type: ignore[override]
        if self.fail:
            raise OSError("disk full")
        await super().add(buckets)  # type: ignore[arg-type]


async def test_a_failed_flush_keeps_the_counts_for_the_next() -> None:
    store = _Broken()
    recorder = ActivityRecorder(store, today=lambda: "2026-05-01")
    recorder.heard("alice", None)
    recorder.received("alice", None, 2)
    with pytest.raises(OSError):
        await recorder.flush()
    recorder.received("alice", None, 1)
    store.fail = False
    await recorder.flush()
    assert await store.days("2026-01-01") == [DayActivity("alice", "", "2026-05-01", 1, 3)]


# -- two instances on one CouchDB ---------------------------------------------------------


@pytest.fixture
async def two(couchdb_url: str, couch_prefix: str) -> AsyncIterator[list[CouchActivity]]:
    clients = [CouchClient(Endpoint.parse(couchdb_url)) for _ in range(2)]
    yield [CouchActivity.for_prefix(c, couch_prefix) for c in clients]
    for client in clients:
        await client.close()


async def test_two_instances_flushing_at_once_add_up(two: list[CouchActivity]) -> None:
    flushes = [
        store.add(
            [
                DayActivity("alice", "A1", "2026-05-01", 1, n),
                DayActivity("bob", "B1", "2026-05-01", 1, 1),
            ]
        )
        for n in range(1, 11)
        for store in two
    ]
    await asyncio.gather(*flushes)
    totals = {"alice": (20, 110), "bob": (20, 20)}
    days = [DayActivity("alice", "A1", "2026-05-01", 20, 110)]
    for store in two:
        assert await settled(partial(store.totals, "2026-05-01"), totals) == totals
        assert await settled(partial(store.days, "2026-05-01", ["alice"]), days) == days


async def settled(read: Callable[[], Awaitable[T]], expected: T, seconds: float = 10.0) -> T:
    """What ``read`` answers once it is ``expected``, or when ``seconds`` ran out.

    On a CouchDB cluster a view answers from one copy of each shard range, which may
    not have a write of a moment ago yet (ADR 0003); the copies catch up.  A count
    lost or added twice never reaches ``expected``: the last answer shows it."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (found := await read()) != expected and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    return found


class LostAnswers:
    """A client whose answers to writes are lost after CouchDB took them (while ``lose``)."""

    def __init__(self, client: CouchClient) -> None:
        self.client, self.lose = client, False

    async def json(self, method: str, where: str, **kwargs: object) -> object:
        answer = await self.client.json(method, where, **kwargs)  # type: ignore[arg-type]
        if self.lose and where.endswith("_bulk_docs"):
            raise StoreUnavailable("CouchDB timed out (TimeoutError); try again shortly.")
        return answer

    def __getattr__(self, name: str) -> object:
        return getattr(self.client, name)


async def test_a_write_retried_after_a_lost_answer_counts_once(
    couchdb_url: str, couch_prefix: str
) -> None:
    client = CouchClient(Endpoint.parse(couchdb_url))
    flaky = LostAnswers(client)
    store = CouchActivity.for_prefix(flaky, couch_prefix)  # type: ignore[arg-type]
    recorder = ActivityRecorder(store, today=lambda: "2026-05-01")
    try:
        recorder.heard("alice", "A1")
        recorder.received("alice", "A1", 2)
        await recorder.flush()
        recorder.received("alice", "A1", 3)
        flaky.lose = True
        with pytest.raises(StoreUnavailable):
            await recorder.flush()  # CouchDB took it; the recorder keeps the 3 anyway
        flaky.lose = False
        recorder.received("alice", "A1", 4)
        await recorder.flush()
        assert await store.totals("2026-05-01") == {"alice": (1, 9)}
        reader = CouchActivity.for_prefix(client, couch_prefix)
        assert await reader.days("2026-05-01") == [DayActivity("alice", "A1", "2026-05-01", 1, 9)]
    finally:
        await client.close()
