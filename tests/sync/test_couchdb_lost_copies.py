"""On a CouchDB cluster, a write that only one copy took can be lost with that copy;
the place's readers must not stop behind it for good (ADR 0001, *Liveness after
losing a copy*).

Two things can then be missing, and both look like a change not visible yet:

- a log position (an entry answered 202, whose writer said its ids again further
  on): quorum reads never show it, while the entries after it are there;
- the version of a document that an entry names (a meta update answered 202):
  quorum reads show the meta one version behind for good.

A reader waits at either while it could be a copy catching up, and passes over it
once the entries around it are older than ``FIELDSYNC_COUCHDB_LOST_AFTER_SECONDS``.
On one node nothing is ever lost this way, so the tests make the loss themselves:
they delete the entry, or add one naming a version no meta holds, then make the
entries old by setting the time their writer recorded.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from couchdb_server import couch_request
from couchdb_server import db_path as couch_path
from prometheus_client.parser import text_string_to_metric_families
from shared_org import PLACES, seed
from sync_fixtures import Api, as_user, until_served

from sync.app import create_app
from sync.config import Config, Endpoint
from sync.keys import load_master_key
from sync.replication.routes import REPLICATION
from sync.store.couchdb import layout
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.log import LOST_AFTER_SECONDS, PlaceLog
from sync.store.couchdb.store import CouchStore

Client = TestClient[Any, Any]
PLACE = "area-a1"  # alice's
LONG_AGO = time.time() - 2 * LOST_AFTER_SECONDS


@pytest.fixture
def config(tmp_path: Path, couchdb_url: str, couch_prefix: str) -> Config:
    seed(tmp_path, PLACES)
    load_master_key(tmp_path / "master.key", create=True)
    return Config(
        data_dir=tmp_path,
        require_enrolment=False,
        couchdb_url=couchdb_url,
        couchdb_prefix=couch_prefix,
    )


@pytest.fixture
async def api(aiohttp_client: Callable[..., Awaitable[Client]], config: Config) -> Api:
    return await until_served(Api(await aiohttp_client(create_app(config))))


def _log_db(api: Api) -> str:
    store = api.client.app[REPLICATION].parts.store
    assert isinstance(store, CouchStore)
    return store._log("health")


def _entry_path(log_db: str, position: int) -> str:
    return couch_path(log_db) + "/" + couch_path(layout.entry_id(PLACE, position))[1:]


def _put_entry(url: str, log_db: str, position: int, ids: list[list[Any]], at: float) -> None:
    status, answer = couch_request(
        url, "PUT", _entry_path(log_db, position), {"ids": ids, "at": at}
    )
    assert status in (201, 202), answer


def _lose(url: str, log_db: str, position: int) -> None:
    """The entry at ``position`` goes, as with the only copy that held it."""
    status, entry = couch_request(url, "GET", _entry_path(log_db, position))
    assert status == 200, entry
    where = _entry_path(log_db, position) + "?rev=" + entry["_rev"]
    status, answer = couch_request(url, "DELETE", where)
    assert status in (200, 202), answer


def _make_old(url: str, log_db: str, *positions: int) -> None:
    """Entries written long ago: their writer's time set back past the bound."""
    for position in positions:
        status, entry = couch_request(url, "GET", _entry_path(log_db, position))
        assert status == 200, entry
        status, answer = couch_request(
            url, "PUT", _entry_path(log_db, position), {**entry, "at": LONG_AGO}
        )
        assert status in (201, 202), answer


async def _pull(api: Api, since: str = "0") -> tuple[list[str], str]:
    """The ids alice's phone is sent after ``since``, and where it would go on from."""
    status, page = await api.call("GET", "/health/_changes", "alice", since=since)
    assert status == 200, page
    return [row["id"] for row in page["results"]], str(page["last_seq"])


