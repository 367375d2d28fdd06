"""On CouchDB, what a worker's sync asks of CouchDB follows their set, not the database.

Issue 10, point 6.  The same worker, with the same 20 documents, syncs against a
small database and against one with twenty times more documents in a hundred
more places.  Every request fieldsync sends to CouchDB is recorded at the client
boundary: for a first pull, an incremental pull and a no-op sync, the requests
(endpoint, database, how many keys) must be the same in both, and none of them
may read a whole database (``_changes`` of it, a range or view without keys).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from shared_org import PLACES, seed
from sync_fixtures import Api, until_served

from sync.app import create_app
from sync.config import Config
from sync.replication.routes import REPLICATION
from sync.store.couchdb import running
from sync.store.couchdb import store as couchdb_store
from sync.store.couchdb.store import CouchStore

Client = TestClient[Any, Any]
EXTRA_PLACES = [(f"area-x{n}", "district-b") for n in range(100)]
Request = tuple[str, str, int]


class Recorder:
    def __init__(self) -> None:
        self.requests: list[Request] = []

    def __call__(self, method: str, where: str, params: Any, body: Any) -> None:
        asked = body if isinstance(body, dict) else {}  # keys, or the ids of a _bulk_get
        keys = len(asked.get("keys") or (asked.get("docs", []) if "_bulk_get" in where else []))
        params = dict(params or {})
        if params.get("feed") == "longpoll" or "_view/unsettled" in where:
            return  # the instance's watcher and settler (sync.store.couchdb.running): not this sync
        # The database name holds the test's prefix; the kind of database is what matters.
        db, _, rest = where.lstrip("/").partition("/")
        kind = db.split("%24", 1)[1] if "%24" in db else "meta"
        self.requests.append((method, f"{kind}/{rest.split('/')[0] or '-'}", keys))
        whole = rest.startswith("_changes") or (
            rest.startswith(("_all_docs", "_design")) and not keys and "startkey" not in params
        )
        assert not whole, f"a worker's sync read a whole database: {method} {where} {params}"


async def _pull(api: Api, since: str) -> tuple[list[str], str]:
    status, page = await api.call("GET", "/health/_changes", "alice", style="all_docs", since=since)
    assert status == 200, page
    return [row["id"] for row in page["results"]], str(page["last_seq"])


async def _sync_costs(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config, other_docs: int
) -> dict[str, list[Request]]:
    api = await until_served(Api(await aiohttp_client(create_app(config))))
    places = [p for p, _ in EXTRA_PLACES] + ["area-b1", "area-a2"]
    others = [{"_id": f"o{n}", "place": places[n % len(places)]} for n in range(other_docs)]
    for start in range(0, len(others), 200):
        await api.bulk(others[start : start + 200])
    await api.bulk([{"_id": f"a{n:02d}", "place": "area-a1"} for n in range(20)], user="alice")
    store = api.client.app[REPLICATION].parts.store
    assert isinstance(store, CouchStore)
    recorder = Recorder()
    store.client.observe = recorder
    costs = {}
    ids, since = await _pull(api, "0")
    assert sorted(ids) == [f"a{n:02d}" for n in range(20)]
    status, _ = await api.call(
        "POST", "/health/_bulk_get", "alice", {"docs": [{"id": i} for i in ids]}
    )
    assert status == 200
    costs["first pull"], recorder.requests = recorder.requests, []
    store.client.observe = None
    await api.bulk([{"_id": f"b{n}", "place": "area-a1"} for n in range(5)], user="alice")
    await api.bulk([{"_id": f"late{n}", "place": places[n]} for n in range(50)])
    store.client.observe = recorder
    ids, since = await _pull(api, since)
    assert sorted(ids) == [f"b{n}" for n in range(5)]
    costs["incremental pull"], recorder.requests = recorder.requests, []
    assert (await _pull(api, since))[0] == []
    status, _ = await api.call("GET", "/health", "alice")
    assert status == 200
    costs["no-op sync"] = recorder.requests
    return costs


@pytest.fixture
def seeded(tmp_path: Path) -> Callable[[str], Path]:
    def make(name: str) -> Path:
        seed(tmp_path / name, PLACES + EXTRA_PLACES)
        return tmp_path / name

    return make


async def test_a_workers_sync_costs_couchdb_the_same_in_a_database_twenty_times_bigger(
    aiohttp_client: Callable[..., Awaitable[Client]],
    seeded: Callable[[str], Path],
    couchdb_url: str,
    couch_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What an instance keeps for a few seconds (db info, tails, settings) must not run out
    # in one run and not the other on a slow machine: the requests would differ by chance.
    for kept in ("_INFO_SECONDS", "_SETTINGS_TTL", "_RECENT_SECONDS"):
        monkeypatch.setattr(couchdb_store, kept, 3600.0)
    # Nor may the settler's first sweep (its lease, 15 s after the start) fall in one run's
    # sync and not the other's: it is the instance's background work, not the sync's.
    monkeypatch.setattr(running, "_SETTLE_EVERY", 3600.0)

    def config(name: str) -> Config:
        return Config(
            data_dir=seeded(name),
            require_enrolment=False,
            couchdb_url=couchdb_url,
            couchdb_prefix=f"{couch_prefix}{name}_",
        )

    small = await _sync_costs(aiohttp_client, config("small"), 30)
    large = await _sync_costs(aiohttp_client, config("large"), 600)
    assert small["first pull"], "nothing was recorded"
    assert large == small
