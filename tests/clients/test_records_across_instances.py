"""Issue 11, point 1: refused records and sync activity are shared by every instance.

Two ``fieldsync serve`` processes, each with its own data dir copied from one
template, on one CouchDB (pouchdb-server in CI, a real CouchDB with
FIELDSYNC_TEST_COUCHDB_URL).  Refusals live in ``<prefix>refusals``
(sync.refusals.couchdb) and day counters in ``<prefix>activity``
(sync.activity.couchdb), so a supervisor behind a load balancer sees the same
lists whichever instance answers:

- a record refused through A is listed by ``GET /api/v1/refusals`` on B, its sealed
  body opens on B's page, and the same refused revision pushed again through B
  only raises its count;
- no refused body is in CouchDB in plaintext;
- syncs and documents sent through A and through B both count in
  ``GET /api/v1/workers`` on either instance.

Each instance writes behind the answer (refusals within a moment, activity every
5 s); reading the list on an instance first writes what *that* instance holds, so
the test asks A before B instead of waiting.
"""

from __future__ import annotations

import base64
import shutil
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import pytest
from couchdb_server import couch_request
from realserver import DB, PASSWORD, ServerProcess, servers_from

from sync.auth import COOKIE
from sync.keys import load_master_key


@pytest.fixture
def pair(
    tmp_path: Path, org_data: Path, couchdb_url: str, couch_prefix: str
) -> Iterator[list[ServerProcess]]:
    """Two servers with the same users, places and master key, on one CouchDB."""
    template = tmp_path / "template"
    shutil.copytree(org_data, template)
    load_master_key(template / "master.key", create=True)
    env = {
        "FIELDSYNC_COUCHDB_URL": couchdb_url,
        "FIELDSYNC_COUCHDB_PREFIX": couch_prefix,
        "FIELDSYNC_REQUIRE_ENROLMENT": "0",
    }
    with servers_from(template, tmp_path, env) as servers:
        yield servers


def basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


async def put(
    http: aiohttp.ClientSession, server: ServerProcess, user: str, doc: dict[str, Any]
) -> int:
    url = f"{server.url}/{DB}/{doc['_id']}"
    async with http.put(url, json=doc, headers=basic(user)) as resp:
        await resp.read()
        return resp.status


async def get_json(
    http: aiohttp.ClientSession, server: ServerProcess, where: str, user: str = "sam"
) -> Any:
    async with http.get(f"{server.url}{where}", headers=basic(user)) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def refusals(http: aiohttp.ClientSession, server: ServerProcess) -> dict[str, Any]:
    body = await get_json(http, server, "/api/v1/refusals")
    return {r["doc_id"]: r for r in body["refusals"]}


async def test_a_refusal_through_one_instance_is_listed_and_counted_on_the_other(
    pair: list[ServerProcess], http: aiohttp.ClientSession, couchdb_url: str, couch_prefix: str
) -> None:
    a, b = pair
    marker = f"marker-{uuid.uuid4().hex}"
    elsewhere = {"_id": "elsewhere-1", "place": "area-b1", "note": marker}
    assert await put(http, a, "alice", elsewhere) == 403
    assert set(await refusals(http, a)) == {"elsewhere-1"}  # A has written it

    on_b = await refusals(http, b)
    assert set(on_b) == {"elsewhere-1"}
    refused = on_b["elsewhere-1"]
    assert (refused["worker"], refused["reason"], refused["count"]) == ("alice", "outside_scope", 1)

    assert await put(http, b, "alice", elsewhere) == 403  # the same revision, through B
    assert (await refusals(http, b))["elsewhere-1"]["count"] == 2
    assert (await refusals(http, a))["elsewhere-1"]["count"] == 2

    # The sealed body opens on the other instance's page (shared data key) ...
    async with http.post(f"{b.url}/_session", json={"name": "sam", "password": PASSWORD}) as r:
        assert r.status == 200
        cookie = r.cookies[COOKIE].value
    page = f"{b.url}/supervisor/refusals/{refused['id']}"
    async with http.get(page, headers={"Cookie": f"{COOKIE}={cookie}"}) as resp:
        assert resp.status == 200
        assert marker in await resp.text()
    # ... and is nowhere in CouchDB in plaintext: neither a field nor its attachment.
    db = f"/{couch_prefix}refusals"
    status, listing = couch_request(couchdb_url, "GET", f"{db}/_all_docs?include_docs=true")
    assert status == 200
    docs = [row["doc"] for row in listing["rows"] if not row["id"].startswith("_design/")]
    assert len(docs) == 1 and marker not in str(docs)
    attachment = f"{db}/{quote(docs[0]['_id'], safe='')}/body"
    assert marker.encode() not in _raw(couchdb_url, attachment)


def _raw(url: str, where: str) -> bytes:
    """An attachment's bytes (couch_request decodes JSON; this one is binary)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    request = urllib.request.Request(urlunsplit((parts.scheme, netloc, where, "", "")))
    if parts.username:
        token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        data: bytes = response.read()
    return data


async def test_syncs_through_both_instances_count_in_the_workers_list_on_either(
    pair: list[ServerProcess], http: aiohttp.ClientSession
) -> None:
    a, b = pair
    for number, server in enumerate((a, a, b), start=1):
        doc = {"_id": f"visit-{number}", "place": "area-a1", "note": "seen"}
        assert await put(http, server, "alice", doc) == 201
    for server in (a, b):  # each instance writes what it counted when asked
        await get_json(http, server, "/api/v1/workers")
    for server in (a, b):
        body = await get_json(http, server, "/api/v1/workers")
        [alice] = [w for w in body["workers"] if w["name"] == "alice"]
        assert alice["received_7d"] == 3
        assert alice["syncs_7d"] == 2  # one session on each instance
