"""A waiting long poll's heartbeat reads again only where a write might not have woken it.

PouchDB's live sync holds a long poll with a heartbeat every 10 s.  Each heartbeat
used to read the caller's feed again and check the caller again: on CouchDB, keyed
reads of the places' logs, the account and the device, per live phone, every 10 s,
with nothing written anywhere (ADR 0001, *Long polls*).  Where every write to the
database is announced to the instance (on CouchDB, by the watcher of the deployment's
database), a heartbeat now sends its newline and nothing else; the embedded store,
which a management command can write without telling the server, reads at every
heartbeat as before; and a wake whose read found nothing (a copy of CouchDB behind)
reads once more at the next heartbeat.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from sync_fixtures import Api, as_user, seed, until_served

from sync.app import create_app
from sync.config import Config
from sync.errors import ServiceUnavailable
from sync.replication import handlers
from sync.replication.changes import ChangesFeed, ChangesPage
from sync.replication.context import Caller
from sync.replication.notifier import Notifier
from sync.replication.routes import REPLICATION
from sync.store.base import RevisionWrite
from sync.store.couchdb import running
from sync.store.couchdb.client import CouchClient, Endpoint
from sync.store.couchdb.store import CouchStore

Client = TestClient[Any, Any]
DB = "health"
HEARTBEAT_MS = 100


# -- the notifier ---------------------------------------------------------------------
async def test_a_database_is_announced_for_reads_begun_after_its_watcher_answered() -> None:
    notifier = Notifier()
    assert not notifier.announced(DB, 10.0)  # nothing reports its writes yet
    notifier.announcing(DB, 5.0)
    assert notifier.announced(DB, 5.0) and notifier.announced(DB, 10.0)
    assert not notifier.announced(DB, 4.9)  # a read before: a write then went unreported
    assert not notifier.announced("other", 10.0)
    notifier.announcing(DB, 7.0)  # answers after the first do not move it
    assert notifier.announced(DB, 6.0)


async def test_an_unannounced_database_wakes_its_waiters_once() -> None:
    notifier = Notifier()
    with notifier.watch(DB, ["area-a1"]) as waiting, notifier.watch("other", ["x"]) as other:
        notifier.unannounced(DB)  # was not announced: nobody skipped a read
        assert not waiting.is_set()
        notifier.announcing(DB, 1.0)
        notifier.unannounced(DB)
        assert waiting.is_set() and not other.is_set()
        assert not notifier.announced(DB, 2.0)


class _Watchers:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def notify(self, db: str, places: frozenset[str] | None) -> None:
        self.calls.append(("notify", places))

    def announcing(self, db: str, since: float) -> None:
        self.calls.append(("announcing", db))

    def unannounced(self, db: str) -> None:
        self.calls.append(("unannounced", db))


class _Watched:
    """A store whose watch requests answer what the test gives, one after the other."""

    def __init__(self, answers: list[frozenset[str] | Exception | None]) -> None:
        self.answers = answers

    async def wait_for_change(self, db: str, timeout: float) -> frozenset[str] | None:
        if not self.answers:
            await asyncio.Event().wait()  # no more: wait as a long poll would
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_the_watcher_announces_from_its_first_answer_and_not_after_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(running, "_RETRY_SECONDS", 0.0)
    failed = ServiceUnavailable("CouchDB cannot be reached")
    store = _Watched([frozenset(), frozenset({"area-a1"}), failed, frozenset(), None])
    watchers = _Watchers()
    watch = asyncio.create_task(running._watch(store, DB, watchers))  # type: ignore[arg-type]
    async with asyncio.timeout(5):
        while store.answers:
            await asyncio.sleep(0.01)
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    assert watchers.calls == [
        ("announcing", DB),
        ("announcing", DB),
        ("notify", frozenset({"area-a1"})),
        ("unannounced", DB),  # CouchDB away: writes may go unseen until it answers again
        ("announcing", DB),
        ("announcing", DB),
        ("notify", None),  # more than one answer lists: every waiter
    ]


# -- long polls over HTTP -------------------------------------------------------------
def _config(tmp_path: Path, **couch: Any) -> Config:
    seed(tmp_path / "data")
    return Config(data_dir=tmp_path / "data", require_enrolment=False, **couch)


@pytest.fixture
async def couch_api(
    aiohttp_client: Callable[..., Awaitable[Client]],
    tmp_path: Path,
    couchdb_url: str,
    couch_prefix: str,
) -> Api:
    config = _config(tmp_path, couchdb_url=couchdb_url, couchdb_prefix=couch_prefix)
    return await until_served(Api(await aiohttp_client(create_app(config))))


@pytest.fixture
async def elsewhere(couchdb_url: str, couch_prefix: str) -> AsyncIterator[CouchStore]:
    """Another instance's store on the same CouchDB: its writes reach this one's watcher."""
    other = CouchStore(CouchClient(Endpoint.parse(couchdb_url)), couch_prefix)
    yield other
    await other.close()


async def _write(store: CouchStore, doc_id: str, place: str) -> None:
    written = RevisionWrite(doc_id, ("1-a",), False, place, "k", b"sealed elsewhere", False)
    assert [r.error for r in await store.write(DB, [written])] == [None]


def _notifier(api: Api) -> Notifier:
    return api.client.app[REPLICATION].parts.notifier


async def _announced(api: Api, elsewhere: CouchStore) -> None:
    """Until the watcher has answered once (a write elsewhere makes it answer at once)."""
    await _write(elsewhere, "warm-up", "area-b1")
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(20):
        while not _notifier(api).announced(DB, loop.time()):
            await asyncio.sleep(0.02)


class Counted:
    """Reads of each caller's feed, and checks of a waiting caller, from now on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads: Counter[str] = Counter()
        self.checks = 0
        page, still_allowed = ChangesFeed.page, handlers._still_allowed

        async def read(feed: ChangesFeed, db: str, caller: Caller, query: Any) -> ChangesPage:
            self.reads[caller.name] += 1
            return await page(feed, db, caller, query)

        async def check(request: Any, rep: Any) -> Caller | None:
            self.checks += 1
            return await still_allowed(request, rep)

        monkeypatch.setattr(ChangesFeed, "page", read)
        monkeypatch.setattr(handlers, "_still_allowed", check)


