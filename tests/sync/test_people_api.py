"""People and places change through the admin API, and count from the next request.

Disable, enable and remove a user; rename, move and retire a place (``sync.people``).
Every test drives the real app on a real SQLite file; the organisation is the one
in ``sync_fixtures``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import structlog
from audit_disk import on_disk
from hypothesis import given
from hypothesis import strategies as st
from served import fuzz_settings, json_junk, served
from sync_fixtures import PASSWORD, Api, Client, as_user
from yarl import URL

from sync.app import create_app
from sync.cli import configure_logging
from sync.config import Config

A1, A2 = "area-a1", "area-a2"
DISABLED = "The account 'alice' is disabled"


async def login(client: Client, name: str) -> dict[str, str]:
    """A session cookie as a header (kept out of the client's jar)."""
    response = await client.post("/_session", json={"name": name, "password": PASSWORD})
    assert response.status == 200, await response.text()
    cookie = response.cookies["AuthSession"].value
    client.session.cookie_jar.clear()
    return {"Cookie": f"AuthSession={cookie}"}


async def get(client: Client, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    response = await client.get(path, headers=headers)
    return response.status, await response.json()


def ids(body: dict[str, Any]) -> list[str]:
    return sorted(row["id"] for row in body["results"])


# -- users ---------------------------------------------------------------------------------
async def test_a_disabled_users_session_and_password_stop_at_once_and_work_again(
    api: Api, client: Client
) -> None:
    cookie = await login(client, "alice")
    assert (await get(client, "/health", cookie))[0] == 200
    status, user = await api.call("POST", "/api/v1/users/alice/disable")
    assert status == 200
    assert user == {
        "name": "alice",
        "role": "chw",
        "places": [A1],
        "read_places": [],
        "status": "disabled",
    }
    for headers in (cookie, as_user("alice")):
        status, body = await get(client, "/health", headers)
        assert status == 401 and body["reason"].startswith(DISABLED), body
    refused = await client.post("/_session", json={"name": "alice", "password": PASSWORD})
    assert refused.status == 401 and (await refused.json())["reason"].startswith(DISABLED)
    # A wrong password is still only a wrong password: it learns nothing of the account.
    wrong = await client.get("/health", headers=as_user("alice", "not the password"))
    assert (await wrong.json())["reason"] == "Name or password is incorrect."

    status, user = await api.call("POST", "/api/v1/users/alice/enable")
    assert status == 200 and user["status"] == "active"
    assert (await get(client, "/health", cookie))[0] == 200  # the same session, again
    assert (await get(client, "/health", as_user("alice")))[0] == 200


async def test_a_removed_user_is_gone_for_good_but_their_documents_stay(
    api: Api, client: Client
) -> None:
    await api.bulk([{"_id": "visit-1", "place": A1, "type": "visit"}], user="alice")
    cookie = await login(client, "alice")
    status, user = await api.call("DELETE", "/api/v1/users/alice")
    assert status == 200 and user["status"] == "removed" and user["places"] == [A1]
    status, body = await get(client, "/health", cookie)
    assert status == 401 and body["reason"] == "Your session has ended; log in again."
    status, body = await get(client, "/health", as_user("alice"))
    assert status == 401 and body["reason"] == "Name or password is incorrect."
    assert (await api.call("GET", "/health/visit-1", "sam"))[0] == 200
    assert (await api.call("POST", "/api/v1/users/alice/enable"))[0] == 409
    again = {"name": "alice", "role": "chw", "password": "another password", "places": [A2]}
    status, body = await api.call("POST", "/api/v1/users", "admin", again)
    assert status == 409 and "never given out again" in body["reason"]
    listed = {u["name"]: u["status"] for u in (await api.call("GET", "/api/v1/users"))[1]}
    assert listed == {"admin": "active", "alice": "removed", "bob": "active", "sam": "active"}


async def test_a_disabled_users_open_long_poll_ends_when_they_are_disabled(
    api: Api, client: Client
) -> None:
    """The poll would otherwise wait its full minute: being woken is what ends it."""
    since = (await api.call("GET", "/health/_changes", "alice"))[1]["last_seq"]
    poll = asyncio.create_task(
        api.call("GET", "/health/_changes", "alice", feed="longpoll", since=since, timeout="60000")
    )
    await asyncio.sleep(0.2)
    assert not poll.done()
    assert (await api.call("POST", "/api/v1/users/alice/disable"))[0] == 200
    status, body = await asyncio.wait_for(poll, 30)
    assert status == 200 and body["results"] == []
    assert (await api.call("GET", "/health/_changes", "alice"))[0] == 401


async def test_only_admins_change_people_and_places(api: Api, client: Client) -> None:
    changes = [
        ("POST", "/api/v1/users/bob/disable", None),
        ("POST", "/api/v1/users/bob/enable", None),
        ("DELETE", "/api/v1/users/bob", None),
        ("PATCH", f"/api/v1/places/{A2}", {"name": "Area two"}),
        ("POST", f"/api/v1/places/{A2}/retire", None),
        ("GET", f"/api/v1/places/{A2}", None),
    ]
    for method, path, body in changes:
        for user in ("sam", "alice"):
            status, answer = await api.call(method, path, user, body)
            assert status == 403 and answer["error"] == "forbidden", (method, path, user)
        response = await client.request(method, path, json=body)
        assert response.status == 401, (method, path)
    for user in ("sam", "alice"):  # who asks is checked before what they sent
        assert (await api.call("PATCH", f"/api/v1/places/{A2}", user, {"id": 1}))[0] == 403
    assert (await client.patch(f"/api/v1/places/{A2}", data=b"{")).status == 401
    assert (await api.call("GET", "/api/v1/users/bob"))[1]["status"] == "active"
    assert (await api.call("GET", f"/api/v1/places/{A2}"))[1] == {
        "id": A2,
        "parent": "facility-a",
        "name": A2,
        "retired": None,
    }


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "reason"),
    [
        ("POST", "/api/v1/users/nobody/disable", None, 404, "user 'nobody' does not exist"),
        ("POST", "/api/v1/users/nobody/enable", None, 404, "user 'nobody' does not exist"),
        ("DELETE", "/api/v1/users/nobody", None, 404, "user 'nobody' does not exist"),
        ("POST", "/api/v1/users/bob/enable", None, 409, "user 'bob' is not disabled"),
        ("DELETE", "/api/v1/users/admin", None, 409, "it is the last active admin"),
        ("POST", "/api/v1/users/admin/disable", None, 409, "it is the last active admin"),
        ("PATCH", "/api/v1/places/nowhere", {"name": "x"}, 404, "place 'nowhere' does not"),
        ("POST", "/api/v1/places/nowhere/retire", None, 404, "place 'nowhere' does not"),
        ("GET", "/api/v1/places/nowhere", None, 404, "place 'nowhere' does not exist"),
        ("PATCH", f"/api/v1/places/{A2}", {}, 400, 'give "name"'),
        ("PATCH", f"/api/v1/places/{A2}", {"id": "x"}, 400, "cannot change id of a place"),
        ("PATCH", f"/api/v1/places/{A2}", {"name": 7}, 400, "name must be a string"),
        ("PATCH", f"/api/v1/places/{A2}", {"name": " "}, 400, "invalid place name"),
        ("PATCH", f"/api/v1/places/{A2}", {"name": "a\x00b"}, 400, "invalid place name"),
        ("PATCH", f"/api/v1/places/{A2}", {"parent": 3}, 400, "parent must be a place id"),
        ("PATCH", f"/api/v1/places/{A2}", {"parent": "mars"}, 404, "parent place 'mars'"),
        ("PATCH", "/api/v1/places/district-a", {"parent": A1}, 400, "the tree would loop"),
        ("PATCH", "/api/v1/places/district-a", {"parent": "district-a"}, 400, "would loop"),
        ("PATCH", f"/api/v1/places/{A2}", {"parent": "facility-a"}, 409, "already under"),
        ("POST", f"/api/v1/places/{A1}/retire", None, 409, "still has users assigned (alice)"),
        ("POST", "/api/v1/places/facility-a/retire", None, 409, "active places below it"),
    ],
)
async def test_bad_changes_are_refused_with_a_specific_reason(
    api: Api, method: str, path: str, body: Any, status: int, reason: str
) -> None:
    got, answer = await api.call(method, path, "admin", body)
    assert got == status and reason in answer["reason"], answer


