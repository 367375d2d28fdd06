"""On CouchDB, a pull reads each document from CouchDB once, not three times.

Issue 10, point 8.  PouchDB's pull is ``_changes`` then ``_bulk_get`` of the
revisions the page named.  The page reads the documents' metas, which hold their
winners' sealed bodies inline (``metas.INLINE_BODY_BYTES``); other bodies (larger
ones, other leaves) are fetched ahead while the page travels (``bodies.BodyCache``),
and the ``_bulk_get`` reuses the metas the page just read (``bodies.RecentMetas``).
These tests check the caches themselves, then the requests a real sync sends to
CouchDB, and that reusing a meta never hides a write: one made through this
instance is seen at once, and a revision written through another instance is
read afresh.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from shared_org import PLACES, seed
from sync_fixtures import Api, until_served

from sync.app import create_app
from sync.config import Config
from sync.keys import load_master_key
from sync.replication.revtree import RevNode
from sync.replication.routes import REPLICATION
from sync.store.base import DocMeta, StoredRevision
from sync.store.couchdb import bases, layout, metas
from sync.store.couchdb.bodies import BodyCache, RecentMetas
from sync.store.couchdb.store import CouchStore, LogWalk

Client = TestClient[Any, Any]
Pair = tuple[str, str]


def _stored(doc_id: str, rev: str, size: int = 10) -> StoredRevision:
    return StoredRevision(doc_id, rev, "area-a1", False, "k1", b"x" * size)


class Fetcher:
    """A stand-in for CouchDB's keyed read: records what is asked, answers what exists."""

    def __init__(self, existing: Sequence[Pair], fail: bool = False) -> None:
        self.existing = set(existing)
        self.asked: list[list[Pair]] = []
        self.fail = fail
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, wanted: Sequence[Pair]) -> Mapping[Pair, StoredRevision]:
        self.asked.append(list(wanted))
        await self.gate.wait()
        if self.fail:
            raise ConnectionError("CouchDB went away")
        return {p: _stored(*p) for p in wanted if p in self.existing}


PAIRS = [(f"d{n}", "1-a") for n in range(5)]


async def test_bodies_fetched_ahead_are_not_fetched_again() -> None:
    cache, fetch = BodyCache(1_000_000), Fetcher(PAIRS)
    cache.ahead("db1", PAIRS, fetch)
    found = await cache.get("db1", PAIRS, fetch)
    assert sorted(found) == PAIRS
    assert fetch.asked == [PAIRS]  # the read waited for the fetch under way
    assert (cache.hits, cache.misses) == (5, 0)


async def test_a_read_waits_for_the_fetch_under_way_then_fetches_only_the_rest() -> None:
    cache, fetch = BodyCache(1_000_000), Fetcher([*PAIRS, ("other", "1-b")])
    fetch.gate.clear()
    cache.ahead("db1", PAIRS[:3], fetch)
    reading = asyncio.create_task(cache.get("db1", [*PAIRS, ("other", "1-b")], fetch))
    await asyncio.sleep(0.01)
    assert not reading.done()  # waiting for the fetch ahead, not asking a second time
    fetch.gate.set()
    found = await reading
    assert len(found) == 6
    assert fetch.asked == [PAIRS[:3], [*PAIRS[3:], ("other", "1-b")]]


async def test_a_failed_fetch_ahead_leaves_the_read_to_fetch_for_itself() -> None:
    cache, failing = BodyCache(1_000_000), Fetcher(PAIRS, fail=True)
    cache.ahead("db1", PAIRS, failing)
    found = await cache.get("db1", PAIRS, Fetcher(PAIRS))
    assert sorted(found) == PAIRS


