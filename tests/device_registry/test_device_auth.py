"""Passwords and devices together: a refused device tells a guesser nothing about the
password, a known device keeps syncing through a lock, and enrolment codes are limited
even when guessed in parallel (``sync.auth``, ``device_registry.guard``)."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from typing import Any

import pytest
from device_helpers import IMEIS, Client, Devices, as_user

from device_registry import embedded_sql
from device_registry.context import REGISTRY
from device_registry.verdict import TOKEN_HEADER
from sync.audit import AuditLog
from sync.auth import LOGIN_LIMITS
from sync.ratelimit import Limit

CHANGES = "/health/_changes"


@pytest.fixture
def audited(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, list[str]]]:
    """(actor, action, doc_ids) of every audit entry, through AuditLog's interface."""
    seen: list[tuple[str, str, list[str]]] = []
    real = AuditLog.record

    def record(self: AuditLog, actor: str, action: str, db: Any, ids: Any, **kw: Any) -> None:
        seen.append((actor, action, list(ids)))
        real(self, actor, action, db, ids, **kw)

    monkeypatch.setattr(AuditLog, "record", record)
    return seen


def basic(user: str, password: str, token: str | None = None) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}", **({} if token is None else {TOKEN_HEADER: token})}


async def answer(client: Client, user: str, password: str, token: str | None = None) -> Any:
    response = await client.get(CHANGES, headers=basic(user, password, token))
    return response.status, await response.json()


async def test_a_refused_device_answers_exactly_like_a_wrong_password(
    client: Client, devices: Devices, checks: list[str]
) -> None:
    token = await devices.issued("A1", IMEIS[0], "alice")
    await devices.issued("B1", IMEIS[1], "bob")
    await devices.mark("A1", "stolen")
    checks.clear()
    wrong = await answer(client, "alice", "not it")
    assert wrong == (401, {"error": "unauthorized", "reason": "Name or password is incorrect."})
    for sent in (None, "made-up", token):  # none, unknown, revoked
        assert await answer(client, "alice", "correct horse", sent) == wrong
        assert await answer(client, "alice", "not it", sent) == wrong
    assert await answer(client, "sam", "correct horse") == wrong  # supervisors too (point 11)
    assert await answer(client, "nobody", "correct horse") == wrong
    assert len(checks) == 9  # every one of them paid for scrypt