class Poll:
    """A long poll with a fast heartbeat, read as it comes (heartbeats counted)."""

    def __init__(self, api: Api, user: str, timeout_ms: int = 20_000) -> None:
        self.api, self.user, self.timeout_ms = api, user, timeout_ms
        self.heartbeats = 0
        self.body = b""
        self.task: asyncio.Task[list[str]] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> list[str]:
        live = {"feed": "longpoll", "since": "now", "heartbeat": str(HEARTBEAT_MS)}
        live["timeout"] = str(self.timeout_ms)
        response = await self.api.client.get(
            f"/{DB}/_changes", headers=as_user(self.user), params=live
        )
        assert response.status == 200
        async for chunk in response.content.iter_any():
            self.heartbeats += chunk.count(b"\n") if not chunk.strip() else 0
            self.body += chunk
        return [row["id"] for row in orjson.loads(self.body)["results"]]

    async def beats(self, count: int) -> None:
        async with asyncio.timeout(20):
            start = self.heartbeats
            while self.heartbeats < start + count:
                await asyncio.sleep(0.01)

    async def answer(self) -> list[str]:
        assert self.task is not None
        return await asyncio.wait_for(self.task, 20)


async def _waiting(
    api: Api, elsewhere: CouchStore, monkeypatch: pytest.MonkeyPatch, timeout_ms: int = 20_000
) -> tuple[Counted, Poll]:
    """Alice's long poll on an announced database, reads and checks counted from its start."""
    await _announced(api, elsewhere)
    counted = Counted(monkeypatch)
    poll = Poll(api, "alice", timeout_ms)
    poll.start()
    return counted, poll


async def test_on_couchdb_a_heartbeat_neither_reads_again_nor_checks_the_caller(
    couch_api: Api, elsewhere: CouchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted, poll = await _waiting(couch_api, elsewhere, monkeypatch)
    await poll.beats(8)  # eight heartbeats with nothing written in her places
    assert (counted.reads["alice"], counted.checks) == (1, 0)
    await _write(elsewhere, "visit-1", "area-a1")  # through another instance: the watcher
    assert await poll.answer() == ["visit-1"]
    assert (counted.reads["alice"], counted.checks) == (2, 1)  # checked before the read


async def test_on_couchdb_a_long_poll_that_saw_nothing_ends_without_reading_again(
    couch_api: Api, elsewhere: CouchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, first = await couch_api.call("GET", f"/{DB}/_changes", "alice")
    assert status == 200
    counted, poll = await _waiting(couch_api, elsewhere, monkeypatch, timeout_ms=1_000)
    assert await poll.answer() == []
    assert poll.heartbeats >= 5
    assert (counted.reads["alice"], counted.checks) == (1, 0)
    assert orjson.loads(poll.body)["last_seq"] == first["last_seq"]  # where its read ended


async def test_on_couchdb_a_wake_that_read_nothing_reads_again_at_the_next_heartbeat(
    couch_api: Api, elsewhere: CouchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted, poll = await _waiting(couch_api, elsewhere, monkeypatch)
    await poll.beats(2)
    assert counted.reads["alice"] == 1
    _notifier(couch_api).notify(DB, {"area-a1"})  # as if the write's entry were not seen yet
    await poll.beats(6)
    assert counted.reads["alice"] == 3  # the wake's read, and one more at the heartbeat after
    await _write(elsewhere, "visit-2", "area-a1")
    assert await poll.answer() == ["visit-2"]


async def test_before_the_watcher_answers_a_heartbeat_reads_again(
    couch_api: Api, elsewhere: CouchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _notifier(couch_api).unannounced(DB)  # as when its first answer has not come yet
    counted = Counted(monkeypatch)
    poll = Poll(couch_api, "alice")
    poll.start()
    await poll.beats(4)
    assert counted.reads["alice"] >= 4 and counted.checks >= 3
    await _write(elsewhere, "visit-3", "area-a1")
    assert await poll.answer() == ["visit-3"]


async def test_on_the_embedded_store_a_heartbeat_reads_what_a_command_wrote(
    aiohttp_client: Callable[..., Awaitable[Client]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A management command writes into the data dir's file without telling the server:
    only a read finds it, so every heartbeat reads."""
    api = await until_served(Api(await aiohttp_client(create_app(_config(tmp_path)))))
    counted = Counted(monkeypatch)
    poll = Poll(api, "alice")
    poll.start()
    await poll.beats(3)
    assert counted.reads["alice"] >= 3
    store = api.client.app[REPLICATION].parts.store
    written = RevisionWrite("visit-4", ("1-a",), False, "area-a1", "k", b"sealed", False)
    assert [r.error for r in await store.write(DB, [written])] == [None]  # no notification
    assert await poll.answer() == ["visit-4"]
