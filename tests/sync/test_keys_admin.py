"""Master-key rotation (``fieldsync keys rewrap``), the key listing, and one server per data dir.

The app runs in-process on a real SQLite file; the commands run through the CLI's
``main`` in the same process, so the data-dir lock they meet is the running app's.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import AsyncExitStack, closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sync_fixtures import Api, as_user, running

from sync import cli
from sync.config import Config
from sync.datadir import DataDirBusy
from sync.keys import KeyError_
from sync.store.schema import db_path

DOCS = [
    {"_id": "visit-a1", "place": "area-a1", "note": "secret-a1"},
    {"_id": "visit-b1", "place": "area-b1", "note": "secret-b1"},
    {"_id": "form-p", "title": "shared"},
]


async def _docs(client: TestClient[Any, Any]) -> dict[str, Any]:
    found = {}
    for doc in DOCS:
        response = await client.get(f"/health/{doc['_id']}", headers=as_user("admin"))
        assert response.status == 200
        body = await response.json()
        found[doc["_id"]] = {k: v for k, v in body.items() if k != "_rev"}
    return found


@pytest.fixture
async def written(config: Config) -> dict[str, Any]:
    """The documents, written and read back under the data dir's first master key."""
    async with running(config) as client:
        await Api(client).bulk(DOCS)
        return await _docs(client)


def _wrapped(data_dir: Path) -> dict[str, bytes]:
    with closing(sqlite3.connect(db_path(data_dir))) as conn:
        rows = conn.execute("SELECT place, version, wrapped FROM data_keys").fetchall()
    return {f"{p}:{v}": bytes(w) for p, v, w in rows}


def _keys(config: Config, *extra: str) -> list[str]:
    return ["keys", *extra, "--data-dir", str(config.data_dir)]


async def test_rewrap_moves_every_data_key_to_the_new_master_key(
    config: Config, written: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _wrapped(config.data_dir)
    assert len(before) == 3  # area-a1, area-b1 and the shared place
    new_file = tmp_path / "new-master.key"
    assert cli.main(_keys(config, "rewrap", "--new-key-file", str(new_file))) == 0
    said = capsys.readouterr().out
    assert "3 data keys re-wrapped, 0 already" in said and "written to" in said
    assert new_file.stat().st_mode & 0o777 == 0o600
    after = _wrapped(config.data_dir)
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in before)
    async with running(replace(config, master_key_file=new_file)) as client:
        assert await _docs(client) == written  # the data itself never changed
    with pytest.raises(KeyError_, match="does not open 3 of the 3 data keys"):
        async with running(config):  # the old key no longer opens the data dir
            pass
    # Resumable: running it again finds nothing left to do.
    assert cli.main(_keys(config, "rewrap", "--new-key-file", str(new_file))) == 0
    assert "0 data keys re-wrapped, 3 already" in capsys.readouterr().out
    assert _wrapped(config.data_dir) == after


async def test_keys_list_tells_which_keys_the_master_key_opens(
    config: Config, written: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(_keys(config, "list", "--format", "json")) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(k["ref"] for k in listed) == [":1", "area-a1:1", "area-b1:1"]  # ":1": shared
    assert all(k["opens"] for k in listed)
    new_file = tmp_path / "new.key"
    assert cli.main(_keys(config, "rewrap", "--new-key-file", str(new_file))) == 0
    capsys.readouterr()
    assert cli.main(_keys(config, "list")) == 1  # the configured (old) key opens none now
    assert "3 data keys; 3 not opened by the configured master key" in capsys.readouterr().out


async def test_rewrap_waits_for_the_server_to_stop(
    config: Config, written: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _wrapped(config.data_dir)
    new_file = tmp_path / "new.key"
    async with running(config):
        assert cli.main(_keys(config, "rewrap", "--new-key-file", str(new_file))) == 1
    err = capsys.readouterr().err
    assert "cannot re-wrap the data keys: another fieldsync server" in err
    assert "stop it first" in err
    assert _wrapped(config.data_dir) == before and not new_file.exists()


async def test_rewrap_refuses_the_current_key_and_a_bad_key_file(
    config: Config, written: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _wrapped(config.data_dir)
    current = config.data_dir / "master.key"
    assert cli.main(_keys(config, "rewrap", "--new-key-file", str(current))) == 1
    assert "the new master key is the current one" in capsys.readouterr().err
    bad = tmp_path / "bad.key"
    bad.write_text("not base64 at all!\n")
    assert cli.main(_keys(config, "rewrap", "--new-key-file", str(bad))) == 1
    assert "master key in bad.key is not base64" in capsys.readouterr().err
    assert _wrapped(config.data_dir) == before


async def test_a_data_key_no_master_opens_stops_the_rewrap_whole(
    config: Config, written: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with closing(sqlite3.connect(db_path(config.data_dir))) as conn, conn:
        conn.execute("UPDATE data_keys SET wrapped=zeroblob(60) WHERE place='area-b1'")
    before = _wrapped(config.data_dir)
    assert cli.main(_keys(config, "rewrap", "--new-key-file", str(tmp_path / "n.key"))) == 1
    assert "area-b1 v1 opens with neither" in capsys.readouterr().err
    assert _wrapped(config.data_dir) == before  # the other two were not changed either


async def test_one_server_per_data_dir(config: Config) -> None:
    hurried = replace(config, lock_wait_seconds=0.3)
    async with running(config) as first:
        with pytest.raises(DataDirBusy, match=r"cannot serve: .* \(waited 0.3 s\); stop it"):
            async with running(hurried):
                pass
        assert (await first.get("/_up")).status == 200  # the first one is unaffected
    async with running(hurried) as again:  # once it stopped, the data dir is free
        assert (await again.get("/_up")).status == 200


async def test_a_restart_waits_for_the_old_server_to_let_go(config: Config) -> None:
    """Stop and start at once: the new server waits while the old one shuts down."""
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running(config))
        loop = asyncio.get_running_loop()
        loop.call_later(0.5, lambda: asyncio.ensure_future(stack.aclose()))
        async with running(replace(config, lock_wait_seconds=10)) as new:
            assert (await new.get("/_up")).status == 200
