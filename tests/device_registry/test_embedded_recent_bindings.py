"""Device bindings read once per burst on the embedded store too, and a management
command's refusing changes wait the bound out (device_registry.embedded, docs/adr/0006).

The server's adapter keeps a live binding for the bound and forgets it after every
change made through it; a command (``fieldsync device mark``, another process on the
same file) keeps nothing and returns from a change that can refuse a phone only once
every binding the server keeps was read after the change.  Two adapters on one real
SQLite file stand for the two processes; they share a test clock, and the command's
wait (``sleep``) moves it on, as the real wait moves time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kept_for_a_moment import Clock, CountingStore

from device_registry import codes, inventory
from device_registry.embedded import EmbeddedDevices
from device_registry.status import DeviceStatus
from sync.people_store.embedded import EmbeddedAccounts
from sync.scopes import UNLIMITED, Role

IMEI = "490154203237518"
BOUND = 0.5


@dataclass
class Pair:
    server: EmbeddedDevices
    command: EmbeddedDevices
    store: CountingStore
    clock: Clock


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    store = CountingStore(tmp_path / "fieldsync.db")
    people = EmbeddedAccounts(store)
    await people.add_place("area-1", None, "Area 1", None)
    await people.add_user("alice", Role.CHW, "correct horse", ["area-1"], [], None)
    await people.add_user("bob", Role.CHW, "correct horse", ["area-1"], [], None)
    clock = Clock()
    await EmbeddedDevices.opened(store, BOUND)  # the tables
    server = EmbeddedDevices(store, BOUND, clock=clock, sleep=clock.sleep)
    command = EmbeddedDevices(store, BOUND, beside_server=True, clock=clock, sleep=clock.sleep)
    yield Pair(server, command, store, clock)
    await store.close()


async def _enrolled(store: EmbeddedDevices, serial: str = "A1") -> str:
    """An assigned, enrolled phone: its token's hash."""
    await store.add(inventory.validate_new(serial, IMEI), "admin", UNLIMITED, "alice", None)
    issued = await store.issue_code(serial, "admin", UNLIMITED, None, None)
    return codes.token_hash((await store.enrol(issued.code, serial, "alice")).token)


async def test_a_burst_of_checks_reads_the_file_once(pair: Pair) -> None:
    digest = await _enrolled(pair.server)
    pair.store.reads = 0
    for _ in range(8):
        found = await pair.server.binding(digest)
        assert found is not None and found[1].revoked is None
        pair.clock.now += 0.05
    assert pair.store.reads == 1  # 8 checks over 0.4 s
    pair.clock.now += 0.11  # 0.51 s after the read: read again
    await pair.server.binding(digest)
    assert pair.store.reads == 2


async def test_a_phone_marked_lost_on_the_console_is_refused_at_once(pair: Pair) -> None:
    digest = await _enrolled(pair.server)
    await pair.server.binding(digest)  # kept
    await pair.server.mark("A1", DeviceStatus.LOST, "admin", UNLIMITED, "lost", None)
    assert pair.clock.slept == []  # the server's own changes need no wait: it forgot
    found = await pair.server.binding(digest)
    assert found is not None and found[1].status is DeviceStatus.LOST


@pytest.mark.parametrize("change", ["mark", "assign", "enrol again"])
async def test_a_commands_refusing_change_returns_once_the_server_reads_it(
    pair: Pair, change: str
) -> None:
    digest = await _enrolled(pair.server)
    kept = await pair.server.binding(digest)
    assert kept is not None and kept[1].revoked is None
    if change == "mark":
        await pair.command.mark("A1", DeviceStatus.STOLEN, "admin", UNLIMITED, "stolen", None)
    elif change == "assign":
        await pair.command.assign("A1", "bob", "admin", UNLIMITED, "moved", None)
    else:
        issued = await pair.command.issue_code("A1", "admin", UNLIMITED, None, None)
        await pair.command.enrol(issued.code, "A1", "alice")
    assert pair.clock.slept == [BOUND]  # waited the bound out, once
    found = await pair.server.binding(digest)
    assert found is not None and found[1].revoked is not None


async def test_without_the_wait_the_server_would_answer_from_memory(pair: Pair) -> None:
    digest = await _enrolled(pair.server)
    await pair.server.binding(digest)
    no_wait = EmbeddedDevices(pair.store, 0.0, beside_server=True)
    await no_wait.mark("A1", DeviceStatus.LOST, "admin", UNLIMITED, "lost", None)
    kept = await pair.server.binding(digest)
    assert kept is not None and kept[1].revoked is None  # what the wait prevents
    pair.clock.now += BOUND
    found = await pair.server.binding(digest)
    assert found is not None and found[1].revoked is not None


async def test_changes_that_refuse_nobody_do_not_wait(pair: Pair) -> None:
    await pair.command.add(
        inventory.validate_new("B2", "356938035643809"), "a", UNLIMITED, None, None
    )
    await pair.command.edit("B2", {"model": "Tecno Spark 10"}, "admin", UNLIMITED, None)
    assert pair.clock.slept == []


async def test_revoked_and_unknown_tokens_are_read_every_time(pair: Pair) -> None:
    digest = await _enrolled(pair.server)
    await pair.server.mark("A1", DeviceStatus.LOST, "admin", UNLIMITED, "lost", None)
    unknown = codes.token_hash("no such token")
    pair.store.reads = 0
    for token in (digest, unknown):
        for _ in range(3):
            await pair.server.binding(token)
    assert pair.store.reads == 6
