"""The CouchDB backend from the outside: 503 while CouchDB is away, and no plaintext in CouchDB.

Issue 10, points 1 and 3.  The app runs in-process on the CouchDB backend
(pouchdb-server in CI, ``FIELDSYNC_TEST_COUCHDB_URL`` for a real CouchDB), behind
a TCP forwarder the test can cut: that is CouchDB going away for fieldsync.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from couchdb_server import couch_request
from couchdb_server import db_path as couch_path
from sync_fixtures import PASSWORD, Api, as_user, until_served
from tcp_cut import TcpCut, through

from sync import cli
from sync.app import create_app
from sync.auth import LOGIN_LIMITS
from sync.config import Config, ConfigError, Endpoint, from_env
from sync.datakeys.couchdb import doc_id as key_doc_id
from sync.errors import (
    Conflict,
    NotFound,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
    TooLarge,
)
from sync.people_store import backends
from sync.people_store.couchdb import CouchAccounts
from sync.replication.routes import REPLICATION
from sync.store.couchdb import layout
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.store import CouchStore
from sync.store.schema import db_path

Client = TestClient[Any, Any]


@pytest.fixture
def couch_config(config: Config, couchdb_url: str, couch_prefix: str, cut: TcpCut) -> Config:
    return replace(
        config,
        couchdb_url=through(couchdb_url, cut),
        couchdb_prefix=couch_prefix,
        couchdb_timeout_seconds=2.0,
    )


@pytest.fixture
async def couch_api(aiohttp_client: Callable[..., Awaitable[Client]], couch_config: Config) -> Api:
    return await until_served(Api(await aiohttp_client(create_app(couch_config))))


async def test_while_couchdb_is_away_every_route_answers_503_and_then_recovers(
    couch_api: Api, cut: TcpCut, couchdb_url: str
) -> None:
    api = couch_api
    await api.bulk([{"_id": "p1", "place": "area-a1", "name": "Jane"}], user="alice")
    status, saved = await api.call("PUT", "/health/_local/cp", "alice", {"last_seq": "v1-x"})
    assert status == 201, saved
    await cut.cut()
    attempts = [
        ("GET", "/health", None),
        ("GET", "/health/_changes", None),
        ("GET", "/health/p1", None),
        ("POST", "/health/_bulk_docs", {"docs": [{"_id": "p2", "place": "area-a1"}]}),
        ("POST", "/health/_revs_diff", {"p1": ["9-x"]}),
        ("PUT", "/health/_local/cp", {"_rev": saved["rev"], "last_seq": "v1-broken"}),
        ("GET", "/health/_all_docs", None),
    ]
    password = urlsplit(couchdb_url).password or "no password"
    for method, where, body in attempts:
        status, answer = await api.call(method, where, "alice", body)
        assert status == 503, (method, where, status, answer)
        assert answer["error"] == "service_unavailable"
        assert "CouchDB" in answer["reason"] and "cannot be reached" in answer["reason"]
        assert password not in answer["reason"]
    await cut.restore()
    status, doc = await api.call("GET", "/health/p1", "alice")
    assert (status, doc["name"]) == (200, "Jane")
    status, checkpoint = await api.call("GET", "/health/_local/cp", "alice")
    assert (status, checkpoint["last_seq"], checkpoint["_rev"]) == (200, "v1-x", saved["rev"])
    status, changes = await api.call("GET", "/health/_changes", "alice")
    assert [row["id"] for row in changes["results"]] == ["p1"]  # p2 was never written
    await api.bulk([{"_id": "p3", "place": "area-a1"}], user="alice")


async def test_a_long_poll_waiting_when_couchdb_goes_away_ends_and_the_next_answers_503(
    couch_api: Api, cut: TcpCut
) -> None:
    """A live phone's long poll has had its status line (heartbeats follow it), so it
    cannot turn into a 503 when CouchDB goes away: it ends with no changes where its last
    read found none, and the phone's next request gets the error. (It hung, the phone's
    live sync with it, until the connection dropped.)"""
    api = couch_api
    await api.bulk([{"_id": "p1", "place": "area-a1"}], user="alice")
    status, first = await api.call("GET", "/health/_changes", "alice")
    token = first["last_seq"]
    live = {"feed": "longpoll", "since": token, "heartbeat": "200", "timeout": "30000"}
    # The status line comes once a first read found nothing: from then on it is waiting.
    # (Cut before that, during the first read, the answer is a plain 503.)
    waiting = await asyncio.wait_for(
        api.client.get("/health/_changes", headers=as_user("alice"), params=live), 10
    )
    assert waiting.status == 200
    await cut.cut()
    ended = orjson.loads(await asyncio.wait_for(waiting.read(), 20))
    assert ended == {"results": [], "last_seq": token, "pending": 0}
    status, answer = await api.call("GET", "/health/_changes", "alice", **live)
    assert status == 503 and "cannot be reached" in answer["reason"], answer
    await cut.restore()
    poll = asyncio.create_task(api.call("GET", "/health/_changes", "alice", **live))
    await api.bulk([{"_id": "p2", "place": "area-a1"}], user="alice")
    status, answer = await asyncio.wait_for(poll, 20)
    assert status == 200 and [row["id"] for row in answer["results"]] == ["p2"], answer


async def test_the_servers_own_couchdb_databases_are_no_fieldsync_databases(
    couch_api: Api, couchdb_url: str, couch_prefix: str
) -> None:
    """An admin names a database "keys" (or "audit", ...): on CouchDB that name is where the
    server keeps its data keys (its audit trail, ...). It is not listed, not readable, not
    created over, and above all not deleted: a DELETE of ``/keys`` would have shredded
    every document, one of ``/audit`` erased the trail."""
    api = couch_api
    await api.bulk([{"_id": "p1", "place": "area-a1"}], user="alice")  # every store is open
    status, names = await api.call("GET", "/_all_dbs")
    assert (status, names) == (200, ["health"])
    own = ["accounts", "activity", "audit", "devices", "keys", "leases", "refusals", "sms"]
    _, before = couch_request(couchdb_url, "GET", "/_all_dbs")
    assert {couch_prefix + name for name in ("accounts", "audit", "keys")} <= set(before), before
    keys_db = couch_path(couch_prefix + "keys")
    keys_before = couch_request(couchdb_url, "GET", keys_db + "/_all_docs")[1]["rows"]
    assert keys_before  # the data keys are there
    for name in [*own, "patient_ids"]:  # made when first used: some are not there yet
        status, answer = await api.call("DELETE", f"/{name}")
        assert (status, answer["error"]) == (404, "not_found"), (name, answer)
        for where in (f"/{name}", f"/{name}/_all_docs", f"/{name}/_changes", f"/{name}/x"):
            status, answer = await api.call("GET", where)
            assert (status, answer["error"]) == (404, "not_found"), (where, answer)
        status, answer = await api.call("POST", f"/{name}/_bulk_docs", body={"docs": [{}]})
        assert status == 404, (name, answer)
        status, answer = await api.call("PUT", f"/{name}")
        assert (status, answer["error"]) == (400, "illegal_database_name"), (name, answer)
        assert f"'{name}' is reserved" in answer["reason"]
    _, after = couch_request(couchdb_url, "GET", "/_all_dbs")
    ours = [n for n in before if n.startswith(couch_prefix)]  # other tests may run meanwhile
    assert set(ours) <= set(after)  # none deleted (the server may have made more of its own)
    companions = {couch_prefix + name + end for name in own for end in ("$data", "$log")}
    assert not companions & set(after)  # no fieldsync database was made over one of them
    assert couch_request(couchdb_url, "GET", keys_db + "/_all_docs")[1]["rows"] == keys_before
    assert (await api.call("GET", "/health/p1", "alice"))[0] == 200


async def test_a_hung_couchdb_answers_503_timed_out(couch_api: Api, cut: TcpCut) -> None:
    cut.stall()
    await cut.cut()  # drop the pooled connections: the next ones hang
    await cut.restore()
    cut.stall()
    status, answer = await couch_api.call("GET", "/health/_changes", "alice")
    assert status == 503, answer
    assert "timed out" in answer["reason"]
    await cut.cut()
    await cut.restore()
    assert (await couch_api.call("GET", "/health/_changes", "alice"))[0] == 200


async def test_a_server_started_while_couchdb_is_away_serves_once_it_is_back(
    aiohttp_client: Callable[..., Awaitable[Client]], couch_config: Config, cut: TcpCut
) -> None:
    await cut.cut()
    api = Api(await aiohttp_client(create_app(couch_config)))
    status, answer = await api.call("GET", "/health", "alice")
    assert status == 503, answer
    await cut.restore()
    # The users reach CouchDB by the server's copy, retried every 2 s (people_store.backends):
    # until then alice's tries answer 503 "accounts are not ready yet", and none counts.
    for _ in range(60):
        status, answer = await api.call("GET", "/health", "alice")
        if status == 200:
            break
        await asyncio.sleep(0.5)
    assert status == 200, answer
    await api.bulk([{"_id": "p1", "place": "area-a1"}], user="alice")


async def test_logins_while_the_users_are_copied_in_answer_503_and_count_for_nothing(
    aiohttp_client: Callable[..., Awaitable[Client]],
    couch_config: Config,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Until a server has copied its data dir's users into CouchDB (CouchDB was away at its
    start), a name CouchDB lacks answers 503 "accounts are not ready yet": never a 401,
    which would count against the worker's login limit.  The test holds the copy back
    (as CouchDB away would), tries more logins than the limit allows, then lets it land."""
    let_through = asyncio.Event()
    adopt = CouchAccounts.adopt

    async def held_back(self: CouchAccounts, users: Any, places: Any) -> int:
        if not let_through.is_set():
            raise StoreUnavailable("held back by the test, as if CouchDB were away")
        return await adopt(self, users, places)

    monkeypatch.setattr(CouchAccounts, "adopt", held_back)
    monkeypatch.setattr(backends, "ADOPT_RETRY", 0.05)
    api = Api(await aiohttp_client(create_app(couch_config)))
    for n in range(LOGIN_LIMITS["user"].failures + 5):
        password = PASSWORD if n % 2 else "a wrong guess"
        login = await api.client.post("/_session", json={"name": "alice", "password": password})
        assert login.status == 503, await login.text()
        assert "accounts are not ready yet" in (await login.json())["reason"]
        status, answer = await api.call("GET", "/health", "alice")  # Basic, the same
        assert status == 503 and "accounts are not ready yet" in answer["reason"], answer
    let_through.set()
    for _ in range(200):
        status, answer = await api.call("GET", "/health", "alice")
        if status != 503:
            break
        await asyncio.sleep(0.05)
    assert status == 200, answer  # not 429: none of the tries counted
    login = await api.client.post("/_session", json={"name": "alice", "password": PASSWORD})
    assert login.status == 200, await login.text()
    wrong = await api.client.post("/_session", json={"name": "alice", "password": "wrong!!!"})
    assert wrong.status == 401  # once copied in, a wrong password counts again
    nobody = await api.client.post("/_session", json={"name": "nobody", "password": PASSWORD})
    assert nobody.status == 401  # and an unknown name is unknown


