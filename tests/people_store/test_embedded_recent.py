"""Callers read a moment ago, on the embedded accounts adapter (sync.people_store.embedded).

A catch-up pull is about 200 requests in a few seconds, each of which looked its caller
up on a reader thread: the hop there and back cost the pull more than the read.  The
server's adapter now answers an active caller again for ``recent_seconds``; what must
hold is what held before: a change through the server counts from the next request, and
so does a change made by a management command (another process, on the same file),
because the command returns only once the server's kept answers are all younger than it.

Two adapters on one real SQLite file stand for the server and a command; they share a
test clock, and the command's wait (``sleep``) moves it on, as the real wait moves time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kept_for_a_moment import Clock, CountingStore

from sync.people_store.embedded import EmbeddedAccounts
from sync.people_store.ports import Actor
from sync.scopes import Role, UserStatus
from sync.sessions import Lifetime

PASSWORD = "correct horse"
ADMIN = Actor("boss")
BOUND = 0.5


@dataclass
class Pair:
    server: EmbeddedAccounts  # keeps callers for BOUND seconds
    command: EmbeddedAccounts  # a management command beside it: keeps nothing, waits
    store: CountingStore
    clock: Clock


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    store = CountingStore(tmp_path / "fieldsync.db")
    clock = Clock()
    server = EmbeddedAccounts(store, None, BOUND, clock=clock, sleep=clock.sleep)
    command = EmbeddedAccounts(
        store, None, BOUND, beside_server=True, clock=clock, sleep=clock.sleep
    )
    await server.add_place("area-1", None, None, ADMIN)
    await server.add_place("area-2", None, None, ADMIN)
    await server.add_user("alice", Role.CHW, PASSWORD, ["area-1"], [], ADMIN)
    yield Pair(server, command, store, clock)
    await store.close()


async def status(accounts: EmbeddedAccounts, name: str) -> UserStatus | None:
    user = (await accounts.lookup(name)).user
    return None if user is None else user.status


async def test_a_burst_of_requests_reads_its_caller_once(pair: Pair) -> None:
    await pair.server.lookup("alice")
    pair.store.reads = 0
    for _ in range(8):
        assert await status(pair.server, "alice") is UserStatus.ACTIVE
        pair.clock.now += 0.05
    assert pair.store.reads == 0  # 8 requests over 0.4 s: all answered from the first read
    pair.clock.now += 0.11  # 0.51 s after the read
    await pair.server.lookup("alice")
    assert pair.store.reads == 1


async def test_a_change_through_the_server_counts_from_the_next_request(pair: Pair) -> None:
    assert await status(pair.server, "alice") is UserStatus.ACTIVE  # kept
    await pair.server.disable_user("alice", ADMIN)
    assert await status(pair.server, "alice") is UserStatus.DISABLED
    assert pair.clock.slept == []  # the server's own changes never wait


async def test_a_command_returns_only_once_the_servers_kept_answers_are_older(
    pair: Pair,
) -> None:
    assert await status(pair.server, "alice") is UserStatus.ACTIVE  # kept by the server
    pair.clock.now += 0.1
    await pair.command.disable_user("alice", ADMIN)
    assert pair.clock.slept == [BOUND]  # the command waited the bound out
    assert await status(pair.server, "alice") is UserStatus.DISABLED  # so this reads again


async def test_without_the_wait_the_server_would_answer_from_memory(pair: Pair) -> None:
    """What the wait is for: the same change made without it is not seen at once."""
    assert await status(pair.server, "alice") is UserStatus.ACTIVE
    no_wait = EmbeddedAccounts(pair.store, None, 0.0, beside_server=True)
    await no_wait.disable_user("alice", ADMIN)
    assert await status(pair.server, "alice") is UserStatus.ACTIVE  # kept, 0 s old
    pair.clock.now += BOUND
    assert await status(pair.server, "alice") is UserStatus.DISABLED


async def test_every_change_that_can_refuse_a_caller_waits(pair: Pair) -> None:
    await pair.command.set_places("alice", ["area-2"], [], ADMIN)
    await pair.command.set_password("alice", "another horse", ADMIN)
    await pair.command.edit_place("area-2", None, True, "area-1", ADMIN)
    await pair.command.logout_user("alice", ADMIN)
    await pair.command.remove_user("alice", ADMIN)
    assert pair.clock.slept == [BOUND] * 5


async def test_changes_that_only_grant_do_not_wait(pair: Pair) -> None:
    """Nothing they change can make a kept answer wrong: unknown and disabled callers are
    never kept, and a place's name or a console language decides no request."""
    await pair.command.add_place("area-3", "area-1", None, ADMIN)
    await pair.command.add_user("bob", Role.CHW, PASSWORD, ["area-3"], [], ADMIN)
    await pair.server.disable_user("bob", ADMIN)  # the server's own changes never wait
    await pair.command.enable_user("bob", ADMIN)
    await pair.command.edit_place("area-3", "Area three", False, None, ADMIN)
    await pair.command.set_language("bob", "sw", ADMIN)
    assert pair.clock.slept == []


async def test_unknown_and_disabled_callers_are_read_every_time(pair: Pair) -> None:
    assert await status(pair.server, "bob") is None
    await pair.command.disable_user("alice", ADMIN)
    pair.clock.slept.clear()
    assert await status(pair.server, "alice") is UserStatus.DISABLED
    pair.store.reads = 0
    no_wait = EmbeddedAccounts(pair.store, None, 0.0, beside_server=True)
    await no_wait.add_user("bob", Role.CHW, PASSWORD, ["area-1"], [], ADMIN)
    await no_wait.enable_user("alice", ADMIN)
    # Neither a name added nor an account enabled a moment ago is refused from memory.
    assert await status(pair.server, "bob") is UserStatus.ACTIVE
    assert await status(pair.server, "alice") is UserStatus.ACTIVE
    assert pair.store.reads == 2


async def test_a_logout_through_the_server_ends_the_session_at_once(pair: Pair) -> None:
    user = (await pair.server.lookup("alice")).user
    assert user is not None
    opened = await pair.server.start_session(user, 1000.0, Lifetime(3600, 3600))
    assert opened.session_id is not None
    found = await pair.server.lookup(None, opened.session_id)
    assert found.session is not None and found.user is not None  # kept
    await pair.server.end_session(opened.session_id)
    found = await pair.server.lookup(None, opened.session_id)
    assert found.session is None and found.user is None