async def test_a_request_body_that_is_no_object_is_400(client: Client) -> None:
    response = await client.patch(f"/api/v1/places/{A2}", data=b"[1]", headers=as_user("admin"))
    assert response.status == 400


async def test_parallel_disables_change_the_user_once(api: Api, config: Config) -> None:
    assert (await api.call("GET", "/api/v1/users/bob"))[0] == 200  # the password, checked once
    answers = await asyncio.gather(
        *(api.call("POST", "/api/v1/users/bob/disable") for _ in range(20))
    )
    assert sorted(status for status, _ in answers) == [200] + [409] * 19
    assert len(on_disk(config.data_dir, "user_disable")) == 1


async def test_no_session_opened_while_a_user_is_disabled_outlives_it(
    api: Api, client: Client
) -> None:
    """Logins racing a disable: whatever session they got opens nothing afterwards."""

    async def log_in() -> str | None:
        response = await client.post("/_session", json={"name": "bob", "password": PASSWORD})
        return response.cookies["AuthSession"].value if response.status == 200 else None

    logins = [asyncio.create_task(log_in()) for _ in range(8)]
    assert (await api.call("POST", "/api/v1/users/bob/disable"))[0] == 200
    cookies = [c for c in await asyncio.gather(*logins) if c is not None]
    client.session.cookie_jar.clear()
    for cookie in cookies:
        status, body = await get(client, "/health", {"Cookie": f"AuthSession={cookie}"})
        assert status == 401 and "disabled" in body["reason"]


