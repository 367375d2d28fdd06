"""Issue 11, points 3 and 7: accounts, sessions and login limits are shared by every instance.

Two ``fieldsync serve`` processes, each with its own data dir copied from one
template, on one CouchDB (pouchdb-server in CI, a real CouchDB with
FIELDSYNC_TEST_COUCHDB_URL).  Users, places and sessions live in the
``<prefix>accounts`` database (sync.people_store.couchdb), so:

- a cookie from a login on A opens B, and a logout on B ends it on A;
- a user disabled on A is refused by B on the very next request, Basic or cookie;
- a scope changed on A (the admin API) or with the CLI applies on B at once;
- wrong passwords spread over A and B stop at the configured total.

Those run with ``FIELDSYNC_ACCOUNTS_CACHE_SECONDS=0`` (every request reads its
caller).  With the default bound, a caller read a moment ago is answered again
for that long: a change shows at once on the instance that made it and on the
other within the bound (the last test).
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from realserver import DB, PASSWORD, ServerProcess, servers_from

from sync.auth import COOKIE, LOGIN_LIMITS
from sync.keys import KeyRing, load_master_key
from sync.store.schema import connections, db_path

LIMIT = LOGIN_LIMITS["user"].failures
CACHE_SECONDS = 2.0


@pytest.fixture
def pair(
    tmp_path: Path, org_data: Path, couchdb_url: str, couch_prefix: str
) -> Iterator[list[ServerProcess]]:
    """Two servers started from one template, on one CouchDB, reading callers every time."""
    yield from _servers(tmp_path, org_data, couchdb_url, couch_prefix, cache_seconds=0.0)


@pytest.fixture
def bounded_pair(
    tmp_path: Path, org_data: Path, couchdb_url: str, couch_prefix: str
) -> Iterator[list[ServerProcess]]:
    """The same, each keeping a caller it read for CACHE_SECONDS."""
    yield from _servers(tmp_path, org_data, couchdb_url, couch_prefix, cache_seconds=CACHE_SECONDS)


def _servers(
    tmp_path: Path, org_data: Path, couchdb_url: str, couch_prefix: str, cache_seconds: float
) -> Iterator[list[ServerProcess]]:
    template = tmp_path / "template"
    shutil.copytree(org_data, template)
    keys = KeyRing(load_master_key(template / "master.key", create=True), _conns(template))
    with closing(sqlite3.connect(db_path(template))) as conn:
        places = [row[0] for row in conn.execute("SELECT id FROM places")]
    for place in [*places, ""]:  # until keys live in CouchDB (issue 11) both copies need them
        keys.current(place)
    env = {
        "FIELDSYNC_COUCHDB_URL": couchdb_url,
        "FIELDSYNC_COUCHDB_PREFIX": couch_prefix,
        "FIELDSYNC_REQUIRE_ENROLMENT": "0",
        "FIELDSYNC_ACCOUNTS_CACHE_SECONDS": str(cache_seconds),
    }
    with servers_from(template, tmp_path, env) as servers:
        yield servers


def _conns(data_dir: Path) -> Any:
    return connections(db_path(data_dir))


def basic(user: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No cookie jar: each request carries exactly the cookie a test gives it.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


async def login(http: aiohttp.ClientSession, server: ServerProcess, user: str) -> str:
    body = {"name": user, "password": PASSWORD}
    async with http.post(f"{server.url}/_session", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return resp.cookies[COOKIE].value


async def status(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> int:
    sent = dict(headers or {})
    if cookie is not None:
        sent["Cookie"] = f"{COOKIE}={cookie}"
    async with http.request(method, url, headers=sent, json=body) as resp:
        await resp.read()
        return resp.status


async def test_a_login_on_one_instance_opens_the_other_and_a_logout_ends_both(
    pair: list[ServerProcess], http: aiohttp.ClientSession
) -> None:
    a, b = pair
    cookie = await login(http, a, "alice")
    async with http.get(f"{b.url}/_session", headers={"Cookie": f"{COOKIE}={cookie}"}) as resp:
        assert (await resp.json())["userCtx"]["name"] == "alice"
    assert await status(http, "GET", f"{b.url}/{DB}/", cookie) == 200
    assert await status(http, "DELETE", f"{b.url}/_session", cookie) == 200
    assert await status(http, "GET", f"{a.url}/{DB}/", cookie) == 401


async def test_a_user_disabled_on_one_instance_is_refused_by_the_other_at_once(
    pair: list[ServerProcess], http: aiohttp.ClientSession
) -> None:
    a, b = pair
    cookie = await login(http, a, "alice")
    assert await status(http, "GET", f"{b.url}/{DB}/", headers=basic("alice")) == 200
    assert await status(http, "GET", f"{b.url}/{DB}/", cookie) == 200
    disable = f"{a.url}/api/v1/users/alice/disable"
    assert await status(http, "POST", disable, headers=basic("admin")) == 200
    assert await status(http, "GET", f"{b.url}/{DB}/", cookie) == 401
    assert await status(http, "GET", f"{b.url}/{DB}/", headers=basic("alice")) == 401
    b.cli("user", "enable", "alice")  # the CLI reaches the same accounts store
    assert await status(http, "GET", f"{a.url}/{DB}/", cookie) == 200
    assert await status(http, "GET", f"{b.url}/{DB}/", headers=basic("alice")) == 200


async def test_a_scope_changed_on_one_instance_applies_on_the_other_at_once(
    pair: list[ServerProcess], http: aiohttp.ClientSession
) -> None:
    a, b = pair
    doc = {"_id": "visit-a2", "place": "area-a2", "note": "x"}
    assert (
        await status(http, "PUT", f"{a.url}/{DB}/visit-a2", headers=basic("admin"), body=doc) == 201
    )
    cookie = await login(http, b, "alice")
    assert await status(http, "GET", f"{b.url}/{DB}/visit-a2", cookie) == 404
    places = {"places": ["area-a1", "area-a2"], "read_places": []}
    url = f"{a.url}/api/v1/users/alice/places"
    assert await status(http, "PUT", url, headers=basic("admin"), body=places) == 200
    assert await status(http, "GET", f"{b.url}/{DB}/visit-a2", cookie) == 200
    a.cli("user", "set-places", "alice", "--place", "area-a1")
    assert await status(http, "GET", f"{b.url}/{DB}/visit-a2", cookie) == 404
    # A moved place counts at once too: area-a2 under area-a1 is inside alice's scope.
    move = {"parent": "area-a1"}
    assert (
        await status(
            http, "PATCH", f"{b.url}/api/v1/places/area-a2", headers=basic("admin"), body=move
        )
        == 200
    )
    assert await status(http, "GET", f"{a.url}/{DB}/visit-a2", headers=basic("alice")) == 200


async def test_wrong_passwords_spread_over_two_instances_stop_at_the_limit(
    pair: list[ServerProcess], http: aiohttp.ClientSession
) -> None:
    a, b = pair
    guesses = [
        status(http, "GET", f"{pair[n % 2].url}/{DB}/", headers=basic("bob", f"guess-{n}"))
        for n in range(LIMIT * 4)
    ]
    answers = await asyncio.gather(*guesses)  # all at once, half through each instance
    assert (answers.count(401), answers.count(429)) == (LIMIT, LIMIT * 3)
    # The right password is limited too, on both (no session, no device: it could be a guess).
    for server in (a, b):
        body = {"name": "bob", "password": PASSWORD}
        assert await status(http, "POST", f"{server.url}/_session", body=body) == 429


async def test_changes_at_once_on_two_instances_keep_the_rules_across_documents(
    pair: list[ServerProcess], http: aiohttp.ClientSession
) -> None:
    """Two admins disabling each other, and two moves that together would loop, sent at
    once through A and B: one of each pair lands, the other is refused (the guard,
    sync.people_store.couchdb_guard), and an admin and a loop-free tree remain."""
    a, b = pair
    second = {"name": "admin2", "role": "admin", "password": PASSWORD}
    added = await status(http, "POST", f"{a.url}/api/v1/users", headers=basic("admin"), body=second)
    assert added == 201
    answers = await asyncio.gather(
        status(http, "POST", f"{a.url}/api/v1/users/admin2/disable", headers=basic("admin")),
        status(http, "POST", f"{b.url}/api/v1/users/admin/disable", headers=basic("admin2")),
    )
    assert sorted(answers) == [200, 409], answers
    left = "admin" if answers[0] == 200 else "admin2"  # the admin whose change landed
    answers = await asyncio.gather(
        status(
            http,
            "PATCH",
            f"{a.url}/api/v1/places/area-a1",
            headers=basic(left),
            body={"parent": "area-a2"},
        ),
        status(
            http,
            "PATCH",
            f"{b.url}/api/v1/places/area-a2",
            headers=basic(left),
            body={"parent": "area-a1"},
        ),
    )
    assert sorted(answers) == [200, 400], answers
    async with http.get(f"{b.url}/api/v1/places", headers=basic(left)) as resp:
        places = {p["id"]: p["parent"] for p in await resp.json()}
    assert "facility-a" in (places["area-a1"], places["area-a2"])  # still hangs from the tree


async def test_with_the_bound_a_disable_applies_here_at_once_and_there_within_it(
    bounded_pair: list[ServerProcess], http: aiohttp.ClientSession
) -> None:
    a, b = bounded_pair
    for server in (a, b):  # each has read alice a moment ago
        assert await status(http, "GET", f"{server.url}/{DB}/", headers=basic("alice")) == 200
    disable = f"{a.url}/api/v1/users/alice/disable"
    assert await status(http, "POST", disable, headers=basic("admin")) == 200
    assert await status(http, "GET", f"{a.url}/{DB}/", headers=basic("alice")) == 401
    seen = []
    for _ in range(int(CACHE_SECONDS * 10) + 100):  # the bound, and room for a slow machine
        seen.append(await status(http, "GET", f"{b.url}/{DB}/", headers=basic("alice")))
        if seen[-1] == 401:
            break
        await asyncio.sleep(0.1)
    assert seen[-1] == 401, seen
    assert set(seen) <= {200, 401}, seen