async def test_bodies_are_kept_per_database_uuid_and_within_the_byte_bound() -> None:
    cache = BodyCache(400)  # room for four of Fetcher's bodies (10 bytes and overhead each)
    fetch = Fetcher(PAIRS)
    await cache.get("db1", PAIRS[:1], fetch)
    assert await cache.get("db2", PAIRS[:1], fetch)  # a database created anew: read again
    assert len(fetch.asked) == 2
    await cache.get("db1", PAIRS, fetch)  # four more bodies push the oldest out
    assert fetch.asked[-1] == PAIRS[1:]
    assert 0 < cache._bytes <= cache.max_bytes
    assert ("db2", *PAIRS[0]) not in cache._kept
    assert ("db1", *PAIRS[4]) in cache._kept
    cache.forget("db1", PAIRS)
    assert cache._bytes == 0 and not cache._kept


async def test_a_missing_revision_is_not_kept() -> None:
    cache, fetch = BodyCache(1_000_000), Fetcher([])
    assert await cache.get("db1", PAIRS, fetch) == {}
    assert await cache.get("db1", PAIRS, fetch) == {}
    assert len(fetch.asked) == 2


def _meta(doc_id: str) -> DocMeta:
    return DocMeta(doc_id, "area-a1", 1, "1-a", False, {"1-a": RevNode(None, False)})


def test_recent_metas_expire_and_writes_make_them_stale() -> None:
    recent = RecentMetas(0.05, 3)
    recent.keep("db1", {i: _meta(i) for i in ("a", "b")})
    assert sorted(recent.get("db1", ["a", "b", "c"])) == ["a", "b"]
    assert recent.get("db2", ["a"]) == {}
    assert recent.stale("db1", ["a", "b"]) == {}
    recent.forget("db1", ["a"])
    assert sorted(recent.get("db1", ["a", "b"])) == ["b"]
    assert sorted(recent.stale("db1", ["a", "b"])) == ["a"]  # merged into a fresh read
    recent.keep("db1", {"a": _meta("a")})  # read again: answers for itself
    assert sorted(recent.get("db1", ["a", "b"])) == ["a", "b"]
    recent.keep("db1", {i: _meta(i) for i in ("c", "d", "e")})
    assert sorted(recent.get("db1", ["b", "c", "d", "e"])) == ["c", "d", "e"]  # at most 3
    time.sleep(0.06)
    assert recent.get("db1", ["c", "d", "e"]) == {}


def test_a_read_from_a_replica_behind_does_not_take_back_a_revision() -> None:
    """A page named 2-b; a later read (another phone's page) came from a replica that has
    only 2-a: the kept meta holds both, and the winner is chosen over both."""
    one = {"1-a": RevNode(None, False)}
    both = DocMeta("d", "area-a1", 3, "2-b", False, {**one, "2-b": RevNode("1-a", False)})
    behind = DocMeta("d", "area-a1", 2, "2-a", False, {**one, "2-a": RevNode("1-a", False)})
    recent = RecentMetas(5.0, 10)
    recent.keep("db1", {"d": both})
    recent.keep("db1", {"d": behind})
    kept = recent.get("db1", ["d"])["d"]
    assert sorted(kept.tree) == ["1-a", "2-a", "2-b"]
    assert (kept.winner, kept.seq) == ("2-b", 3)


# -- against CouchDB ----------------------------------------------------------------
DOCS = 40  # a page of more than _AHEAD_CHANGES changes: a catch-up


@pytest.fixture
def configs(tmp_path: Path, couchdb_url: str, couch_prefix: str) -> list[Config]:
    """Two instances on one CouchDB database, with the same users, places and master key
    (the data keys live in CouchDB).  No place gets a base (``bases.py``, its own tests):
    these count what a pull through the log asks CouchDB."""
    template = tmp_path / "template"
    seed(template, PLACES)
    load_master_key(template / "master.key", create=True)
    out = []
    for number in (1, 2):
        shutil.copytree(template, tmp_path / f"data{number}")
        out.append(
            Config(
                data_dir=tmp_path / f"data{number}",
                require_enrolment=False,
                couchdb_url=couchdb_url,
                couchdb_prefix=couch_prefix,
                couchdb_base_min_changes=0,
            )
        )
    return out


@pytest.fixture
def config(configs: list[Config]) -> Config:
    return configs[0]


