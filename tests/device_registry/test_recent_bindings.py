"""Device bindings read once per burst on CouchDB, and changes that wait the bound out
(device_registry.couchdb, docs/adr/0006).

Two adapters on one CouchDB-API server stand for two instances; they share a test
clock, and a change's wait (``sleep``) moves that clock on, as the real wait moves
time.  What must hold: a burst of checks costs one CouchDB read; a kept binding's
age counts from when its read was sent; a change that can refuse a phone returns
only after ``seconds``, so the other instance's next check reads the refusal; a
change that cannot refuse does not wait; revoked and unknown tokens are not kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from kept_for_a_moment import Clock

from device_registry import codes, inventory
from device_registry.couchdb import CouchDevices
from device_registry.ports import Heard
from device_registry.status import DeviceStatus
from sync.config import ConfigError, Endpoint, from_env
from sync.people_store.couchdb import CouchAccounts
from sync.scopes import UNLIMITED, Role
from sync.store.couchdb.client import CouchClient

IMEI = "490154203237518"
BOUND = 0.5


@dataclass
class Pair:
    here: CouchDevices
    there: CouchDevices
    clock: Clock
    asked: list[str]  # CouchDB requests of ``there`` (the other instance)


@pytest.fixture
async def pair(couchdb_url: str, couch_prefix: str) -> AsyncIterator[Pair]:
    clients = [CouchClient(Endpoint.parse(couchdb_url)) for _ in range(2)]
    people = [CouchAccounts.for_prefix(c, couch_prefix) for c in clients]
    await people[0].add_place("area-1", None, "Area 1", None)
    await people[0].add_user("alice", Role.CHW, "correct horse", ["area-1"], [], None)
    clock = Clock()
    here, there = (
        CouchDevices(c, couch_prefix + "devices", a, BOUND, clock=clock, sleep=clock.sleep)
        for c, a in zip(clients, people, strict=True)
    )
    asked: list[str] = []

    def observe(method: str, where: str, params: Any, body: Any) -> None:
        asked.append(f"{method} {where.rsplit('/', 1)[-1]}")

    clients[1].observe = observe
    yield Pair(here, there, clock, asked)
    for client in clients:
        await client.close()


async def _enrolled(store: CouchDevices, serial: str = "A1") -> str:
    """An assigned, enrolled phone: its token's hash."""
    new = inventory.validate_new(serial, IMEI)
    await store.add(new, "admin", UNLIMITED, "alice", None)
    issued = await store.issue_code(serial, "admin", UNLIMITED, None, None)
    return codes.token_hash((await store.enrol(issued.code, serial, "alice")).token)


async def test_a_burst_of_checks_reads_couchdb_once(pair: Pair) -> None:
    digest = await _enrolled(pair.here)
    await pair.there.binding(digest)  # first sight of the token: learns its device
    pair.clock.now += 1
    pair.asked.clear()
    for _ in range(8):
        found = await pair.there.binding(digest)
        assert found is not None and found[1].revoked is None
        pair.clock.now += 0.05
    assert pair.asked == ["POST _bulk_get"]  # 8 checks over 0.4 s
    pair.clock.now += 0.2  # 0.6 s after the read: read again
    await pair.there.binding(digest)
    assert pair.asked == ["POST _bulk_get"] * 2


async def test_a_kept_binding_ages_from_when_its_read_was_sent(pair: Pair) -> None:
    digest = await _enrolled(pair.here)
    slow = pair.there.client

    def late(method: str, where: str, params: Any, body: Any) -> None:
        pair.asked.append(method)
        pair.clock.now += 0.4  # CouchDB takes 0.4 s to answer

    slow.observe = late
    await pair.there.binding(digest)  # sent at t, answered at t + 0.4 (test clock)
    pair.clock.now += 0.2  # t + 0.6: older than the bound counted from the send
    pair.asked.clear()
    await pair.there.binding(digest)
    assert pair.asked, "kept past the bound: its age was counted from the answer"


async def test_a_phone_marked_lost_is_refused_by_the_other_instance_once_answered(
    pair: Pair,
) -> None:
    digest = await _enrolled(pair.here)
    kept = await pair.there.binding(digest)  # the other instance has it, live
    assert kept is not None and kept[1].revoked is None
    pair.clock.slept.clear()
    await pair.here.mark("A1", DeviceStatus.LOST, "admin", UNLIMITED, "lost in the field", None)
    assert pair.clock.slept == [BOUND]  # the answer waited the bound out
    found = await pair.there.binding(digest)
    assert found is not None and found[1].revoked is not None
    assert found[1].status is DeviceStatus.LOST