# -- places --------------------------------------------------------------------------------
async def test_moving_a_place_changes_who_sees_it_on_their_next_request(api: Api) -> None:
    await api.bulk([{"_id": "in-a2", "place": A2}, {"_id": "in-b1", "place": "area-b1"}])
    assert await _seen(api, "bob") == ["in-b1"]
    assert "in-a2" in await _seen(api, "sam")
    checkpoint = (await api.call("GET", "/health/_changes", "bob"))[1]["last_seq"]

    status, place = await api.call("PATCH", f"/api/v1/places/{A2}", "admin", {"parent": "area-b1"})
    assert status == 200 and place["parent"] == "area-b1"
    assert await _seen(api, "bob") == ["in-a2", "in-b1"]  # bob's area now holds area-a2
    # bob's phone syncs on from its checkpoint: the older document of the new place comes too
    status, since = await api.call("GET", "/health/_changes", "bob", since=checkpoint)
    assert status == 200 and ids(since) == ["in-a2"]
    assert (await api.call("GET", "/health/in-a2", "bob"))[0] == 200
    assert (await api.bulk([{"_id": "new-in-a2", "place": A2}], user="bob"))[0].get("ok")
    # sam reads district-b but captures only district-a: he reads area-a2, no longer writes
    refused = await api.bulk([{"_id": "sam-in-a2", "place": A2}], user="sam")
    assert refused[0]["error"] == "forbidden"

    status, place = await api.call("PATCH", f"/api/v1/places/{A2}", "admin", {"parent": None})
    assert status == 200 and place["parent"] is None
    assert await _seen(api, "bob") == ["in-b1"]
    assert (await api.call("GET", "/health/in-a2", "bob"))[0] == 404
    assert (await api.call("GET", "/health/in-a2", "sam"))[0] == 404


async def _seen(api: Api, user: str) -> list[str]:
    status, body = await api.call("GET", "/health/_changes", user)
    assert status == 200, body
    return ids(body)


async def test_rename_and_move_in_one_patch_are_audited_with_before_and_after(
    api: Api, config: Config
) -> None:
    body = {"name": "Riverside", "parent": "district-b"}
    status, place = await api.call("PATCH", f"/api/v1/places/{A2}", "admin", body)
    assert status == 200
    assert place == {"id": A2, "parent": "district-b", "name": "Riverside", "retired": None}
    assert (await api.call("GET", "/api/v1/places"))[1][1]["name"] == "Riverside"
    assert [(r[0], r[2], r[5]) for r in on_disk(config.data_dir, "place_rename", "place_move")] == [
        ("admin", "place_rename", f"place {A2}: name '{A2}' -> 'Riverside'"),
        ("admin", "place_move", f"place {A2}: parent facility-a -> district-b"),
    ]


async def test_a_retired_place_keeps_its_documents_readable_and_takes_no_more(
    api: Api, config: Config
) -> None:
    await api.bulk([{"_id": "old", "place": A2, "n": 1}])
    status, place = await api.call("POST", f"/api/v1/places/{A2}/retire")
    assert status == 200 and place["retired"] is not None
    assert (await api.call("GET", "/health/old", "sam"))[0] == 200
    rev = (await api.call("GET", "/health/old", "admin"))[1]["_rev"]
    for user in ("sam", "admin"):
        refused = await api.bulk([{"_id": f"new-{user}", "place": A2}], user=user)
        assert refused[0]["error"] == "forbidden" and "retired" in refused[0]["reason"]
    edit = await api.bulk([{"_id": "old", "_rev": rev, "place": A2, "n": 2}], user="sam")
    assert edit[0]["error"] == "forbidden"
    moved_out = await api.bulk([{"_id": "old", "_rev": rev, "place": "area-a1", "n": 2}], "sam")
    assert moved_out[0].get("ok"), moved_out
    status, body = await api.call("PUT", "/api/v1/users/bob/places", "admin", {"places": [A2]})
    assert status == 409 and "retired" in body["reason"]
    status, body = await api.call("POST", "/api/v1/places", "admin", {"id": "x", "parent": A2})
    assert status == 409 and "retired" in body["reason"]
    status, body = await api.call("POST", f"/api/v1/places/{A2}/retire")
    assert status == 409 and "already retired" in body["reason"]
    status, body = await api.call("PATCH", "/api/v1/places/area-b1", "admin", {"parent": A2})
    assert status == 409 and "retired" in body["reason"]
    assert [(r[2], r[5]) for r in on_disk(config.data_dir, "place_retire")] == [
        ("place_retire", f"place {A2}: active -> retired")
    ]