async def _served(aiohttp_client: Callable[..., Awaitable[Client]], config: Config) -> Api:
    return await until_served(Api(await aiohttp_client(create_app(config))))


def _store(api: Api) -> CouchStore:
    store = api.client.app[REPLICATION].parts.store
    assert isinstance(store, CouchStore)
    return store


async def _page(api: Api) -> list[dict[str, Any]]:
    status, page = await api.call("GET", "/health/_changes", "alice", style="all_docs")
    assert status == 200, page
    return list(page["results"])


async def _bulk_get(api: Api, wanted: list[dict[str, str]]) -> list[dict[str, Any]]:
    status, answer = await api.call(
        "POST", "/health/_bulk_get", "alice", {"docs": wanted}, revs="true", latest="true"
    )
    assert status == 200, answer
    return [d for r in answer["results"] for d in r["docs"]]


async def _watched(api: Api) -> list[str]:
    asked: list[str] = []
    store = _store(api)

    def observe(method: str, where: str, params: Any, body: Any) -> None:
        keys = [d.get("id", "") for d in body.get("docs", [])] if isinstance(body, dict) else []
        if keys and all(k.startswith(bases.POINTER_PREFIX) for k in keys):
            return  # a first pull looks for the places' bases: no document read
        asked.append(f"{method} {where}")

    store.client.observe = observe
    return asked


async def _page_then_bulk_get(api: Api) -> tuple[list[str], list[str]]:
    """A catch-up page of DOCS documents, then the ``_bulk_get`` of its revisions: what each
    asked CouchDB (the page's fetch ahead included)."""
    docs = [{"_id": f"a{n:02d}", "place": "area-a1", "n": n} for n in range(DOCS)]
    await api.bulk(docs, user="alice")
    asked = await _watched(api)
    rows = await _page(api)
    assert len(rows) == DOCS
    await asyncio.gather(*_store(api).bodies._tasks)  # the fetch ahead, if any
    by_page = list(asked)
    asked.clear()
    got = await _bulk_get(api, [{"id": r["id"], "rev": r["changes"][0]["rev"]} for r in rows])
    assert sorted(d["ok"]["n"] for d in got) == list(range(DOCS))
    return by_page, asked