async def test_reassigning_and_enrolling_again_also_wait(pair: Pair) -> None:
    old = await _enrolled(pair.here)
    await pair.there.binding(old)
    pair.clock.slept.clear()
    issued = await pair.here.issue_code("A1", "admin", UNLIMITED, None, None)
    assert pair.clock.slept == []  # a new code refuses nobody
    await pair.here.enrol(issued.code, "A1", "alice")
    assert pair.clock.slept == [BOUND]  # the older token is revoked
    found = await pair.there.binding(old)
    assert found is not None and found[1].revoked == "re_enrolled"


async def test_a_change_that_refuses_nobody_does_not_wait(pair: Pair) -> None:
    await _enrolled(pair.here)
    pair.clock.slept.clear()
    await pair.here.edit("A1", {"model": "Tecno Spark 10"}, "admin", UNLIMITED, None)
    assert pair.clock.slept == []


async def test_a_change_here_is_seen_here_at_once_without_waiting_for_the_clock(
    pair: Pair,
) -> None:
    digest = await _enrolled(pair.here)
    await pair.here.binding(digest)  # kept here
    now = pair.clock.now
    await pair.here.mark("A1", DeviceStatus.STOLEN, "admin", UNLIMITED, "stolen", None)
    pair.clock.now = now  # as if no time had passed: only the forget can make it read
    found = await pair.here.binding(digest)
    assert found is not None and found[1].revoked is not None


async def test_revoked_and_unknown_tokens_are_read_every_time(pair: Pair) -> None:
    digest = await _enrolled(pair.here)
    await pair.here.mark("A1", DeviceStatus.LOST, "admin", UNLIMITED, "lost", None)
    unknown = codes.token_hash("no such token")
    for token in (digest, unknown):
        await pair.there.binding(token)  # first sight: learns the device
    pair.asked.clear()
    for token in (digest, unknown):
        for _ in range(3):
            await pair.there.binding(token)
    assert pair.asked == ["POST _bulk_get"] * 6


async def test_zero_reads_on_every_check(couchdb_url: str, couch_prefix: str) -> None:
    client = CouchClient(Endpoint.parse(couchdb_url))
    people = CouchAccounts.for_prefix(client, couch_prefix)
    await people.add_place("area-1", None, "Area 1", None)
    await people.add_user("alice", Role.CHW, "correct horse", ["area-1"], [], None)
    store = CouchDevices.for_prefix(client, couch_prefix, people)  # the default: 0
    digest = await _enrolled(store)
    await store.binding(digest)  # first sight of the token: learns its device
    asked: list[str] = []
    client.observe = lambda method, *_: asked.append(method)
    for _ in range(3):
        await store.binding(digest)
    await client.close()
    assert asked == ["POST"] * 3


@pytest.mark.parametrize("value", ["0", "0.5", "5"])
def test_the_setting_takes_zero_to_five_seconds(value: str) -> None:
    config = from_env(env={"FIELDSYNC_DEVICES_CACHE_SECONDS": value})
    assert config.devices_cache_seconds == float(value)


@pytest.mark.parametrize("value", ["-1", "5.5", "soon", "nan"])
def test_the_setting_refuses_anything_else(value: str) -> None:
    with pytest.raises(ConfigError, match=r"FIELDSYNC_DEVICES_CACHE_SECONDS.*from 0"):
        from_env(env={"FIELDSYNC_DEVICES_CACHE_SECONDS": value})


async def test_checks_at_the_same_moment_share_one_read(pair: Pair) -> None:
    digest = await _enrolled(pair.here)
    await pair.there.binding(digest)  # first sight of the token: learns its device
    pair.clock.now += 1
    pair.asked.clear()
    found = await asyncio.gather(*(pair.there.binding(digest) for _ in range(6)))
    assert all(f is not None and f[1].revoked is None for f in found)
    assert pair.asked == ["POST _bulk_get"]  # the pull and push lanes of one sync, say


async def test_the_last_sync_write_starts_from_the_checks_read(pair: Pair) -> None:
    digest = await _enrolled(pair.here)
    found = await pair.there.binding(digest)
    assert found is not None
    pair.asked.clear()
    await pair.there.heard({found[0]: Heard("2026-12-03T10:00:00Z", "2.1.0", "")})
    assert [a.split()[0] for a in pair.asked] == ["PUT"]  # no read before the write
    device = await pair.here.get("A1")
    assert device is not None and device.last_sync == "2026-12-03T10:00:00Z"


async def test_a_last_sync_write_on_a_stale_read_reads_again_and_lands(pair: Pair) -> None:
    digest = await _enrolled(pair.here)
    found = await pair.there.binding(digest)
    assert found is not None
    await pair.here.edit("A1", {"notes": "cracked screen"}, "admin", UNLIMITED, None)
    await pair.there.heard({found[0]: Heard("2026-12-03T10:05:00Z")})
    device = await pair.here.get("A1")
    assert device is not None
    assert (device.last_sync, device.notes) == ("2026-12-03T10:05:00Z", "cracked screen")
