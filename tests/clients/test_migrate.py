"""``fieldsync migrate`` (issue 11, point 9): an embedded deployment moved into CouchDB.

alice's phone (a real PouchDB 9, enrolled) pulls from the embedded store through
a counting proxy, so the test sees every ``_changes`` row the phone is sent.
The server stops; migrate copies the data dir into CouchDB (pouchdb-server in
CI); the server starts again on CouchDB at the same address.  The phone then
resumes from its checkpoint: its next pull is sent only what changed since,
not the whole set again.  Bodies, attachments, conflicts, logins, sessions,
patient IDs, SMS and the audit trail all carry over.

The other tests: migrate refuses while the server runs, finishes after a run
stopped half-way (with nothing written twice), says clearly when CouchDB cannot
be reached, and its final check catches a body corrupted in CouchDB.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import io
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from couchdb_server import couch_request, db_path
from pouch import PouchDriver
from realserver import (
    FIELDSYNC,
    PASSWORD,
    Admin,
    ServerProcess,
    free_port,
    inline_attachment,
    make_docs,
)
from test_pouchdb_devices import device, issued

from sync.config import from_env
from sync.errors import StoreUnavailable
from sync.keys import load_master_key
from sync.migrate import documents, run

IMEI = "490154203237518"
PHOTO = bytes(range(256)) * 40


@pytest.fixture
def backend_env() -> dict[str, str]:
    """The deployment starts on the embedded store; the test moves it."""
    return {}


@pytest.fixture
def couch_env(couchdb_url: str, couch_prefix: str) -> dict[str, str]:
    return {"FIELDSYNC_COUCHDB_URL": couchdb_url, "FIELDSYNC_COUCHDB_PREFIX": couch_prefix}


class CountingProxy:
    """Between the phone and the server: forwards everything, counts ``_changes`` rows."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.changes_rows = 0
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def forward(self, request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with (
            aiohttp.ClientSession(auto_decompress=True) as session,
            session.request(
                request.method,
                self.target + request.rel_url.path_qs,
                headers=headers,
                data=await request.read(),
            ) as answer,
        ):
            body = await answer.read()
            if request.path.endswith("/_changes") and answer.status == 200:
                self.changes_rows += len((await answer.json())["results"])
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
            return web.Response(status=answer.status, body=body, headers=kept)


_HOP = {"host", "content-length", "transfer-encoding", "content-encoding", "connection"}


@pytest.fixture
async def proxy(org: ServerProcess) -> AsyncIterator[CountingProxy]:
    counting = CountingProxy(org.url)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", counting.forward)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", counting.port).start()
    try:
        yield counting
    finally:
        await runner.cleanup()


def phone(server: ServerProcess, proxy: CountingProxy, token: str) -> dict[str, Any]:
    remote = device(server, "alice", token)
    return {**remote, "url": remote["url"].replace(server.url, proxy.url)}


