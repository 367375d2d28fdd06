"""Data-key rotation (``fieldsync keys rotate``): every sealed blob moves to the new key version.

A real SQLite file, the real vault; the app runs in-process to write and read
back, and the command runs through the CLI's ``main`` with the app stopped.
"""

from __future__ import annotations

import base64
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sync_fixtures import Api, as_user, running

from sms_gateway.sealing import Sealer
from sync import cli
from sync.appkeys import STORE
from sync.config import Config
from sync.datakeys import embedded_rotation as rotation
from sync.replication.routes import REPLICATION
from sync.store.schema import db_path

PHOTO = bytes(range(256)) * 40
DOCS = [
    {
        "_id": "visit-a1",
        "place": "area-a1",
        "note": "secret-a1",
        "_attachments": {
            "photo.png": {"content_type": "image/png", "data": base64.b64encode(PHOTO).decode()}
        },
    },
    {"_id": "visit-b1", "place": "area-b1", "note": "secret-b1"},
    {"_id": "form-p", "title": "shared"},
]
CHECKPOINT = {"last_seq": "42-abc", "session_id": "s1"}


async def _everything(client: TestClient[Any, Any]) -> dict[str, Any]:
    """What users read back: every document, the photo's bytes, alice's checkpoint, SMS."""
    found: dict[str, Any] = {}
    for doc in DOCS:
        response = await client.get(f"/health/{doc['_id']}", headers=as_user("admin"))
        assert response.status == 200
        found[doc["_id"]] = await response.json()
    photo = await client.get("/health/visit-a1/photo.png", headers=as_user("admin"))
    found["photo"] = await photo.read()
    local = await client.get("/health/_local/checkpoint", headers=as_user("alice"))
    found["local"] = await local.json()
    sealer = Sealer(client.app[REPLICATION].parts.vault)
    await sealer.warm()
    rows = await client.app[STORE].read(
        lambda c: c.execute(
            "SELECT i.key, i.key_ref, i.content, i.details_ref, i.details, o.id, o.key_ref, "
            "o.content FROM sms_incoming i, sms_outgoing o"
        ).fetchall()
    )
    found["sms"] = [
        (
            sealer.open(f"in:{key}", ref, bytes(content)),
            sealer.open(f"details:{key}", dref, bytes(details)),
            sealer.open(f"out:{oid}", oref, bytes(ocontent)),
        )
        for key, ref, content, dref, details, oid, oref, ocontent in rows
    ]
    return found


@pytest.fixture
async def written(config: Config) -> dict[str, Any]:
    async with running(config) as client:
        await Api(client).bulk(DOCS)
        put = await client.put(
            "/health/_local/checkpoint", json=CHECKPOINT, headers=as_user("alice")
        )
        assert put.status == 201
        sealer = Sealer(client.app[REPLICATION].parts.vault)
        await sealer.warm()
        text_ref, text = sealer.seal("in:m1", {"content": "P 3 Jane"})
        details_ref, details = sealer.seal("details:m1", {"reply": "Thank you"})
        out_ref, out = sealer.seal("out:o1", {"content": "Jane is registered"})
        now = "2026-11-23T10:00:00+00:00"

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO sms_incoming(key, channel, external_id, phone, key_ref, content, "
                "received_at, stored_at, details_ref, details) VALUES(?,?,?,?,?,?,?,?,?,?)",
                ("m1", "gw", "e1", "+254700000001", text_ref, text, now, now, details_ref, details),
            )
            conn.execute(
                "INSERT INTO sms_outgoing(id, channel, phone, kind, key_ref, content, state, "
                "due_at, created_at, updated_at) VALUES(?,?,?,?,?,?,?,?,?,?)",
                ("o1", "gw", "+254700000001", "reply", out_ref, out, "pending", now, now, now),
            )

        await client.app[STORE].write_tx(insert)
        return await _everything(client)


