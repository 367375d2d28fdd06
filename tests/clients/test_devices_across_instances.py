"""Issue 11, points 3 and 7 for devices: the phone inventory is shared by every instance.

Two ``fieldsync serve`` processes, each with its own data dir copied from one
template, on one CouchDB (pouchdb-server in CI, a real CouchDB with
FIELDSYNC_TEST_COUCHDB_URL).  Devices, codes, tokens and the refusal counters
live in ``<prefix>devices`` (device_registry.couchdb), so:

- a phone enrolled through A syncs, with a real PouchDB, through B;
- a phone marked lost on A (or stolen with ``fieldsync device mark`` next to B) is
  refused on its very next request through either;
- a supervisor page's form shown by A is accepted by B (one CSRF secret, sealed
  in CouchDB, though each data dir has its own);
- refused attempts of one phone spread over A and B stop at the configured total
  (10 in 10 minutes, ``device_registry.guard.DEFAULT_LIMITS``), not twice that.
"""

from __future__ import annotations

import base64
import re
import shutil
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import aiohttp
import pytest
from pouch import PouchDriver, PouchError
from realserver import DB, PASSWORD, Admin, ServerProcess, free_port, make_docs

from device_registry.guard import DEFAULT_LIMITS
from sync.store.schema import db_path

TOKEN = "X-Device-Token"
IMEI = "490154203237518"
LIMIT = DEFAULT_LIMITS["device"].failures


@pytest.fixture
def pair(
    tmp_path: Path, org_data: Path, couchdb_url: str, couch_prefix: str
) -> Iterator[list[ServerProcess]]:
    """Two servers started from one template, on one CouchDB (enrolment required)."""
    env = {"FIELDSYNC_COUCHDB_URL": couchdb_url, "FIELDSYNC_COUCHDB_PREFIX": couch_prefix}
    template = tmp_path / "template"
    shutil.copytree(org_data, template)
    with ExitStack() as stack:
        servers = []
        for number in (1, 2):
            data = tmp_path / f"data{number}"
            shutil.copytree(template, data)
            with closing(sqlite3.connect(db_path(data))) as conn, conn:  # each its own secret
                conn.execute("DELETE FROM meta WHERE key='device_registry_secret'")
            server = ServerProcess(data, free_port(), tmp_path / f"server{number}.log", env)
            server.start()
            stack.callback(server.stop)
            servers.append(server)
        yield servers


def _basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
async def admins(pair: list[ServerProcess]) -> AsyncIterator[list[Admin]]:
    async with aiohttp.ClientSession(headers=_basic("admin")) as session:
        yield [Admin(session, server) for server in pair]


async def _enrolled_through(admin: Admin, server: ServerProcess) -> str:
    """Add A1 for alice, issue a code and enrol as her app, all through ``server``."""
    body = {"serial": "A1", "imei": IMEI, "worker": "alice"}
    async with admin.session.post(f"{server.url}/api/v1/devices", json=body) as resp:
        assert resp.status == 201, await resp.text()
    async with admin.session.post(f"{server.url}/api/v1/devices/A1/enrolment-code") as resp:
        code = (await resp.json())["code"]
    async with (
        aiohttp.ClientSession(headers=_basic("alice")) as app,
        app.post(
            f"{server.url}/api/v1/devices/enroll", json={"code": code, "serial": "A1"}
        ) as resp,
    ):
        body = await resp.json()
        assert resp.status == 201, body
    return str(body["device_token"])


async def _changes(server: ServerProcess, token: str) -> int:
    headers = {**_basic("alice"), TOKEN: token}
    async with (
        aiohttp.ClientSession(headers=headers) as app,
        app.get(f"{server.url}/{DB}/_changes") as resp,
    ):
        await resp.read()
        return resp.status


async def test_a_phone_enrolled_on_one_instance_syncs_through_the_other_until_lost_on_the_first(
    pair: list[ServerProcess], admins: list[Admin], pouch: PouchDriver
) -> None:
    a, b = pair
    token = await _enrolled_through(admins[0], a)
    await admins[0].bulk_docs(make_docs("area-a1", 3, "a1"))
    remote = b.remote("alice", **{TOKEN: token})
    result = await pouch.call("replicate", source=remote, target="phone")
    assert (result["status"], result["docs_written"]) == ("complete", 3)

    async with admins[0].session.post(
        f"{a.url}/api/v1/devices/A1/status", json={"status": "lost", "reason": "on a bus"}
    ) as resp:
        assert resp.status == 200, await resp.text()
    with pytest.raises(PouchError) as refused:
        await pouch.call("replicate", source=remote, target="phone")
    assert refused.value.status == 401
    async with admins[1].session.get(f"{b.url}/api/v1/devices/A1") as resp:  # B knows why
        device = await resp.json()
    assert device["status"] == "lost"
    assert [h["action"] for h in device["history"]][:2] == ["lost", "enrolled"]


async def test_refusals_of_one_phone_over_both_instances_stop_at_the_limit(
    pair: list[ServerProcess], admins: list[Admin]
) -> None:
    a, b = pair
    token = await _enrolled_through(admins[0], a)
    assert await _changes(b, token) == 200
    b.cli("device", "mark", "A1", "stolen", "--reason", "taken")  # the CLI next to B
    statuses = [await _changes((a, b)[n % 2], token) for n in range(LIMIT + 2)]
    # Per-instance counters would allow LIMIT on each (2 x LIMIT in all); shared: LIMIT.
    assert statuses == [401] * LIMIT + [429, 429]
    for server in (b, a):  # each listing first writes what its instance still holds
        async with admins[0].session.get(f"{server.url}/api/v1/devices/_refusals") as resp:
            refusals = (await resp.json())["refusals"]
    assert {r["serial"] for r in refusals} == {"A1"}
    assert len(refusals) == LIMIT + 2  # recorded by both instances, listed by either


async def test_a_form_shown_by_one_instance_is_accepted_by_the_other(
    pair: list[ServerProcess],
) -> None:
    a, b = pair
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as browser:
        async with browser.get(f"{a.url}/supervisor/login") as page:
            nonce = page.cookies["fieldsync_csrf"].value
            found = re.search(r'name="csrf" value="([^"]+)"', await page.text())
        assert found is not None
        form = {"name": "sam", "password": PASSWORD, "csrf": found.group(1)}
        async with browser.post(
            f"{b.url}/supervisor/login",
            data=form,
            headers={"Cookie": f"fieldsync_csrf={nonce}"},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303, await resp.text()
