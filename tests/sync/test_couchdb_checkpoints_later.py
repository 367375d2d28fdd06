"""A phone's checkpoint while it catches up is written to CouchDB a moment later
(sync.store.couchdb.checkpoints), and only then.

Issue 10, point 8 (a first pull saved its checkpoint in CouchDB after each of its
100 pages).  Two CouchStores on one CouchDB-API server stand for two instances.
What must hold: while the feed says more is coming, saves are answered from
memory, read back here at once, and written within the delay (the newest);
a save once the feed reached the end is in CouchDB when it returns, with
everything held before it; a save made elsewhere meanwhile wins and the phone's
next save here is refused; stopping writes what is held.  Then the same through
the HTTP API: a pull in pages leaves its final checkpoint in CouchDB for another
instance, after one CouchDB write per second of pulling, not one per page.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from shared_org import PLACES, seed
from sync_fixtures import Api, until_served

from sync.app import create_app
from sync.config import Config
from sync.errors import Conflict
from sync.replication.routes import REPLICATION
from sync.store.couchdb.client import CouchClient, Endpoint
from sync.store.couchdb.store import CouchStore

DB = "health"
OWNER = "alice"
CP = "pull-cp"
Client = TestClient[Any, Any]


@pytest.fixture
async def stores(couchdb_url: str, couch_prefix: str) -> AsyncIterator[tuple[CouchStore, ...]]:
    here, there = (CouchStore(CouchClient(Endpoint.parse(couchdb_url)), couch_prefix) for _ in "ab")
    await here.create_db(DB)
    here._later.delay = 0.3  # the test waits it out
    yield here, there
    for store in (here, there):
        await store.close()


def local_writes(store: CouchStore) -> list[str]:
    seen: list[str] = []

    def observe(method: str, where: str, params: Any, body: Any) -> None:
        if method == "PUT" and "%24data" in where:
            seen.append(where)

    store.client.observe = observe
    return seen


async def _saves(store: CouchStore, count: int, first_rev: str | None = None) -> str | None:
    rev = first_rev
    for n in range(count):
        rev = await store.put_local(DB, OWNER, CP, rev, f"seq-{n}".encode())
    return rev


async def test_saves_while_more_is_coming_are_written_once_within_the_delay(
    stores: tuple[CouchStore, CouchStore],
) -> None:
    here, there = stores
    rev = await _saves(here, 1)  # the first save of a checkpoint is written at once
    here.expect_more(DB, OWNER, True)
    writes = local_writes(here)
    rev = await _saves(here, 10, rev)
    assert writes == []  # ten saves answered, none written yet
    kept = await here.get_local(DB, OWNER, CP)
    assert kept is not None and (kept.rev, kept.body) == (rev, b"seq-9")
    elsewhere = await there.get_local(DB, OWNER, CP)
    assert elsewhere is not None and elsewhere.body == b"seq-0"  # CouchDB: the older one
    await asyncio.sleep(0.6)
    assert len(writes) == 1
    there._locals.clear()
    moved = await there.get_local(DB, OWNER, CP)
    assert moved is not None and (moved.rev, moved.body) == (rev, b"seq-9")


async def test_a_save_after_the_last_page_is_in_couchdb_when_it_returns(
    stores: tuple[CouchStore, CouchStore],
) -> None:
    here, there = stores
    rev = await _saves(here, 1)
    here.expect_more(DB, OWNER, True)
    rev = await _saves(here, 5, rev)
    here.expect_more(DB, OWNER, False)  # the feed reached the end
    rev = await here.put_local(DB, OWNER, CP, rev, b"final")
    found = await there.get_local(DB, OWNER, CP)
    assert found is not None and (found.rev, found.body) == (rev, b"final")
    await asyncio.sleep(0.5)  # nothing held is written over it later
    there._locals.clear()
    again = await there.get_local(DB, OWNER, CP)
    assert again is not None and again.body == b"final"


async def test_a_save_elsewhere_meanwhile_wins_and_the_next_save_here_is_refused(
    stores: tuple[CouchStore, CouchStore],
) -> None:
    here, there = stores
    rev = await _saves(here, 1)
    assert rev is not None
    seen = await there.get_local(DB, OWNER, CP)
    assert seen is not None
    here.expect_more(DB, OWNER, True)
    held = await _saves(here, 3, rev)
    await there.put_local(DB, OWNER, CP, seen.rev, b"theirs")  # the phone moved instance
    await asyncio.sleep(0.6)  # the held write meets CouchDB's 409 and is dropped
    there._locals.clear()
    found = await there.get_local(DB, OWNER, CP)
    assert found is not None and found.body == b"theirs"
    with pytest.raises(Conflict):
        await here.put_local(DB, OWNER, CP, held, b"mine")


async def test_stopping_writes_what_is_held(couchdb_url: str, couch_prefix: str) -> None:
    here, there = (CouchStore(CouchClient(Endpoint.parse(couchdb_url)), couch_prefix) for _ in "ab")
    await here.create_db(DB)
    rev = await _saves(here, 1)
    here.expect_more(DB, OWNER, True)
    rev = await _saves(here, 4, rev)
    await here.close()
    found = await there.get_local(DB, OWNER, CP)
    await there.close()
    assert found is not None and (found.rev, found.body) == (rev, b"seq-3")


async def test_a_hint_without_a_known_checkpoint_holds_nothing(
    stores: tuple[CouchStore, CouchStore],
) -> None:
    here, there = stores
    here.expect_more(DB, OWNER, True)
    rev = await here.put_local(DB, OWNER, CP, None, b"first")  # nothing known: written
    found = await there.get_local(DB, OWNER, CP)
    assert found is not None and (found.rev, found.body) == (rev, b"first")


async def test_a_pull_in_pages_leaves_its_last_checkpoint_for_the_next_instance(
    aiohttp_client: Callable[..., Awaitable[Client]],
    tmp_path: Path,
    couchdb_url: str,
    couch_prefix: str,
) -> None:
    seed(tmp_path / "data", PLACES)
    config = Config(
        data_dir=tmp_path / "data",
        couchdb_url=couchdb_url,
        couchdb_prefix=couch_prefix,
        require_enrolment=False,
    )
    api = await until_served(Api(await aiohttp_client(create_app(config))))
    await api.bulk([{"_id": f"a{n:02d}", "place": "area-a1"} for n in range(30)], user="alice")
    store = api.client.app[REPLICATION].parts.store
    assert isinstance(store, CouchStore)
    writes = local_writes(store)
    since, rev, pages = "0", None, 0
    while True:  # as PouchDB pulls: a page, then its checkpoint
        status, page = await api.call(
            "GET", "/health/_changes", "alice", style="all_docs", since=since, limit="5"
        )
        assert status == 200, page
        since, pages = str(page["last_seq"]), pages + 1
        body = {"last_seq": since, **({"_rev": rev} if rev else {})}
        status, saved = await api.call("PUT", "/health/_local/cp", "alice", body)
        assert status == 201, saved
        rev = saved["rev"]
        if not page["results"] or page["pending"] == 0:
            break
    assert pages >= 6
    assert len(writes) < pages - 2, writes  # held while more was coming, not one per page
    other = CouchStore(CouchClient(Endpoint.parse(couchdb_url)), couch_prefix)
    found = await other.get_local(DB, "alice", "_local/cp")
    await other.close()
    assert found is not None and found.rev == rev  # the next instance resumes from the end