def _refs(data_dir: Path) -> dict[str, set[str]]:
    """Which key versions the stored blobs name, per table, and which keys exist."""
    with closing(sqlite3.connect(db_path(data_dir))) as conn:
        found = {
            "revs": {r[0] for r in conn.execute("SELECT key_ref FROM revs")},
            "attachments": {r[0] for r in conn.execute("SELECT key_ref FROM attachments")},
            "sms": {r[0] for r in conn.execute("SELECT key_ref FROM sms_incoming")},
            "keys": {f"{p}:{v}" for p, v in conn.execute("SELECT place, version FROM data_keys")},
        }
        local = conn.execute("SELECT body FROM local_docs").fetchone()[0]
        found["local"] = {bytes(local).split(b"\x00")[1].decode()}
    return found


def _rotate(config: Config, *args: str) -> int:
    return cli.main(["keys", "rotate", *args, "--data-dir", str(config.data_dir)])


async def test_rotating_one_place_reseals_its_blobs_and_deletes_its_old_key(
    config: Config, written: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    before = _refs(config.data_dir)
    assert before["revs"] == {"area-a1:1", "area-b1:1", ":1"}
    assert _rotate(config, "--place", "area-a1") == 0
    said = capsys.readouterr().out
    assert "new data keys: area-a1 v2" in said and "old data keys deleted: area-a1 v1" in said
    assert "document bodies: 3 looked at, 1 re-sealed" in said
    after = _refs(config.data_dir)
    assert after["revs"] == {"area-a1:2", "area-b1:1", ":1"}
    assert after["attachments"] == {"area-a1:2"}
    assert after["keys"] == {"area-a1:2", "area-b1:1", ":1"}
    assert after["local"] == after["sms"] == {":1"}  # the shared key was not rotated
    async with running(config) as client:
        assert await _everything(client) == written


async def test_rotating_everything_covers_local_docs_and_sms(
    config: Config, written: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _rotate(config, "--all") == 0
    said = capsys.readouterr().out
    assert "SMS texts received: 1 looked at, 1 re-sealed" in said
    after = _refs(config.data_dir)
    assert after["keys"] == {"area-a1:2", "area-b1:2", ":2"}
    assert after["revs"] == {"area-a1:2", "area-b1:2", ":2"}
    assert after["local"] == after["sms"] == {":2"}
    async with running(config) as client:
        assert await _everything(client) == written
        # New writes use the new versions too.
        put = await client.put(
            "/health/new-a1", json={"place": "area-a1"}, headers=as_user("admin")
        )
        assert put.status == 201
    assert _refs(config.data_dir)["revs"] == {"area-a1:2", "area-b1:2", ":2"}


async def test_an_interrupted_rotation_loses_nothing_and_a_second_run_finishes(
    config: Config,
    written: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(rotation, "BATCH", 1)
    real = rotation.reseal_batch
    calls = {"n": 0}

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the implementer pressed ^C mid-way
        return real(*args, **kwargs)

    monkeypatch.setattr(rotation, "reseal_batch", failing)
    with pytest.raises(KeyboardInterrupt):
        _rotate(config, "--all")
    half = _refs(config.data_dir)
    assert half["keys"] == {"area-a1:1", "area-b1:1", ":1", "area-a1:2", "area-b1:2", ":2"}
    assert len(half["revs"] & {"area-a1:2", "area-b1:2", ":2"}) == 2  # two bodies moved
    async with running(config) as client:
        assert await _everything(client) == written  # everything still opens
    monkeypatch.setattr(rotation, "reseal_batch", real)
    capsys.readouterr()
    assert _rotate(config, "--all") == 0
    after = _refs(config.data_dir)
    assert after["keys"] == {"area-a1:3", "area-b1:3", ":3"}
    assert after["revs"] | after["attachments"] | after["local"] <= after["keys"]
    async with running(config) as client:
        assert await _everything(client) == written


async def test_rotation_needs_the_server_stopped_and_clear_arguments(
    config: Config, written: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    before = _refs(config.data_dir)
    async with running(config):
        assert _rotate(config, "--all") == 1
    assert "cannot rotate the data keys: another fieldsync server" in capsys.readouterr().err
    assert _rotate(config) == 1
    assert "--place, repeatable) or give --all" in capsys.readouterr().err
    assert _rotate(config, "--place", "area-zz") == 1
    assert "place area-zz has no data key to rotate" in capsys.readouterr().err
    assert _refs(config.data_dir) == before