def migrate(
    data_dir: Path, env: dict[str, str], *extra: str, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = [FIELDSYNC, "migrate", "--couchdb-url", url or env["FIELDSYNC_COUCHDB_URL"]]
    command += ["--data-dir", str(data_dir), *extra]
    run_env = {**os.environ, "FIELDSYNC_COUCHDB_PREFIX": env["FIELDSYNC_COUCHDB_PREFIX"]}
    return subprocess.run(command, env=run_env, capture_output=True, text=True, timeout=300)


def basic(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()}


async def seed(admin: Admin, server: ServerProcess) -> dict[str, Any]:
    """Documents (one with a photo, one in conflict), a patient ID, an SMS, a session."""
    await admin.bulk_docs(make_docs("area-a1", 30, "p") + make_docs(None, 2, "form"))
    await admin.bulk_docs(make_docs("area-a2", 5, "other"))
    await admin.put(
        {"_id": "photo", "place": "area-a1", "_attachments": {"card.jpg": inline_attachment(PHOTO)}}
    )
    branches = [
        {
            "_id": "split",
            "place": "area-a1",
            "v": v,
            "_rev": f"2-{h * 32}",
            "_revisions": {"start": 2, "ids": [h * 32, "a" * 32]},
        }
        for v, h in ((1, "b"), (2, "c"))
    ]
    async with admin.session.post(
        f"{admin.db_url}/_bulk_docs", json={"docs": branches, "new_edits": False}
    ) as resp:
        assert resp.status == 201, await resp.text()
    async with admin.session.post(f"{server.url}/api/v1/patient-ids", json={"count": 3}) as resp:
        assert resp.status == 201, await resp.text()
        before_ids = (await resp.json())["ids"]
    server.cli("user", "add", "gw", "--role", "gateway", password=PASSWORD)
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    sms = {"id": "gw-1", "from": "+254799999999", "content": "P 3 Jane", "sms_received": now_ms}
    polled = {"messages": [sms], "updates": []}
    async with (
        aiohttp.ClientSession(headers=basic("gw")) as gw,
        gw.post(f"{server.url}/api/sms", json=polled) as resp,
    ):
        assert resp.status == 200, await resp.text()
    login = {"name": "admin", "password": PASSWORD}
    async with (
        aiohttp.ClientSession() as app,
        app.post(f"{server.url}/_session", json=login) as resp,
    ):
        assert resp.status == 200, await resp.text()
        cookie = resp.cookies["AuthSession"].value
    return {"ids": before_ids, "cookie": cookie}


async def sms_rows(admin: Admin, server: ServerProcess) -> dict[str, list[tuple[str, str]]]:
    """The SMS listing (contents opened): what was received, and what waits or went out."""
    async with admin.session.get(f"{server.url}/api/v1/sms/messages") as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    return {
        box: sorted((str(r["id"]), str(r["content"])) for r in body[box])
        for box in ("incoming", "outgoing")
    }


async def test_an_embedded_deployment_moves_to_couchdb_and_the_phone_carries_on(
    pouch: PouchDriver,
    admin: Admin,
    org: ServerProcess,
    proxy: CountingProxy,
    couch_env: dict[str, str],
    tmp_path: Path,
) -> None:
    seeded = await seed(admin, org)
    token = await issued(admin, org, "A1", IMEI, "alice")
    first = await pouch.call("replicate", source=phone(org, proxy, token), target="phone")
    assert first["status"] == "complete"
    whole_set = proxy.changes_rows
    assert whole_set >= 34  # 30 + 2 shared + photo + split
    sms = await sms_rows(admin, org)
    assert sms["incoming"] and sms["outgoing"], sms  # the message, and the reply it caused

    org.stop()
    moved = migrate(org.data_dir, couch_env)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "NOT COPIED" not in moved.stdout  # the devices port copies the phone inventory
    assert "devices: devices" in moved.stdout, moved.stdout
    assert "every count matches" in moved.stdout

    on_couch = ServerProcess(org.data_dir, org.port, tmp_path / "couch.log", couch_env)
    on_couch.start()
    try:
        # A new connection pool: the old one's kept-alive connections died with the old process.
        await admin.session.close()
        admin = Admin(aiohttp.ClientSession(headers=basic("admin")), on_couch)
        await admin.bulk_docs(make_docs("area-a1", 2, "after"))
        proxy.changes_rows = 0
        again = await pouch.call("replicate", source=phone(on_couch, proxy, token), target="phone")
        assert again["status"] == "complete", again
        # Resumed: sent the two new documents, not the whole set again.
        assert proxy.changes_rows == 2, (proxy.changes_rows, whole_set)
        assert again["docs_written"] == 2

        for doc_id in ("p-007", "form-001", "after-001"):
            mine = await pouch.call("get", db="phone", docid=doc_id)
            status, served = await admin.get(doc_id)
            assert status == 200 and served == mine
        assert await admin.get_attachment("photo", "card.jpg") == PHOTO
        status, split = await admin.get("split", conflicts="true")
        assert (split["_rev"], split["_conflicts"]) == ("2-" + "c" * 32, ["2-" + "b" * 32])

        login = {"name": "alice", "password": PASSWORD}
        async with (
            aiohttp.ClientSession(headers={"X-Device-Token": token}) as app,
            app.post(f"{on_couch.url}/_session", json=login) as resp,
        ):
            assert resp.status == 200, await resp.text()
        cookie = {"AuthSession": seeded["cookie"]}  # the admin's session from before the move
        async with (
            aiohttp.ClientSession(cookies=cookie) as app,
            app.get(f"{on_couch.url}/_session") as resp,
        ):
            assert (await resp.json())["userCtx"]["name"] == "admin"

        url = f"{on_couch.url}/api/v1/patient-ids"
        async with admin.session.post(url, json={"count": 5}) as resp:
            assert resp.status == 201, await resp.text()
            assert not set((await resp.json())["ids"]) & set(seeded["ids"])
        assert await sms_rows(admin, on_couch) == sms
    finally:
        await admin.session.close()
        on_couch.stop()
    verified = on_couch.cli("audit", "verify")
    assert "instance embedded-" in verified.stdout, verified.stdout


def test_migrate_refuses_while_the_server_runs(
    org: ServerProcess, couch_env: dict[str, str]
) -> None:
    refused = migrate(org.data_dir, couch_env)
    assert refused.returncode == 1
    assert "cannot migrate" in refused.stderr and "stop it first" in refused.stderr


async def test_a_database_named_as_one_of_the_servers_own_is_refused_before_any_copy(
    org: ServerProcess, couch_env: dict[str, str], couchdb_url: str
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.put(f"{org.url}/keys", headers=basic("admin")) as made,
    ):
        assert made.status == 201, await made.text()  # the embedded store has no such name
    org.stop()
    refused = migrate(org.data_dir, couch_env)
    assert refused.returncode == 2, refused.stderr
    assert "the embedded database 'keys' has the name of a CouchDB database" in refused.stderr
    assert "nothing was copied" in refused.stderr
    _, names = couch_request(couchdb_url, "GET", "/_all_dbs")
    assert not [n for n in names if n.startswith(couch_env["FIELDSYNC_COUCHDB_PREFIX"])], names


def test_an_unreachable_couchdb_is_said_clearly(org: ServerProcess, tmp_path: Path) -> None:
    org.stop()
    env = {"FIELDSYNC_COUCHDB_PREFIX": "fs_test_", "FIELDSYNC_COUCHDB_URL": ""}
    away = migrate(org.data_dir, env, url=f"http://127.0.0.1:{free_port()}")
    assert away.returncode == 1
    assert "cannot be reached" in away.stderr, away.stderr
    other = ServerProcess(tmp_path / "other", free_port(), tmp_path / "other.log")
    other.cli("init")
    other.start()
    try:  # another fieldsync server's address: it speaks CouchDB's protocol, but is not one
        itself = migrate(org.data_dir, env, url=other.url)
    finally:
        other.stop()
    assert itself.returncode == 2
    assert "is a fieldsync server, not CouchDB" in itself.stderr, itself.stderr
    bad = migrate(org.data_dir, env, url="admin:secret-pw@couchdb.example.org")
    assert bad.returncode == 2
    assert "--couchdb-url must be an http(s) URL" in bad.stderr, bad.stderr
    assert "secret-pw" not in bad.stderr + bad.stdout


async def test_a_run_stopped_half_way_is_finished_by_the_next(
    admin: Admin,
    org: ServerProcess,
    couch_env: dict[str, str],
    couchdb_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await admin.bulk_docs(make_docs("area-a1", 250, "p"))
    org.stop()
    meta = couch_env["FIELDSYNC_COUCHDB_PREFIX"] + "health"
    metas_written = 0
    real = documents.put_missing

    async def failing(client: Any, couch_db: str, docs: list[Any], same: Any) -> int:
        """CouchDB lost in the middle of the second batch: its bodies written, not its metas."""
        nonlocal metas_written
        if couch_db == meta and docs[0]["_id"].startswith("d:"):
            metas_written += 1
            if metas_written == 2:
                raise StoreUnavailable("CouchDB went away")
        return await real(client, couch_db, docs, same)

    monkeypatch.setattr(documents, "put_missing", failing)
    config = dataclasses.replace(
        from_env(),
        data_dir=org.data_dir,
        couchdb_url=couch_env["FIELDSYNC_COUCHDB_URL"],
        couchdb_prefix=couch_env["FIELDSYNC_COUCHDB_PREFIX"],
    )
    master = load_master_key(config.key_file, create=False)
    with pytest.raises(StoreUnavailable):
        await run.migrate(config, master, io.StringIO())
    assert _info(couchdb_url, meta)["doc_count"] == 100 + 1  # the first batch, the design doc
    monkeypatch.setattr(documents, "put_missing", real)

    done = migrate(org.data_dir, couch_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _info(couchdb_url, meta)["doc_count"] == 250 + 1  # each document once
    assert _info(couchdb_url, meta + "$log")["doc_count"] == 250  # one entry each, no repeat
    assert _info(couchdb_url, meta + "$data")["doc_count"] == 250 + 2  # bodies, settings, marker


def _info(couchdb_url: str, name: str) -> dict[str, Any]:
    status, info = couch_request(couchdb_url, "GET", db_path(name))
    assert status == 200, info
    return dict(info)


async def test_the_check_catches_a_body_corrupted_in_couchdb(
    admin: Admin, org: ServerProcess, couch_env: dict[str, str], couchdb_url: str
) -> None:
    await admin.bulk_docs(make_docs("area-a1", 5, "p"))
    org.stop()
    assert migrate(org.data_dir, couch_env).returncode == 0
    data = db_path(couch_env["FIELDSYNC_COUCHDB_PREFIX"] + "health$data")
    _, listing = couch_request(couchdb_url, "GET", f"{data}/_all_docs?include_docs=true")
    [body] = [r["doc"] for r in listing["rows"] if r["id"].endswith(":p-003")]
    sealed = bytearray(base64.b64decode(body["body"]))
    sealed[-1] ^= 1  # one bit of the tag
    body["body"] = base64.b64encode(bytes(sealed)).decode()
    status, _ = couch_request(couchdb_url, "PUT", f"{data}/{quote(body['_id'], safe='')}", body)
    assert status == 201
    checked = migrate(org.data_dir, couch_env, "--check-only")
    assert checked.returncode == 1
    assert "MISMATCH health/p-003" in checked.stdout, checked.stdout
    assert "the CouchDB body does not open" in checked.stdout
    again = migrate(org.data_dir, couch_env)  # a second copy refuses to paper over it
    assert again.returncode == 1
    assert "already holds" in again.stderr and "p-003" in again.stderr, again.stderr
