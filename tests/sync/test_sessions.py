"""Sessions end when the user says so: log out, idle time, an admin, a new password.

A copy of the cookie taken before the session ended (an attacker's, a shared
computer's) must open nothing afterwards, so every test replays the old cookie.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from sync_fixtures import PASSWORD, Client, as_user

from sync import sessions
from sync.appkeys import STORE
from sync.cli import main
from sync.config import Config, from_env
from sync.people_store import embedded_tables
from sync.store.schema import with_file

ALICE = {"name": "alice", "password": PASSWORD}


@pytest.fixture
def config(data_dir: Path) -> Config:
    """Several tests make time pass by editing the sessions table behind the server's
    back, which nothing does in service: the server reads its callers every time here,
    so that an edit shows at once (keeping them a moment has its own tests:
    tests/people_store/test_embedded_recent.py)."""
    return Config(
        data_dir=data_dir,
        max_request_bytes=2 * 1024 * 1024,
        require_enrolment=False,
        accounts_cache_seconds=0,
    )


async def login(client: Client, body: dict[str, str] = ALICE) -> dict[str, str]:
    """The session cookie as a header (the client's jar is emptied: only the copy opens)."""
    response = await client.post("/_session", json=body)
    assert response.status == 200, await response.text()
    cookie = response.cookies["AuthSession"].value
    client.session.cookie_jar.clear()
    return {"Cookie": f"AuthSession={cookie}"}


async def status(client: Client, cookie: dict[str, str]) -> int:
    return (await client.get("/health/", headers=cookie)).status


async def rows(client: Client) -> list[tuple[str, str, float, float]]:
    return await client.app[STORE].read(
        lambda c: c.execute("SELECT id_hash, user, created, last_seen FROM sessions").fetchall()
    )


async def test_log_out_ends_the_session_on_the_server(client: Client) -> None:
    cookie = await login(client)
    assert await status(client, cookie) == 200
    out = await client.delete("/_session", headers=cookie)
    assert out.status == 200 and "AuthSession=" in out.headers["Set-Cookie"]
    assert await status(client, cookie) == 401
    body = await (await client.get("/health/", headers=cookie)).json()
    assert body["reason"] == "Your session has ended; log in again."
    session = await (await client.get("/_session", headers=cookie)).json()
    assert "alice" not in str(session)


async def test_the_supervisor_page_log_out_ends_the_session_too(client: Client) -> None:
    cookie = await login(client, {"name": "sam", "password": PASSWORD})
    assert await status(client, cookie) == 200
    out = await client.post("/supervisor/logout", headers=cookie, allow_redirects=False)
    assert out.status in (302, 303)
    assert await status(client, cookie) == 401


async def test_only_a_hash_of_the_session_id_is_stored(client: Client) -> None:
    cookie = await login(client)
    raw = cookie["Cookie"].split("=", 1)[1]
    [(stored, user, _, _)] = await rows(client)
    assert user == "alice" and raw not in stored
    assert stored == hashlib.sha256(raw.encode()).hexdigest()


async def test_a_session_ends_after_its_idle_time(client: Client, config: Config) -> None:
    cookie = await login(client)
    idle = config.session_idle_seconds
    await client.app[STORE].write_tx(
        lambda c: c.execute("UPDATE sessions SET last_seen = last_seen - ?", (idle + 1,))
    )
    body = await (await client.get("/health/", headers=cookie)).json()
    assert body["reason"] == "Your session has expired; log in again."


async def test_a_used_session_stays_alive_past_the_idle_time(
    client: Client, config: Config
) -> None:
    cookie = await login(client)
    idle = config.session_idle_seconds
    back = idle - 100  # used 100 s before it would have expired...
    await client.app[STORE].write_tx(
        lambda c: c.execute(
            "UPDATE sessions SET last_seen = last_seen - ?, created = created - ?", (back, back)
        )
    )
    assert await status(client, cookie) == 200  # ...so this use counts
    await client.app[STORE].write_tx(
        lambda c: c.execute("UPDATE sessions SET created = created - 200")
    )
    assert await status(client, cookie) == 200


async def test_a_session_ends_after_its_absolute_lifetime(client: Client, config: Config) -> None:
    cookie = await login(client)
    await client.app[STORE].write_tx(
        lambda c: c.execute(
            "UPDATE sessions SET created = created - ?", (config.session_seconds + 1,)
        )
    )
    assert await status(client, cookie) == 401


async def test_last_seen_is_written_at_most_once_a_minute(client: Client) -> None:
    cookie = await login(client)
    [(_, _, _, first)] = await rows(client)
    for _ in range(3):
        assert await status(client, cookie) == 200
    assert (await rows(client))[0][3] == first  # syncing does not write on every request
    await client.app[STORE].write_tx(
        lambda c: c.execute("UPDATE sessions SET last_seen = last_seen - 61")
    )
    assert await status(client, cookie) == 200
    assert (await rows(client))[0][3] > first - 61


async def test_an_admin_ends_every_session_of_a_user(client: Client) -> None:
    phone, laptop = await login(client), await login(client)
    sam = await login(client, {"name": "sam", "password": PASSWORD})
    denied = await client.delete("/api/v1/users/alice/sessions", headers=as_user("sam"))
    assert denied.status == 403
    ended = await client.delete("/api/v1/users/alice/sessions", headers=as_user("admin"))
    assert (ended.status, await ended.json()) == (200, {"ok": True, "ended": 2})
    assert await status(client, phone) == await status(client, laptop) == 401
    assert await status(client, sam) == 200
    missing = await client.delete("/api/v1/users/nobody/sessions", headers=as_user("admin"))
    assert missing.status == 404


async def test_the_cli_ends_every_session_of_a_user_while_the_server_runs(
    client: Client, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cookie = await login(client)
    assert await status(client, cookie) == 200
    assert main(["user", "logout", "alice", "--data-dir", str(data_dir)]) == 0
    assert "alice: 1 session(s) ended" in capsys.readouterr().out
    assert await status(client, cookie) == 401


async def test_a_new_password_ends_every_session(client: Client, data_dir: Path) -> None:
    cookie = await login(client)

    def change(conn: sqlite3.Connection) -> None:
        embedded_tables.set_password(conn, "alice", "a new password")

    with_file(data_dir, change)  # as ``fieldsync user passwd`` does, server running
    assert await status(client, cookie) == 401
    again = await login(client, {"name": "alice", "password": "a new password"})
    assert await status(client, again) == 200


def test_the_idle_time_is_configurable() -> None:
    config = from_env(
        env={"FIELDSYNC_SESSION_IDLE_SECONDS": "600", "FIELDSYNC_SESSION_SECONDS": "7200"}
    )
    assert (config.session_idle_seconds, config.session_seconds) == (600, 7200)
    lifetime = sessions.Lifetime(7200, 600)
    fresh = sessions.Session("alice", "tag", created=1000.0, last_seen=1000.0)
    assert lifetime.alive(fresh, 1599.0) and not lifetime.alive(fresh, 1600.0)