async def test_user_changes_are_audited_with_before_and_after(api: Api, config: Config) -> None:
    await api.call("POST", "/api/v1/users/bob/disable")
    await api.call("POST", "/api/v1/users/bob/enable")
    await api.call("DELETE", "/api/v1/users/bob")
    rows = on_disk(config.data_dir, "user_disable", "user_enable", "user_remove")
    assert [(r[0], r[2], r[5]) for r in rows] == [
        ("admin", "user_disable", "user bob: active -> disabled"),
        ("admin", "user_enable", "user bob: disabled -> active"),
        ("admin", "user_remove", "user bob: active -> removed, 0 session(s) ended"),
    ]


# -- log events ----------------------------------------------------------------------------
@pytest.fixture
def sink() -> Iterator[io.StringIO]:
    """The server's real logging set-up, writing to a buffer; put back afterwards."""
    root, access = logging.getLogger(), logging.getLogger("aiohttp.access")
    handlers, level = root.handlers[:], root.level
    access.disabled = True
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    yield stream
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers[:], root.level = handlers, level
    access.disabled = False


async def test_each_change_is_a_log_event_without_place_names(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config, sink: io.StringIO
) -> None:
    served = await aiohttp_client(create_app(config))
    admin = as_user("admin")
    for method, path, body in (
        ("POST", "/api/v1/users/bob/disable", None),
        ("POST", "/api/v1/users/bob/enable", None),
        ("DELETE", "/api/v1/users/bob", None),
        ("PATCH", f"/api/v1/places/{A2}", {"name": "Mama Ngina Village", "parent": "country"}),
        ("POST", f"/api/v1/places/{A2}/retire", None),
    ):
        response = await served.request(method, path, json=body, headers=admin)
        assert response.status == 200, await response.text()
    events = [json.loads(line) for line in sink.getvalue().splitlines() if line.strip()]
    said = [
        (e["event"], e.get("user"), e.get("place"), e.get("parent"), e["by"])
        for e in events
        if "by" in e
    ]
    assert said == [
        ("user_disabled", "bob", None, None, "admin"),
        ("user_enabled", "bob", None, None, "admin"),
        ("user_removed", "bob", None, None, "admin"),
        ("place_moved", "admin", A2, "country", "admin"),
        ("place_renamed", "admin", A2, None, "admin"),
        ("place_retired", "admin", A2, None, "admin"),
    ]
    assert all(e.get("request_id") for e in events if "by" in e)
    assert "Mama Ngina" not in sink.getvalue()


# -- hostile input -------------------------------------------------------------------------
PEOPLE_ROUTES = [
    ("POST", "/api/v1/users/{}/disable"),
    ("POST", "/api/v1/users/{}/enable"),
    ("DELETE", "/api/v1/users/{}"),
    ("GET", "/api/v1/places/{}"),
    ("PATCH", "/api/v1/places/{}"),
    ("POST", "/api/v1/places/{}/retire"),
]
NAMES = st.one_of(
    st.sampled_from(["alice", "bob", "admin", "area-a2", "facility-a", "district-a", "country"]),
    st.text(min_size=1, max_size=12),
)
PATCHES = st.one_of(
    st.fixed_dictionaries(
        {}, optional={"name": json_junk(12, words=NAMES), "parent": json_junk(12, words=NAMES)}
    ),
    json_junk(12, keys=st.sampled_from(["name", "parent", "id"]), words=NAMES),
)


def test_no_people_or_place_change_is_a_server_error(config: Config) -> None:
    """Junk names, ids and bodies, as an admin, a supervisor and a CHW: never a 5xx, and
    the tree never loops whatever was moved where."""
    with served(create_app(config)) as app:

        @fuzz_settings(150)
        @given(st.sampled_from(PEOPLE_ROUTES), NAMES, PATCHES, st.sampled_from(["admin", "sam"]))
        def call(route: tuple[str, str], name: str, body: Any, user: str) -> None:
            method, template = route
            url = URL(template.format(quote(name, safe="")), encoded=True)
            headers = {**as_user(user), "Content-Type": "application/json"}
            data = orjson.dumps(body) if method == "PATCH" else None
            response = app.run(app.client.request(method, url, data=data, headers=headers))
            text = app.run(response.text())
            assert response.status < 500, (response.status, text, method, url, body)
            places = app.run(app.client.get("/api/v1/places", headers=as_user("admin")))
            _no_loop(app.run(places.json()))

        call()


def _no_loop(places: list[dict[str, Any]]) -> None:
    parent = {p["id"]: p["parent"] for p in places}
    for start in parent:
        seen, current = set(), start
        while current is not None:
            assert current not in seen, f"the tree loops through {current}"
            seen.add(current)
            current = parent.get(current)