async def test_a_page_and_its_bulk_get_read_each_document_once(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> None:
    """The winners' bodies come inline with the page's metas: no read of the data database."""
    by_page, by_bulk_get = await _page_then_bulk_get(await _served(aiohttp_client, config))
    assert not [a for a in by_page if "%24data" in a], f"bodies read beside metas: {by_page}"
    assert by_bulk_get == []  # metas and bodies from the page: not one request


async def test_bodies_too_big_to_hold_inline_are_fetched_ahead(
    aiohttp_client: Callable[..., Awaitable[Client]],
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metas, "INLINE_BODY_BYTES", 0)  # every body is "too big"
    by_page, by_bulk_get = await _page_then_bulk_get(await _served(aiohttp_client, config))
    assert [a for a in by_page if "%24data/_bulk_get" in a], f"nothing fetched ahead: {by_page}"
    assert by_bulk_get == []  # metas from the page, bodies fetched ahead: not one request


async def test_the_page_after_a_full_page_is_read_ahead(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> None:
    """A catch-up asks for the page after a full one: it was read while the first travelled,
    so that request asks CouchDB nothing; the pages together hold every document once."""
    api = await _served(aiohttp_client, config)
    await api.bulk([{"_id": f"c{n:02d}", "place": "area-a1", "n": n} for n in range(70)])
    store = _store(api)
    status, first = await api.call("GET", "/health/_changes", "alice", style="all_docs", limit="40")
    assert status == 200 and len(first["results"]) == 40
    pending = [task for _, task in store._ahead._pages.values()]
    assert len(pending) == 1  # the next page, under way
    await asyncio.gather(*pending)
    asked = await _watched(api)
    status, second = await api.call(
        "GET", "/health/_changes", "alice", style="all_docs", limit="40", since=first["last_seq"]
    )
    assert status == 200
    assert not [a for a in asked if "%24log" in a or "_bulk_get" in a], asked
    ids = [r["id"] for r in first["results"] + second["results"]]
    assert sorted(ids) == [f"c{n:02d}" for n in range(70)]
    assert not store._ahead._pages  # the last page was not full: nothing more read


async def _settled(store: CouchStore) -> None:
    """Wait for the reads ahead under way (and any they start) to finish."""
    for _ in range(50):
        tasks = [task for _, task in store._ahead._pages.values()]
        await asyncio.gather(*tasks)
        if len(store._ahead._pages) == len(tasks) and all(t.done() for t in tasks):
            return


async def test_the_pages_after_a_full_one_are_read_together_and_no_further(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> None:
    """PouchDB asks for its next page as soon as it has one, and a page read ahead could
    start only once the one before it was walked: the next three pages are read at once
    (one log read, their metas in one request), then walked; no fourth."""
    api = await _served(aiohttp_client, config)
    await api.bulk([{"_id": f"c{n:03d}", "place": "area-a1", "n": n} for n in range(330)])
    store = _store(api)
    reads: list[tuple[str, int]] = []

    def observe(method: str, where: str, params: Any, body: Any) -> None:
        if where.endswith("%24log/_bulk_get"):
            reads.append(("log", len(body["docs"])))
        elif where.split("/")[1] == store._meta("health") and "_bulk_get" in where:
            reads.append(("meta", len(body["docs"])))

    store.client.observe = observe
    status, first = await api.call("GET", "/health/_changes", "alice", style="all_docs", limit="40")
    assert status == 200 and len(first["results"]) == 40
    await _settled(store)
    assert len(store._ahead._pages) == 3  # pages 2, 3 and 4, not 5
    # Page 1's own reads, then one log read and one meta read for pages 2-4.
    assert [kind for kind, _ in reads] == ["log", "meta", "log", "meta"], reads
    assert 120 <= sum(n for _, n in reads[3:]) <= 120 + 8, reads
    since, ids = first["last_seq"], [r["id"] for r in first["results"]]
    while True:
        status, page = await api.call(
            "GET", "/health/_changes", "alice", style="all_docs", limit="40", since=since
        )
        assert status == 200
        since, ids = page["last_seq"], ids + [r["id"] for r in page["results"]]
        if len(page["results"]) < 40:
            break
    assert sorted(ids) == [f"c{n:03d}" for n in range(330)]  # every document once
    # Pages 2-9 came from reads of three pages each: a log read for each lot (and one
    # look past the last entry), not one or two per page.
    assert [kind for kind, _ in reads].count("log") <= 1 + 3 + 1, reads


async def test_a_page_read_with_others_is_the_page_a_request_would_read(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> None:
    """Pages read together end where a request for each would: the same rows, the same
    ends, with documents moved away and entries of several sizes in between."""
    api = await _served(aiohttp_client, config)
    revs = {}
    for batch in range(6):  # entries of 7, 9, 11, ... ids; some documents move away
        rows = await api.bulk(
            [{"_id": f"m{batch}-{n:02d}", "place": "area-a1"} for n in range(7 + 2 * batch)]
        )
        revs.update({row["id"]: row["rev"] for row in rows})
    moved = [f"m{b}-{n:02d}" for b in range(0, 6, 2) for n in (0, 3)]
    await api.bulk([{"_id": i, "_rev": revs[i], "place": "area-b1"} for i in moved])
    store = _store(api)
    store._ahead.most = 0  # each page read on its own, for the comparison
    alone, since = [], "0"
    while True:
        status, page = await api.call("GET", "/health/_changes", "alice", limit="10", since=since)
        assert status == 200
        alone.append(([r["id"] for r in page["results"]], page["last_seq"]))
        since = page["last_seq"]
        if len(page["results"]) < 10:
            break
    settings = await store._settings_of("health")
    places = frozenset({"", "area-a1"})
    walk = LogWalk("health", settings.uuid, places, 10)
    pages = await store._read_pages(walk, {}, len(alone))
    assert [[r.change.id for r in p.rows if r.change] for p in pages] == [a for a, _ in alone]
    assert not {i for p in pages for r in p.rows if r.change for i in [r.change.id]} & set(moved)


async def test_a_write_drops_the_pages_read_ahead_of_it(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> None:
    """Read your writes: after a full last page the page after it (empty) was read ahead;
    a document written next must be in the next ``_changes``, not hidden by that page."""
    api = await _served(aiohttp_client, config)
    await api.bulk([{"_id": f"e{n:02d}", "place": "area-a1"} for n in range(40)])
    status, first = await api.call("GET", "/health/_changes", "alice", limit="40")
    assert status == 200 and len(first["results"]) == 40
    await asyncio.gather(*[task for _, task in _store(api)._ahead._pages.values()])
    await api.bulk([{"_id": "late", "place": "area-a1"}])
    status, second = await api.call(
        "GET", "/health/_changes", "alice", limit="40", since=first["last_seq"]
    )
    assert status == 200 and [r["id"] for r in second["results"]] == ["late"]


async def test_a_revision_the_page_named_survives_a_lagging_read_after_a_write(
    aiohttp_client: Callable[..., Awaitable[Client]],
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a cluster, a write through this instance can land on a fork a moment before the
    replicas agree: the fresh read after it may lack a revision the page named.  The page's
    meta is merged in, so ``_bulk_get`` still serves that revision (not "missing")."""
    api = await _served(aiohttp_client, config)
    first = (await api.bulk([{"_id": "f1", "place": "area-a1", "n": 1}]))[0]
    rows = await _page(api)
    assert [r["changes"][0]["rev"] for r in rows if r["id"] == "f1"] == [first["rev"]]
    branch = {"_id": "f1", "_rev": "1-ffff", "place": "area-a1", "n": 2}
    status, _ = await api.call(
        "POST", "/health/_bulk_docs", "alice", {"docs": [branch], "new_edits": False}
    )
    assert status == 201
    real_load = metas.load

    async def lagging(client: Any, meta_db: str, ids: Sequence[str]) -> dict[str, metas.Meta]:
        found = await real_load(client, meta_db, ids)
        for meta in found.values():  # the replica that has only the other fork
            meta.tree = {r: n for r, n in meta.tree.items() if r != first["rev"]}
        return found

    monkeypatch.setattr(metas, "load", lagging)
    got = await _bulk_get(api, [{"id": "f1", "rev": first["rev"]}])
    assert [d.get("ok", d)["_rev"] if "ok" in d else d for d in got] == [first["rev"]]
    assert got[0]["ok"]["n"] == 1


async def _meta_doc(store: CouchStore, doc_id: str) -> dict[str, Any]:
    found = await store.client.leaves_by_id(store._meta("health"), [layout.meta_id(doc_id)])
    return found[layout.meta_id(doc_id)][0]


async def test_the_inline_body_follows_the_winner_and_is_sealed(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> None:
    api = await _served(aiohttp_client, config)
    store = _store(api)
    first = (await api.bulk([{"_id": "p1", "place": "area-a1", "marker": "zebra-17"}]))[0]
    meta = await _meta_doc(store, "p1")
    assert meta["wb"]["rev"] == first["rev"] and "zebra-17" not in str(meta)
    edited = {"_id": "p1", "_rev": first["rev"], "place": "area-a1", "marker": "lion-42"}
    second = (await api.bulk([edited]))[0]
    assert (await _meta_doc(store, "p1"))["wb"]["rev"] == second["rev"]
    # A branch that wins by its revision number: its body is the one held.
    base = first["rev"].split("-")[1]
    branch = {
        "_id": "p1",
        "_rev": "3-ffff",
        "place": "area-a1",
        "marker": "tiger",
        "_revisions": {"start": 3, "ids": ["ffff", "eeee", base]},
    }
    status, _ = await api.call(
        "POST", "/health/_bulk_docs", "admin", {"docs": [branch], "new_edits": False}
    )
    assert status == 201
    assert (await _meta_doc(store, "p1"))["wb"]["rev"] == "3-ffff"
    status, doc = await api.call("GET", "/health/p1", "admin", conflicts="true")
    assert status == 200 and doc["marker"] == "tiger" and doc["_conflicts"] == [second["rev"]]
    # Deleting the winner: the other branch wins, its body not at hand: read from $data.
    status, _ = await api.call("DELETE", "/health/p1", "admin", rev="3-ffff")
    assert status == 200
    assert "wb" not in await _meta_doc(store, "p1")
    status, doc = await api.call("GET", "/health/p1", "admin")
    assert status == 200 and doc["_rev"] == second["rev"] and doc["marker"] == "lion-42"


async def test_a_write_through_this_instance_is_seen_by_the_next_bulk_get(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> None:
    api = await _served(aiohttp_client, config)
    docs = [{"_id": f"a{n:02d}", "place": "area-a1", "n": n} for n in range(DOCS)]
    written = await api.bulk(docs, user="alice")
    await _page(api)
    edited = {**docs[0], "_rev": written[0]["rev"], "n": 100}
    rev = (await api.bulk([edited], user="alice"))[0]["rev"]
    got = await _bulk_get(api, [{"id": "a00"}])  # no rev: the winner
    assert got[0]["ok"]["_rev"] == rev and got[0]["ok"]["n"] == 100


async def test_a_revision_written_through_another_instance_is_read_afresh(
    aiohttp_client: Callable[..., Awaitable[Client]], configs: list[Config]
) -> None:
    here = await _served(aiohttp_client, configs[0])
    there = await _served(aiohttp_client, configs[1])
    docs = [{"_id": f"a{n:02d}", "place": "area-a1", "n": n} for n in range(DOCS)]
    written = await here.bulk(docs, user="alice")
    await _page(here)  # this instance now holds the metas of the page
    edited = {**docs[0], "_rev": written[0]["rev"], "n": 100}
    rev = (await there.bulk([edited], user="alice"))[0]["rev"]
    got = await _bulk_get(here, [{"id": "a00", "rev": rev}])
    assert "ok" in got[0], got  # not "missing": the meta held was behind, so read again
    assert got[0]["ok"]["n"] == 100
    rows = await _page(here)
    assert [r["changes"][0]["rev"] for r in rows if r["id"] == "a00"] == [rev]


async def test_a_page_reads_the_metas_of_its_own_changes_not_of_every_entry_read(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> None:
    """One entry names the 300 documents of one write; a page of 50 reads about 50 metas."""
    api = await _served(aiohttp_client, config)
    docs = [{"_id": f"a{n:03d}", "place": "area-a1"} for n in range(300)]
    await api.bulk(docs, user="alice")
    store = _store(api)
    store._ahead.most = 0  # no page read ahead: the page's own reads are counted
    keys: list[int] = []

    def observe(method: str, where: str, params: Any, body: Any) -> None:
        if where.split("/")[1] == store._meta("health") and "_bulk_get" in where:
            keys.append(len(body["docs"]))

    store.client.observe = observe
    status, page = await api.call("GET", "/health/_changes", "alice", limit="50")
    assert status == 200 and len(page["results"]) == 50
    assert 50 <= sum(keys) <= 50 + 8, keys
    status, rest = await api.call("GET", "/health/_changes", "alice", since=page["last_seq"])
    assert status == 200
    assert {r["id"] for r in page["results"] + rest["results"]} == {d["_id"] for d in docs}


async def test_a_page_reads_the_log_once_when_the_instance_knows_the_places_tail(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> None:
    """PouchDB asks for the database's info (whose worker ``update_seq`` reads the places'
    tails) before it pulls; each page then reads its log entries in one request."""
    api = await _served(aiohttp_client, config)
    for batch in range(10):  # ten writes: ten entries of 30 ids in area-a1's log
        await api.bulk(
            [{"_id": f"a{batch}-{n:02d}", "place": "area-a1"} for n in range(30)], user="alice"
        )
    store = _store(api)
    store._ahead.most = 0  # no page read ahead: each page's own reads are counted
    store.log.forget(store._log("health"))  # as if another instance had written them
    status, _ = await api.call("GET", "/health", "alice")
    assert status == 200
    log_reads: list[int] = []

    def observe(method: str, where: str, params: Any, body: Any) -> None:
        if where.endswith("%24log/_bulk_get"):
            log_reads.append(len(body["docs"]))

    store.client.observe = observe
    since, seen = "0", set()
    for _ in range(6):
        log_reads.clear()
        status, page = await api.call("GET", "/health/_changes", "alice", limit="50", since=since)
        assert status == 200
        seen |= {r["id"] for r in page["results"]}
        since = page["last_seq"]
        assert len(log_reads) == 1, log_reads
    assert len(seen) == 300


# -- checkpoints: PouchDB reads its checkpoint before saving it, after every batch -----------
async def _checkpoint(api: Api, method: str, body: Any = None) -> tuple[int, Any]:
    return await api.call(method, "/health/_local/phone-1", "alice", body)


async def test_a_checkpoint_read_after_its_save_asks_couchdb_nothing(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> None:
    api = await _served(aiohttp_client, config)
    status, saved = await _checkpoint(api, "PUT", {"last_seq": "a"})
    assert status == 201, saved
    asked = await _watched(api)
    status, read = await _checkpoint(api, "GET")
    assert status == 200 and read["last_seq"] == "a" and read["_rev"] == saved["rev"]
    assert asked == []
    status, _ = await _checkpoint(api, "PUT", {"_rev": read["_rev"], "last_seq": "b"})
    assert status == 201 and [a for a in asked if a.startswith("PUT")], asked  # saved for real


async def test_a_checkpoint_saved_through_another_instance_is_refused_then_read_afresh(
    aiohttp_client: Callable[..., Awaitable[Client]], configs: list[Config]
) -> None:
    """The phone moved to the other instance and back: the old checkpoint it may be given
    is never saved over the newer one, and PouchDB's retry (read, save) goes through."""
    here = await _served(aiohttp_client, configs[0])
    there = await _served(aiohttp_client, configs[1])
    status, first = await _checkpoint(here, "PUT", {"last_seq": "a"})
    assert status == 201
    status, seen = await _checkpoint(there, "GET")
    assert status == 200 and seen["_rev"] == first["rev"]
    status, newer = await _checkpoint(there, "PUT", {"_rev": seen["_rev"], "last_seq": "b"})
    assert status == 201
    status, kept = await _checkpoint(here, "GET")  # this instance's, up to 10 s old
    assert status == 200 and kept["_rev"] in (first["rev"], newer["rev"])
    status, _ = await _checkpoint(here, "PUT", {"_rev": first["rev"], "last_seq": "c"})
    assert status == 409  # never over the newer one
    status, fresh = await _checkpoint(here, "GET")
    assert status == 200 and fresh["_rev"] == newer["rev"] and fresh["last_seq"] == "b"
    status, last = await _checkpoint(here, "PUT", {"_rev": fresh["_rev"], "last_seq": "c"})
    assert status == 201
    status, after = await _checkpoint(here, "GET")
    assert after["last_seq"] == "c" and after["_rev"] == last["rev"]


async def test_a_body_is_kept_no_longer_than_its_age_limit() -> None:
    """A data-key rotation deletes old key versions after a wait: a sealed copy kept here
    past it could name a version that is gone, so it is read again from CouchDB."""
    kept, fetch = BodyCache(1_000_000, max_age=60.0), Fetcher(PAIRS)
    await kept.get("db1", PAIRS, fetch)
    await kept.get("db1", PAIRS, fetch)
    assert fetch.asked == [PAIRS]
    aged, fetch = BodyCache(1_000_000, max_age=0.0), Fetcher(PAIRS)
    await aged.get("db1", PAIRS, fetch)
    await aged.get("db1", PAIRS, fetch)
    assert fetch.asked == [PAIRS, PAIRS]
