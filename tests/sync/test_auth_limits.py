"""Login limits hold under concurrency, and a failed login tells nothing it should not.

Each attempt is counted before its password is checked (``sync.ratelimit``), so
200 guesses sent at once are no better than 200 sent one by one.  Timings are not
asserted (the machine is shared); the unknown-name path is shown to run the same
password check instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
from sync_fixtures import PASSWORD, Client, as_user

from sync.app import create_app
from sync.auth import LOGIN_LIMITS
from sync.config import Config, ConfigError, from_env

LIMIT = LOGIN_LIMITS["user"].failures


async def test_parallel_session_guesses_never_pass_the_limit(
    client: Client, checks: list[str]
) -> None:
    guesses = [
        client.post("/_session", json={"name": "alice", "password": f"guess-{n}"})
        for n in range(200)
    ]
    statuses = [r.status for r in await asyncio.gather(*guesses)]
    assert (statuses.count(401), statuses.count(429)) == (LIMIT, 200 - LIMIT)
    assert len(checks) == LIMIT
    right = await client.post("/_session", json={"name": "alice", "password": PASSWORD})
    assert right.status == 429  # locked for everyone without a session or a device
    assert len(checks) == LIMIT


async def test_parallel_basic_guesses_never_pass_the_limit(
    client: Client, checks: list[str]
) -> None:
    guesses = [client.get("/health/", headers=as_user("alice", f"guess-{n}")) for n in range(200)]
    statuses = [r.status for r in await asyncio.gather(*guesses)]
    assert (statuses.count(401), statuses.count(429)) == (LIMIT, 200 - LIMIT)
    assert len(checks) == LIMIT
    assert (await client.get("/health/", headers=as_user("alice"))).status == 429


async def test_a_right_password_is_forgiven(client: Client) -> None:
    """Only failures stay counted: a worker who logs in often is never limited."""
    for _ in range(LIMIT + 2):
        login = await client.post("/_session", json={"name": "alice", "password": PASSWORD})
        assert login.status == 200
    for n in range(LIMIT - 1):
        wrong = await client.post("/_session", json={"name": "alice", "password": f"x{n}"})
        assert wrong.status == 401
    login = await client.post("/_session", json={"name": "alice", "password": PASSWORD})
    assert login.status == 200


async def test_a_session_keeps_syncing_while_its_name_is_guessed(client: Client) -> None:
    login = await client.post("/_session", json={"name": "alice", "password": PASSWORD})
    assert login.status == 200
    guesses = [client.get("/health/", headers=as_user("alice", f"guess-{n}")) for n in range(50)]
    await asyncio.gather(*guesses)
    assert (await client.get("/health/", headers=as_user("alice", "one more"))).status == 429
    assert (await client.get("/health/")).status == 200  # the cookie


async def test_an_unknown_name_costs_a_password_check(client: Client, checks: list[str]) -> None:
    unknown = await client.get("/health/", headers=as_user("nobody", "not it"))
    wrong = await client.get("/health/", headers=as_user("alice", "not it"))
    assert unknown.status == wrong.status == 401
    assert await unknown.json() == await wrong.json()
    assert checks == ["not it", "not it"]
    session = await client.post("/_session", json={"name": "nobody", "password": "again"})
    assert session.status == 401 and checks[-1] == "again"


async def test_unknown_names_are_limited_too(client: Client, checks: list[str]) -> None:
    guesses = [
        client.post("/_session", json={"name": "nobody", "password": f"g{n}"}) for n in range(40)
    ]
    statuses = [r.status for r in await asyncio.gather(*guesses)]
    assert (statuses.count(401), statuses.count(429)) == (LIMIT, 40 - LIMIT)
    assert len(checks) == LIMIT


async def test_verified_passwords_are_remembered_up_to_the_setting_least_recently_used_first(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config, checks: list[str]
) -> None:
    """A phone's next sync skips the password hash (and, on CouchDB, the login counters)
    while its credentials are remembered: at most ``verified_passwords`` of them, the ones
    that synced least recently forgotten first."""
    client = await aiohttp_client(create_app(replace(config, verified_passwords=2)))

    async def sync(user: str) -> int:
        assert (await client.get("/health/", headers=as_user(user))).status == 200
        return len(checks)

    assert await sync("alice") == 1
    assert await sync("bob") == 2
    assert await sync("alice") == 2  # remembered, and now the most recent
    assert await sync("sam") == 3  # a third: bob, the least recently used, is forgotten
    assert await sync("alice") == 3
    assert await sync("bob") == 4


def test_the_number_of_verified_passwords_remembered_is_a_setting() -> None:
    assert from_env(env={}).verified_passwords == 200_000
    assert from_env(env={"FIELDSYNC_VERIFIED_PASSWORDS": "500000"}).verified_passwords == 500_000
    for value in ("0", "-3", "many"):
        with pytest.raises(ConfigError, match=r"FIELDSYNC_VERIFIED_PASSWORDS.*at least 1"):
            from_env(env={"FIELDSYNC_VERIFIED_PASSWORDS": value})
