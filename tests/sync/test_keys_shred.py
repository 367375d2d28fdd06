"""Crypto-shredding a place (``fieldsync keys shred``): its keys and documents gone for good."""

from __future__ import annotations

import base64
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sync_fixtures import Api, as_user, running

from sync import cli
from sync.config import Config
from sync.store import schema
from sync.store.schema import db_path

DOCS = [
    {"_id": "visit-b1", "place": "area-b1", "note": "b1 visit"},
    {
        "_id": "photo-b1",
        "place": "area-b1",
        "_attachments": {
            "scan.png": {"content_type": "image/png", "data": base64.b64encode(b"b1scan").decode()}
        },
    },
    {"_id": "visit-a1", "place": "area-a1", "note": "a1 visit"},
    {"_id": "form-p", "title": "shared"},
]


def _rows(data_dir: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db_path(data_dir))) as conn:
        return conn.execute(sql, args).fetchall()


@pytest.fixture
async def written(config: Config) -> bytes:
    """The documents written; the wrapped data key of area-b1 (what must vanish)."""
    async with running(config) as client:
        await Api(client).bulk(DOCS)
    [(wrapped,)] = _rows(config.data_dir, "SELECT wrapped FROM data_keys WHERE place='area-b1'")
    return bytes(wrapped)


def _shred(config: Config, place: str, confirm: str) -> int:
    args = ["keys", "shred", place, "--confirm", confirm, "--data-dir", str(config.data_dir)]
    return cli.main(args)


@pytest.fixture
def insecure_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections as SQLite builds without SECURE_DELETE make them (freed pages keep bytes)."""
    original = schema.connect

    def connect(path: Path, *, create: bool = True) -> sqlite3.Connection:
        conn = original(path, create=create)
        conn.execute("PRAGMA secure_delete=OFF")
        return conn

    monkeypatch.setattr(schema, "connect", connect)


async def test_a_shredded_place_is_gone_and_the_rest_stays(
    config: Config, written: bytes, capsys: pytest.CaptureFixture[str], insecure_default: None
) -> None:
    assert _shred(config, "area-b1", "area-b1") == 0
    said = capsys.readouterr().out
    assert "place area-b1 shredded: 1 data keys, 2 documents, 2 revisions and 1 attachments" in said
    assert _rows(config.data_dir, "SELECT count(*) FROM data_keys WHERE place='area-b1'") == [(0,)]
    for table in ("docs", "revs", "attachments"):
        assert _rows(config.data_dir, f"SELECT count(*) FROM {table} WHERE place='area-b1'") == [
            (0,)
        ]
    # Not one copy of the wrapped key is left in any file of the data dir.
    for path in config.data_dir.iterdir():
        if path.is_file():
            left = written in path.read_bytes()
            assert not left, f"{path.name} still holds the wrapped key"
    async with running(config) as client:  # the server starts, the rest is intact
        for doc_id, status in (("visit-a1", 200), ("form-p", 200), ("visit-b1", 404)):
            got = await client.get(f"/health/{doc_id}", headers=as_user("admin"))
            assert got.status == status, doc_id
        bob = await client.get("/health/_changes", headers=as_user("bob"))
        assert [r["id"] for r in (await bob.json())["results"]] == ["form-p"]
    assert cli.main(["audit", "verify", "--data-dir", str(config.data_dir)]) == 0  # it holds
    [(actor, detail)] = _rows(config.data_dir, "SELECT actor, detail FROM audit WHERE action=?",
                              "key_shred")  # fmt: skip
    assert actor.startswith("cli:")
    assert detail.startswith("place area-b1: 1 data keys, 2 documents")


async def test_shredding_asks_for_the_place_twice_and_a_stopped_server(
    config: Config, written: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _shred(config, "area-b1", "area-a1") == 1
    assert "cannot be undone: repeat the place's id, --confirm area-b1" in capsys.readouterr().err
    async with running(config):
        assert _shred(config, "area-b1", "area-b1") == 1
    assert "cannot shred a place: another fieldsync server" in capsys.readouterr().err
    assert _shred(config, "area-zz", "area-zz") == 1
    assert "place area-zz has no data key: nothing to shred" in capsys.readouterr().err
    assert _rows(config.data_dir, "SELECT count(*) FROM docs WHERE place='area-b1'") == [(2,)]