async def test_a_lost_position_stops_readers_only_until_the_entries_after_it_are_old(
    api: Api, couchdb_url: str
) -> None:
    for name in ("h1", "h2", "h3"):  # one entry each: positions 1, 2, 3
        await api.bulk([{"_id": name, "place": PLACE}], user="alice")
    log_db = _log_db(api)
    # Entry 2 was taken by one copy alone, which was lost; its writer, answered 202,
    # said h2 again further on (PlaceLog._append).
    _lose(couchdb_url, log_db, 2)
    _put_entry(couchdb_url, log_db, 4, [["h2", 1]], time.time())
    ids, since = await _pull(api)
    assert ids == ["h1"]  # entry 3 is new: 2 may be a copy catching up, so wait there
    _make_old(couchdb_url, log_db, 3, 4)
    assert (await _pull(api, since))[0] == ["h3", "h2"]
    assert (await _pull(api))[0] == ["h1", "h3", "h2"]  # a phone's first pull too
    assert (await _passed(api))["position"] >= 2  # each read that passed it


async def test_a_version_lost_with_its_copy_stops_readers_only_until_its_entry_is_old(
    api: Api, couchdb_url: str
) -> None:
    await api.bulk([{"_id": "s1", "place": PLACE}], user="alice")  # entry 1: s1 at version 1
    log_db = _log_db(api)
    # Entry 2 names s1 at version 2: that meta update was taken by one copy, then lost.
    _put_entry(couchdb_url, log_db, 2, [["s1", 2]], time.time())
    await api.bulk([{"_id": "s2", "place": PLACE}], user="alice")  # entry 3 (2 is taken)
    ids, since = await _pull(api)
    assert ids == ["s1"]  # the meta may be catching up: wait at entry 2
    assert (await _pull(api, since))[0] == []
    assert await _passed(api) == {"position": 0, "version": 0}
    _make_old(couchdb_url, log_db, 2)
    assert (await _pull(api, since))[0] == ["s2"]
    assert (await _pull(api))[0] == ["s1", "s2"]
    status, doc = await api.call("GET", "/health/s1", "alice")
    assert (status, doc["_rev"].startswith("1-")) == (200, True)  # s1 itself untouched
    assert await _passed(api) == {"position": 0, "version": 2}  # once by each pull


async def _passed(api: Api) -> dict[str, float]:
    """``fieldsync_couchdb_lost_passed`` by kind, as an admin scrapes it."""
    response = await api.client.get("/metrics", headers=as_user("admin"))
    assert response.status == 200, await response.text()
    return {
        s.labels["kind"]: s.value
        for family in text_string_to_metric_families(await response.text())
        for s in family.samples
        if s.name == "fieldsync_couchdb_lost_passed"
    }


@pytest.fixture
async def log_db(couchdb_url: str, couch_prefix: str) -> AsyncIterator[tuple[CouchClient, str]]:
    client = CouchClient(Endpoint.parse(couchdb_url))
    name = couch_prefix + "lost$log"
    await client.json("PUT", path(name))
    yield client, name
    await client.json("DELETE", path(name))
    await client.close()


async def test_a_reader_that_knows_the_place_goes_on_looks_past_a_missing_first_position(
    log_db: tuple[CouchClient, str], couchdb_url: str
) -> None:
    """A reader with a window of one key (a supervisor's places) sees only the missing
    position; knowing the place's tail, it reads the next ones to see how old they are."""
    client, name = log_db
    for position in (2, 3):
        _put_entry(couchdb_url, name, position, [[f"d{position}", 1]], time.time())
    log = PlaceLog(client)
    assert await log.read(name, {PLACE: 0}, [PLACE], 2) == {PLACE: []}  # tail not known
    assert await log.tails(name, [PLACE]) == {PLACE: 3}
    assert await log.read(name, {PLACE: 0}, [PLACE], 2) == {PLACE: []}  # 2 and 3 are new
    _make_old(couchdb_url, name, 2)
    run = (await log.read(name, {PLACE: 0}, [PLACE], 2))[PLACE]
    assert [(e.position, e.ids) for e in run] == [(1, ()), (2, (("d2", 1),)), (3, (("d3", 1),))]
