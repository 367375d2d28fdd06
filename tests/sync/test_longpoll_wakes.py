"""A write wakes the long polls of the places it changed, and no others.

Each woken long poll reads its caller's feed again (on CouchDB: keyed reads of its
places' logs).  Waking every open long poll for every write anywhere made an
instance with thousands of live phones read all their scopes for each write
(ADR 0001, *Long polls*).  Here workers of one place wait while a document is
written in another: their feed must not be read again, on either backend, for a
write through this instance or (CouchDB) through another one, seen by the watcher.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sync_fixtures import Api, as_user, seed, until_served

from sync.app import create_app
from sync.config import Config
from sync.replication.changes import ChangesFeed, ChangesPage
from sync.replication.context import Caller
from sync.replication.notifier import Notifier
from sync.replication.routes import REPLICATION
from sync.store.base import RevisionWrite
from sync.store.couchdb.client import CouchClient, Endpoint
from sync.store.couchdb.store import CouchStore

Client = TestClient[Any, Any]
DB = "health"


# -- the notifier ---------------------------------------------------------------------
async def test_a_waiter_wakes_for_its_places_only() -> None:
    notifier = Notifier()
    with (
        notifier.watch(DB, ["area-a1", ""]) as alice,
        notifier.watch(DB, ["area-b1", ""]) as bob,
        notifier.watch(DB, None) as admin,
        notifier.watch("other", ["area-b1"]) as elsewhere,
    ):
        assert notifier.waiting(DB) == 3
        notifier.notify(DB, {"area-a1"})
        assert (alice.is_set(), bob.is_set(), admin.is_set(), elsewhere.is_set()) == (
            True,
            False,
            True,
            False,
        )
        notifier.notify(DB, {""})  # a shared document: everyone of the database
        assert bob.is_set() and not elsewhere.is_set()
    assert notifier.waiting(DB) == 0 and notifier.waiting("other") == 0  # nothing kept


async def test_a_change_of_unknown_places_and_wake_all_wake_everyone() -> None:
    notifier = Notifier()
    with notifier.watch(DB, ["area-a1"]) as alice, notifier.watch("other", ["x"]) as other:
        notifier.notify(DB)
        assert alice.is_set() and not other.is_set()
        notifier.wake_all()
        assert other.is_set()


async def test_after_close_every_watch_is_woken_at_once() -> None:
    notifier = Notifier()
    with notifier.watch(DB, ["area-a1"]) as waiting:
        notifier.close()
        assert waiting.is_set()
    with notifier.watch(DB, ["area-b1"]) as late:
        assert late.is_set()


# -- long polls over HTTP, on both backends -------------------------------------------
@pytest.fixture(params=["embedded", "couchdb"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    seed(tmp_path / "data")
    couch: dict[str, Any] = {}
    if request.param == "couchdb":
        couch = {
            "couchdb_url": request.getfixturevalue("couchdb_url"),
            "couchdb_prefix": request.getfixturevalue("couch_prefix"),
        }
    return Config(data_dir=tmp_path / "data", require_enrolment=False, **couch)


@pytest.fixture
async def api(aiohttp_client: Callable[..., Awaitable[Client]], config: Config) -> Api:
    return await until_served(Api(await aiohttp_client(create_app(config))))


def count_reads(api: Api, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each caller's feed is read from now on (the feed itself runs)."""
    reads: Counter[str] = Counter()
    page = ChangesFeed.page

    async def counted(self: ChangesFeed, db: str, caller: Caller, query: Any) -> ChangesPage:
        reads[caller.name] += 1
        return await page(self, db, caller, query)

    monkeypatch.setattr(ChangesFeed, "page", counted)
    return reads


async def long_poll(api: Api, user: str) -> list[str]:
    status, body = await api.call(
        "GET", f"/{DB}/_changes", user, feed="longpoll", since="now", timeout="20000"
    )
    assert status == 200, body
    return [row["id"] for row in body["results"]]


async def waiting(api: Api, reads: Counter[str], count: int) -> None:
    """Until ``count`` long polls have read their feed and wait."""
    async with asyncio.timeout(10):
        while reads.total() < count or await live(api) != count:
            await asyncio.sleep(0.01)


async def live(api: Api) -> float:
    """The long polls waiting now, as the metrics say (``fieldsync_longpolls_waiting``)."""
    response = await api.client.get("/metrics", headers=as_user("admin"))
    assert response.status == 200
    for line in (await response.text()).splitlines():
        if line.startswith("fieldsync_longpolls_waiting "):
            return float(line.split()[1])
    raise AssertionError("fieldsync_longpolls_waiting is not among the metrics")


async def settled(api: Api) -> None:
    """Let what a notification started run: a whole request goes through meanwhile."""
    for _ in range(3):
        status, _ = await api.call("GET", f"/{DB}", "admin")
        assert status == 200


async def test_a_write_in_one_place_reads_no_other_places_long_poll(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = count_reads(api, monkeypatch)
    bobs = [asyncio.create_task(long_poll(api, "bob")) for _ in range(3)]
    alices = asyncio.create_task(long_poll(api, "alice"))
    await waiting(api, reads, 4)
    assert reads == {"bob": 3, "alice": 1}
    await api.bulk([{"_id": "visit-1", "place": "area-a1"}], user="alice")
    assert await asyncio.wait_for(alices, 10) == ["visit-1"]
    await settled(api)
    assert reads["bob"] == 3 and not any(poll.done() for poll in bobs)
    assert await live(api) == 3
    await api.bulk([{"_id": "visit-2", "place": "area-b1"}], user="bob")
    assert await asyncio.wait_for(asyncio.gather(*bobs), 10) == [["visit-2"]] * 3


# -- CouchDB: a write through another instance, seen by this one's watcher -------------
@pytest.fixture
async def elsewhere(couchdb_url: str, couch_prefix: str) -> AsyncIterator[CouchStore]:
    other = CouchStore(CouchClient(Endpoint.parse(couchdb_url)), couch_prefix)
    yield other
    await other.close()


@pytest.mark.parametrize("config", ["couchdb"], indirect=True)
async def test_a_write_through_another_instance_costs_other_places_no_couchdb_read(
    api: Api, elsewhere: CouchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = api.client.app[REPLICATION].parts.store
    assert isinstance(store, CouchStore)
    asked: list[str] = []  # the log entries this instance reads

    def observe(method: str, where: str, params: Any, body: Any) -> None:
        if "%24log/_bulk_get" in where and isinstance(body, dict):
            asked.extend(str(doc["id"]) for doc in body.get("docs", []))

    reads = count_reads(api, monkeypatch)
    bobs = [asyncio.create_task(long_poll(api, "bob")) for _ in range(3)]
    alices = asyncio.create_task(long_poll(api, "alice"))
    await waiting(api, reads, 4)
    store.client.observe = observe
    sealed = b"not read: _changes sends no bodies"
    written = RevisionWrite("visit-3", ("1-a",), False, "area-a1", "k", sealed, False)
    assert [r.error for r in await elsewhere.write(DB, [written])] == [None]
    assert await asyncio.wait_for(alices, 10) == ["visit-3"]  # only the watcher could wake it
    await settled(api)
    assert reads["bob"] == 3 and not any(poll.done() for poll in bobs)
    assert asked and not [entry for entry in asked if entry.startswith("area-b1!")]
    for poll in bobs:
        poll.cancel()
    await asyncio.gather(*bobs, return_exceptions=True)
