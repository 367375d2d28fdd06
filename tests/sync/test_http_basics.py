"""The server answers like CouchDB at its front door, and refuses bad credentials alike."""

from __future__ import annotations

import pytest
from sync_fixtures import Api, Client, as_user


async def test_welcome_has_a_stable_uuid(client: Client) -> None:
    first = await (await client.get("/")).json()
    second = await (await client.get("/")).json()
    assert first["couchdb"] == "Welcome"
    assert first["uuid"] == second["uuid"] and len(first["uuid"]) == 32


async def test_wrong_password_and_unknown_user_get_the_same_401(client: Client) -> None:
    wrong = await client.get("/health/", headers=as_user("alice", "not it"))
    unknown = await client.get("/health/", headers=as_user("nobody", "not it"))
    assert wrong.status == unknown.status == 401
    assert await wrong.json() == await unknown.json()


async def test_no_credentials_is_401(client: Client) -> None:
    response = await client.get("/health/_changes")
    assert response.status == 401
    assert (await response.json())["error"] == "unauthorized"


async def test_session_cookie_login(client: Client) -> None:
    response = await client.post("/_session", json={"name": "alice", "password": "correct horse"})
    assert response.status == 200
    assert "HttpOnly" in response.headers["Set-Cookie"]
    session = await (await client.get("/_session")).json()
    assert session["userCtx"] == {"name": "alice", "roles": ["chw"]}
    info = await client.get("/health/")
    assert info.status == 200


async def test_session_login_with_wrong_password(client: Client) -> None:
    response = await client.post("/_session", json={"name": "alice", "password": "nope"})
    assert response.status == 401
    assert (await response.json())["reason"] == "Name or password is incorrect."


async def test_only_admins_create_databases(api: Api) -> None:
    assert (await api.call("PUT", "/other", "alice"))[0] == 403
    assert (await api.call("PUT", "/other"))[0] == 201
    status, body = await api.call("PUT", "/other")
    assert status == 412 and body["error"] == "file_exists"
    assert (await api.call("DELETE", "/other"))[0] == 200
    assert (await api.call("GET", "/other/"))[0] == 404


async def test_illegal_database_name(api: Api) -> None:
    status, body = await api.call("PUT", "/Bad%20Name")
    assert status == 400 and body["error"] == "illegal_database_name"


async def test_password_guessing_is_slowed_down_but_a_known_phone_keeps_working(
    client: Client,
) -> None:
    login = {"name": "alice", "password": "correct horse"}
    assert (await client.post("/_session", json=login)).status == 200  # the phone's session
    good = await client.get("/health/", headers=as_user("alice"))  # verified once
    assert good.status == 200
    statuses = [
        (await client.get("/health/", headers=as_user("alice", f"guess-{n}"))).status
        for n in range(12)
    ]
    assert statuses[:10] == [401] * 10
    assert statuses[10:] == [429, 429]
    body = await (await client.get("/health/", headers=as_user("alice", "again"))).json()
    assert body["error"] == "too_many_requests" and "try again in" in body["reason"]
    # The phone's session keeps syncing; remembered Basic credentials without a device do
    # not pass the lock (else 429 versus 200 would tell the guesser which guess is right).
    assert (await client.get("/health/")).status == 200
    assert (await client.get("/health/", headers=as_user("alice"))).status == 429
    assert (await client.get("/health/", headers=as_user("bob"))).status == 200


@pytest.mark.parametrize(
    ("count", "status", "size"),
    [("", 200, 1), ("3", 200, 3), ("1000", 200, 1000), ("0", 400, 0), ("1001", 400, 0),
     ("abc", 400, 0), ("-2", 400, 0)],
)  # fmt: skip
async def test_uuids(client: Client, count: str, status: int, size: int) -> None:
    response = await client.get(f"/_uuids?count={count}")
    body = await response.json()
    assert response.status == status, body
    if status == 200:
        assert len(set(body["uuids"])) == size and all(len(u) == 32 for u in body["uuids"])
    else:
        assert body["error"] == "bad_request"
