"""Callers read a moment ago (sync.recent), on the CouchDB accounts adapter.

A no-op sync is nine requests in well under a second; each read its caller from
CouchDB.  With ``FIELDSYNC_ACCOUNTS_CACHE_SECONDS`` an instance answers the same
caller again from what it read, for at most that long: a change made through
another instance shows within the bound, a change made through this one at once.
The adapters run on a CouchDB-API server (pouchdb-server, or a real CouchDB with
FIELDSYNC_TEST_COUCHDB_URL); the clock is a test clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from sync.config import ConfigError, from_env
from sync.people_store.couchdb import DB_NAME, CouchAccounts
from sync.people_store.ports import Actor
from sync.recent import RecentLookups
from sync.scopes import Role, UserStatus
from sync.sessions import Lifetime
from sync.store.couchdb.client import KEYS_PER_REQUEST, CouchClient, Endpoint

PASSWORD = "correct horse"
ADMIN = Actor("boss")
BOUND = 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingClient(CouchClient):
    """The real client, counting the quorum reads the lookups make."""

    reads = 0

    async def leaves_by_id(
        self, couch_db: str, ids: Sequence[str], chunk: int = KEYS_PER_REQUEST
    ) -> dict[str, list[dict[str, Any]]]:
        self.reads += 1
        return await super().leaves_by_id(couch_db, ids, chunk)


@dataclass
class Pair:
    here: CouchAccounts  # this instance, keeping callers for BOUND seconds
    there: CouchAccounts  # another instance, on the same database
    client: CountingClient
    clock: Clock


@pytest.fixture
async def pair(couchdb_url: str, couch_prefix: str) -> AsyncIterator[Pair]:
    clock = Clock()
    client = CountingClient(Endpoint.parse(couchdb_url))
    other = CouchClient(Endpoint.parse(couchdb_url))
    db = couch_prefix + DB_NAME
    here = CouchAccounts(client, db, recent_seconds=BOUND, clock=clock)
    there = CouchAccounts.for_prefix(other, couch_prefix)
    await there.add_place("area-1", None, None, ADMIN)
    await there.add_place("area-2", None, None, ADMIN)
    await there.add_user("alice", Role.CHW, PASSWORD, ["area-1"], [], ADMIN)
    yield Pair(here, there, client, clock)
    await client.close()
    await other.close()


async def status(store: CouchAccounts, name: str) -> UserStatus | None:
    user = (await store.lookup(name)).user
    return None if user is None else user.status


async def test_a_burst_of_requests_reads_the_caller_once(pair: Pair) -> None:
    await pair.here.lookup("alice")
    before = pair.client.reads
    for _ in range(8):
        pair.clock.now += 0.1
        assert (await pair.here.lookup("alice")).user is not None
    assert pair.client.reads == before
    pair.clock.now += BOUND
    await pair.here.lookup("alice")
    assert pair.client.reads == before + 1


async def test_a_change_on_another_instance_shows_within_the_bound(pair: Pair) -> None:
    assert await status(pair.here, "alice") is UserStatus.ACTIVE
    await pair.there.disable_user("alice", ADMIN)
    pair.clock.now += BOUND - 0.01
    assert await status(pair.here, "alice") is UserStatus.ACTIVE  # what was read, kept
    pair.clock.now += 0.01
    assert await status(pair.here, "alice") is UserStatus.DISABLED
    assert await status(pair.there, "alice") is UserStatus.DISABLED


async def test_a_change_through_this_instance_shows_at_once(pair: Pair) -> None:
    assert await status(pair.here, "alice") is UserStatus.ACTIVE
    assert await status(pair.here, "carol") is None
    await pair.here.disable_user("alice", ADMIN)
    assert await status(pair.here, "alice") is UserStatus.DISABLED
    await pair.here.add_user("carol", Role.CHW, PASSWORD, ["area-2"], [], ADMIN)
    assert await status(pair.here, "carol") is UserStatus.ACTIVE


async def test_a_scope_changed_elsewhere_moves_the_tree_version_within_the_bound(
    pair: Pair,
) -> None:
    first = await pair.here.lookup("alice")
    await pair.there.set_places("alice", ["area-1", "area-2"], [], ADMIN)
    await pair.there.add_place("area-3", None, None, ADMIN)
    assert await pair.here.lookup("alice") == first
    pair.clock.now += BOUND
    moved = await pair.here.lookup("alice")
    assert moved.user is not None and moved.user.places == ("area-1", "area-2")
    assert moved.places_version != first.places_version


async def test_a_logout_here_ends_the_session_here_at_once(pair: Pair) -> None:
    alice = await pair.here.get_user("alice")
    assert alice is not None
    opened = await pair.here.start_session(alice, 1000.0, Lifetime(3600.0, 600.0))
    assert opened.session_id is not None
    assert (await pair.here.lookup(None, opened.session_id)).session is not None
    await pair.here.end_session(opened.session_id)
    assert (await pair.here.lookup(None, opened.session_id)).session is None


def test_an_answer_is_kept_for_the_bound_and_no_longer() -> None:
    clock = Clock()
    recent: RecentLookups[str] = RecentLookups(1.0, clock=clock)
    recent.put("alice", "read", recent.generation)
    clock.now += 0.99
    assert recent.get("alice") == "read"
    clock.now += 0.01
    assert recent.get("alice") is None


def test_an_answer_read_across_a_write_is_not_kept() -> None:
    recent: RecentLookups[str] = RecentLookups(60.0, clock=Clock())
    before = recent.generation  # a read starts
    recent.forget()  # a write lands while it is under way
    recent.put("alice", "read before the write", before)
    assert recent.get("alice") is None
    recent.put("alice", "read after", recent.generation)
    assert recent.get("alice") == "read after"
    recent.forget()
    assert recent.get("alice") is None


def test_zero_seconds_keeps_nothing_and_the_size_is_bounded() -> None:
    off: RecentLookups[str] = RecentLookups(0.0, clock=Clock())
    off.put("alice", "read", off.generation)
    assert off.get("alice") is None
    small: RecentLookups[int] = RecentLookups(60.0, most=3, clock=Clock())
    for n in range(4):
        small.put(n, n, small.generation)
    assert [small.get(n) for n in range(4)] == [None, None, None, 3]


@pytest.mark.parametrize(("value", "expected"), [("0", 0.0), ("0.5", 0.5), ("60", 60.0)])
def test_the_setting_takes_zero_to_sixty_seconds(value: str, expected: float) -> None:
    config = from_env(env={"FIELDSYNC_ACCOUNTS_CACHE_SECONDS": value})
    assert config.accounts_cache_seconds == expected


@pytest.mark.parametrize("value", ["-1", "61", "soon", "nan"])
def test_the_setting_refuses_what_is_not_a_bound(value: str) -> None:
    with pytest.raises(ConfigError, match=r"FIELDSYNC_ACCOUNTS_CACHE_SECONDS.*from 0"):
        from_env(env={"FIELDSYNC_ACCOUNTS_CACHE_SECONDS": value})