async def test_a_worker_login_without_its_device_answers_like_a_wrong_password(
    client: Client, devices: Devices
) -> None:
    """``POST /_session`` and the console's login form: whoever guessed a worker's
    password, without the worker's phone, must not learn that it is right."""
    token = await devices.issued("A1", IMEIS[0], "alice")

    async def session(password: str, sent: str | None = None) -> tuple[int, Any]:
        headers = {} if sent is None else {TOKEN_HEADER: sent}
        body = {"name": "alice", "password": password}
        response = await client.post("/_session", json=body, headers=headers)
        return response.status, await response.json()

    wrong = await session("not it")
    assert wrong[0] == 401
    assert await session("correct horse") == wrong
    assert await session("correct horse", "made-up") == wrong
    assert (await session("correct horse", token))[0] == 200  # the app, from its phone
    page = {"name": "alice", "password": "correct horse"}
    form = await client.get("/supervisor/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', await form.text())
    assert csrf is not None
    response = await client.post("/supervisor/login", data={**page, "csrf": csrf[1]})
    assert response.status == 401 and "Wrong user name or password." in await response.text()
    await devices.mark("A1", "lost")
    assert await session("correct horse", token) == wrong


async def test_a_refused_device_is_not_remembered_as_verified(
    client: Client, devices: Devices, checks: list[str]
) -> None:
    token = await devices.issued("A1", IMEIS[0], "alice")
    assert (await devices.call("GET", CHANGES, "alice", token=token))[0] == 200
    await devices.mark("A1", "lost")
    checks.clear()
    for _ in range(3):
        assert (await devices.call("GET", CHANGES, "alice", token=token))[0] == 401
    assert len(checks) == 3  # no fast path that would tell the right password by its speed


async def test_a_known_device_syncs_through_a_lock_but_its_password_alone_does_not(
    client: Client, devices: Devices
) -> None:
    token = await devices.issued("A1", IMEIS[0], "alice")
    assert (await devices.call("GET", CHANGES, "alice", token=token))[0] == 200  # verified
    guesses = [client.get(CHANGES, headers=basic("alice", "guess", token)) for _ in range(60)]
    statuses = [r.status for r in await asyncio.gather(*guesses)]
    assert 429 in statuses
    assert (await devices.call("GET", CHANGES, "alice", token=token))[0] == 200
    # The right password without the device gets what any guess gets now: 429.
    assert (await devices.call("GET", CHANGES, "alice"))[0] == 429
    login = await client.post("/_session", json={"name": "alice", "password": "correct horse"})
    assert login.status == 429


async def test_parallel_enrolment_code_guesses_never_pass_the_limit(
    client: Client, devices: Devices, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, tried = embedded_sql.check_known, []

    def busy_reader(*args: Any, **kwargs: Any) -> None:
        tried.append(args[1])
        time.sleep(0.02)  # a loaded store: the guesses queue up behind each other
        real(*args, **kwargs)

    monkeypatch.setattr(embedded_sql, "check_known", busy_reader)
    client.app[REGISTRY].guard.limiter.limits.update(ip=Limit(5, 600.0))
    await devices.add("A1", IMEIS[0], worker="alice")
    code = await devices.code("A1")
    wrong = {"code": "ZZZZZ-ZZZZZ", "serial": "A1"}
    first = await devices.call("POST", "/api/v1/devices/enroll", "alice", wrong)
    assert first[0] == 403  # an unknown code, refused before any password is checked
    guesses = [
        client.post("/api/v1/devices/enroll", headers=as_user("alice"), json=wrong)
        for _ in range(199)
    ]
    statuses = [r.status for r in await asyncio.gather(*guesses)]
    assert (statuses.count(403), statuses.count(429)) == (4, 195)
    assert len(tried) == 5  # the first and four of the parallel ones: codes looked up
    right = {"code": code, "serial": "A1"}
    assert (await devices.call("POST", "/api/v1/devices/enroll", "alice", right))[0] == 429


async def test_a_right_enrolment_code_is_not_counted(client: Client, devices: Devices) -> None:
    client.app[REGISTRY].guard.limiter.limits.update(user=Limit(2, 600.0))
    await devices.add("A1", IMEIS[0], worker="alice")
    for _ in range(3):
        await devices.enrol("A1", "alice")


async def test_failed_logins_and_refused_devices_are_audited(
    client: Client, devices: Devices, audited: list[tuple[str, str, list[str]]]
) -> None:
    await client.post("/_session", json={"name": "alice", "password": "not it"})
    await client.get(CHANGES, headers=basic("nobody", "x"))
    await devices.call("GET", CHANGES, "alice")
    actions = [(actor, action) for actor, action, _ in audited]
    assert ("alice", "login_failed") in actions
    assert ("nobody", "login_failed") in actions
    assert ("alice", "device_refused") in actions


@pytest.mark.parametrize("route", ["/_session", "Basic"])
async def test_the_limit_counts_a_right_password_without_the_phone_like_a_wrong_one(
    client: Client, devices: Devices, route: str
) -> None:
    """Were it forgiven, the limit's next answer (401, not 429) would confirm the guess."""
    await devices.issued("A1", IMEIS[0], "alice")
    limit = LOGIN_LIMITS["user"].failures

    async def attempt(password: str) -> int:
        if route == "Basic":
            return (await answer(client, "alice", password))[0]
        body = {"name": "alice", "password": password}
        return (await client.post("/_session", json=body)).status

    for n in range(limit - 1):
        assert await attempt(f"guess-{n}") == 401
    assert await attempt("correct horse") == 401  # right, but not from her phone
    assert await attempt("guess-last") == 429  # exactly as after ten wrong guesses