# -- the boundary maps every CouchDB answer to one of ours -------------------------
@pytest.fixture
async def stand_in(aiohttp_server: Callable[..., Awaitable[Any]]) -> AsyncIterator[str]:
    """An HTTP server that answers ``/status/N`` with status N and a CouchDB-shaped body."""

    async def answer(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        body = {"error": "some_error", "reason": f"reason {code}"}
        return web.json_response(body, status=code)

    app = web.Application()
    app.router.add_route("*", "/status/{code}", answer)
    server = await aiohttp_server(app)
    yield f"http://fieldsync:sekrit-pw@127.0.0.1:{server.port}"


MAPPED = [
    (400, StoreError, "refused"),
    (401, StoreUnavailable, "credentials"),
    (403, StoreUnavailable, "credentials"),
    (404, NotFound, "reason 404"),
    (409, Conflict, ""),
    (412, PreconditionFailed, "reason 412"),
    (413, TooLarge, "too large"),
    (429, StoreUnavailable, "429"),
    (500, StoreUnavailable, "500"),
    (503, StoreUnavailable, "503"),
]


@pytest.mark.parametrize(("code", "kind", "said"), MAPPED)
async def test_every_couchdb_status_becomes_one_of_our_errors(
    stand_in: str, code: int, kind: type[Exception], said: str
) -> None:
    client = CouchClient(Endpoint.parse(stand_in))
    try:
        with pytest.raises(kind) as raised:
            await client.json("GET", f"/status/{code}")
    finally:
        await client.close()
    assert type(raised.value) is kind
    assert said in str(raised.value)
    assert "sekrit-pw" not in str(raised.value)


async def test_a_refused_connection_is_503_without_the_credentials() -> None:
    client = CouchClient(Endpoint.parse("http://fieldsync:sekrit-pw@127.0.0.1:9"), timeout=2)
    try:
        with pytest.raises(StoreUnavailable, match="cannot be reached") as raised:
            await client.json("GET", "/")
    finally:
        await client.close()
    assert "sekrit-pw" not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1:5984", "127.0.0.1:5984", "http://127.0.0.1:5984/?q=1", "http://"],
)
def test_a_couchdb_url_that_cannot_work_is_refused_at_start(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^FIELDSYNC_COUCHDB_URL=.*: must "):
        from_env(env={"FIELDSYNC_COUCHDB_URL": url})


def test_credentials_come_from_the_url_or_their_own_settings() -> None:
    assert Endpoint.parse("http://a%40b:p%3Aw@127.0.0.1:5984/") == Endpoint(
        "http://127.0.0.1:5984", "a@b", "p:w"
    )
    assert Endpoint.parse("https://db.example.org", "admin", "pw") == Endpoint(
        "https://db.example.org", "admin", "pw"
    )
    config = from_env(env={"FIELDSYNC_COUCHDB_PASSWORD": "pw", "FIELDSYNC_CLOUDANT_APIKEY": "k"})
    assert "pw" not in repr(config) and "'k'" not in repr(config)


# -- CouchDB never sees plaintext ----------------------------------------------------
def _every_document(couchdb_url: str, prefix: str) -> list[tuple[str, str, dict[str, Any]]]:
    status, names = couch_request(couchdb_url, "GET", "/_all_dbs")
    assert status == 200
    found = []
    for name in (n for n in names if n.startswith(prefix)):
        where = path(name, "_all_docs") + "?include_docs=true&attachments=true&conflicts=true"
        status, answer = couch_request(couchdb_url, "GET", where)
        assert status == 200, answer
        found += [(name, row["id"], row["doc"]) for row in answer["rows"]]
    return found


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _decoded(text: str) -> bytes:
    """``text`` as base64 if it is base64, else as UTF-8."""
    if len(text) >= 8 and re.fullmatch(r"[A-Za-z0-9+/=_-]+", text):
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_")
        except (binascii.Error, ValueError):
            pass
    return text.encode()


async def test_couchdb_never_holds_a_byte_of_plaintext(
    couch_api: Api, couchdb_url: str, couch_prefix: str
) -> None:
    marker = "PHI-" + secrets.token_hex(12)
    photo = f"JPEG {marker} bytes".encode()
    attachment = {"content_type": "image/jpeg", "data": base64.b64encode(photo).decode()}
    mine = {"_id": "p1", "place": "area-a1", "name": marker, "_attachments": {"c.jpg": attachment}}
    await couch_api.bulk([mine], user="alice")
    await couch_api.bulk([{"_id": "form-1", "title": marker}], user="admin")
    status, _ = await couch_api.call("PUT", "/health/_local/cp", "alice", {"note": marker})
    assert status == 201
    status, back = await couch_api.call("GET", "/health/p1", "alice", attachments="true")
    assert (status, back["name"]) == (200, marker)  # stored, and readable through fieldsync
    assert base64.b64decode(back["_attachments"]["c.jpg"]["data"]) == photo

    documents = _every_document(couchdb_url, couch_prefix)
    assert len(documents) >= 6  # metas, bodies, the attachment, the checkpoint, log entries
    needles = [marker.encode(), marker.encode("utf-16-le"), quote(marker).encode()]
    for db, doc_id, doc in documents:
        for text in _strings(doc):
            for blob in (text.encode(), _decoded(text)):
                assert not any(n in blob for n in needles), (db, doc_id, text[:80])


async def test_a_document_too_big_for_couchdb_is_refused_alone(
    aiohttp_client: Callable[..., Awaitable[Client]], couch_config: Config
) -> None:
    """CouchDB answers 413 for a whole ``_bulk_docs`` when one document is over its limit."""
    config = replace(couch_config, couchdb_max_document_bytes=20_000)
    api = await until_served(Api(await aiohttp_client(create_app(config))))
    big = {"_id": "big", "place": "area-a1", "notes": "x" * 30_000}
    small = {"_id": "small", "place": "area-a1"}
    status, rows = await api.call("POST", "/health/_bulk_docs", "alice", {"docs": [big, small]})
    assert status == 201, rows
    assert rows[0]["id"] == "big" and rows[0]["error"] == "too_large"
    assert "FIELDSYNC_COUCHDB_MAX_DOCUMENT_BYTES" in rows[0]["reason"]
    assert rows[1]["id"] == "small" and "rev" in rows[1]
    assert (await api.call("GET", "/health/big", "alice"))[0] == 404
    assert (await api.call("GET", "/health/small", "alice"))[0] == 200


async def test_key_rotation_and_shredding_refuse_to_touch_keys_of_documents_in_couchdb(
    couch_api: Api, couch_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rotation deletes the key versions nothing in the data dir uses: with the documents
    in CouchDB that would be every key still sealing them."""
    await couch_api.bulk([{"_id": "p1", "place": "area-a1", "name": "Jane"}], user="alice")
    await couch_api.client.close()  # the server stops: the commands need its data dir
    with closing(sqlite3.connect(db_path(couch_config.data_dir))) as conn:
        keys_before = conn.execute("SELECT place, version, wrapped FROM data_keys").fetchall()
    data_dir = str(couch_config.data_dir)
    assert cli.main(["keys", "rotate", "--all", "--data-dir", data_dir]) == 1
    assert "cannot rotate the data keys: this server keeps its documents in CouchDB at" in (
        capsys.readouterr().err
    )
    shred = ["keys", "shred", "area-a1", "--confirm", "area-a1", "--data-dir", data_dir]
    assert cli.main(shred) == 1
    assert "cannot shred a place: this server keeps its documents in CouchDB" in (
        capsys.readouterr().err
    )
    with closing(sqlite3.connect(db_path(couch_config.data_dir))) as conn:
        assert conn.execute("SELECT place, version, wrapped FROM data_keys").fetchall() == (
            keys_before
        )
    assert keys_before == []  # the write above made area-a1's key, in CouchDB (shared)
    status, key = await asyncio.to_thread(
        couch_request,
        couch_config.couchdb_url or "", "GET", couch_path(couch_config.couchdb_prefix + "keys")
        + "/" + quote(key_doc_id("area-a1", 1), safe="")
    )  # fmt: skip
    assert status == 200 and key["wrapped"], key  # still there, untouched


async def test_an_expired_bearer_token_is_replaced_and_the_request_sent_again(
    aiohttp_server: Callable[..., Awaitable[Any]],
) -> None:
    """Cloudant: a 401 means the IAM token ran out early; fetch another, try once more."""
    seen: list[str] = []

    async def couch(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer token-2":
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response({"couchdb": "Welcome"})

    app = web.Application()
    app.router.add_get("/", couch)
    server = await aiohttp_server(app)
    tokens = iter(["token-1", "token-2", "token-3"])
    current = [next(tokens)]

    async def authorization() -> str:
        return f"Bearer {current[0]}"

    def invalidate() -> None:
        current[0] = next(tokens)

    client = CouchClient(
        Endpoint.parse(f"http://127.0.0.1:{server.port}"),
        authorization=authorization,
        invalidate=invalidate,
    )
    try:
        assert await client.json("GET", "/") == {"couchdb": "Welcome"}
        assert seen == ["Bearer token-1", "Bearer token-2"]
        current[0] = "revoked"
        with pytest.raises(StoreUnavailable, match="refused fieldsync's credentials"):
            await client.json("GET", "/")  # a second 401 in a row is not retried forever
    finally:
        await client.close()
    assert seen[2:] == ["Bearer revoked", "Bearer token-3"]


async def test_an_older_design_document_is_replaced_and_a_newer_one_kept(
    couch_config: Config, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> None:
    """Views change between versions: an instance starting on an older design document
    brings it up to its own, and leaves a newer fieldsync's alone (upgrades roll out one
    instance at a time)."""

    async def started() -> tuple[TestClient[Any, Any], CouchStore]:
        api = await until_served(Api(await aiohttp_client(create_app(couch_config))))
        store = api.client.app[REPLICATION].parts.store
        assert isinstance(store, CouchStore)
        return api.client, store

    client, store = await started()
    where = path(store._meta("health"), layout.DESIGN)
    current = await store.client.json("GET", where)
    assert current["fieldsync_version"] == layout.DESIGN_VERSION
    assert await store.ensure_design("health") == "current"
    first = {"counts": current["views"]["counts"]}  # as a first version left it
    old = {"_rev": current["_rev"], "language": "javascript", "views": first}
    await store.client.json("PUT", where, body=old)
    await client.close()
    client, store = await started()  # a restart on the older design document
    upgraded = await store.client.json("GET", where)
    assert upgraded["fieldsync_version"] == layout.DESIGN_VERSION
    assert sorted(upgraded["views"]) == sorted(layout.DESIGN_DOC["views"])
    newer = {**upgraded, "fieldsync_version": layout.DESIGN_VERSION + 1, "views": {}}
    await store.client.json("PUT", where, body=newer)
    assert await store.ensure_design("health") == "newer"
    assert (await store.client.json("GET", where))["views"] == {}
