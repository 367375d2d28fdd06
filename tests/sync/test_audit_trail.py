"""The audit trail in the running app: nothing answered before its entry is on disk,
a write's entry in its own transaction, the start-up check, ``fieldsync audit verify``."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from audit_disk import on_disk
from structlog.testing import capture_logs
from sync_fixtures import Api, Client, as_user, running

from sync import cli
from sync.audit import AUDIT
from sync.audit_store import embedded
from sync.auditverify import AuditBroken
from sync.config import Config
from sync.store.schema import db_path


def _docs(data_dir: Path) -> list[tuple[Any, ...]]:
    """What another process sees on disk, now (no flush, no wait)."""
    return on_disk(data_dir, "read", "write")


async def test_a_read_is_on_disk_when_its_answer_arrives(api: Api, config: Config) -> None:
    await api.bulk([{"_id": "p1", "place": "area-a1", "name": "Jane"}], user="alice")
    status, _ = await api.call("GET", "/health/p1", "alice")
    assert status == 200
    assert _docs(config.data_dir)[-1] == ("alice", None, "read", "health", '["p1"]', None)
    await api.call("POST", "/health/_bulk_get", "sam", {"docs": [{"id": "p1"}]})
    assert _docs(config.data_dir)[-1] == ("sam", None, "read", "health", '["p1"]', None)


async def test_a_write_entry_commits_with_the_write(
    api: Api, client: Client, config: Config
) -> None:
    await api.bulk([{"_id": "p1", "place": "area-a1"}, {"_id": "p2", "place": "area-a1"}])
    log = client.app[AUDIT]
    assert log.pending == 0  # nothing waits in memory: the store wrote it with the documents
    assert _docs(config.data_dir) == [("admin", None, "write", "health", '["p1", "p2"]', None)]


async def test_a_write_whose_entry_fails_is_not_written(
    api: Api, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(conn: sqlite3.Connection, key: object, entries: object, chain: str = "") -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(embedded, "append", broken)
    status, body = await api.call("POST", "/health/_bulk_docs", "admin", {"docs": [{"_id": "x"}]})
    assert status == 500, body
    monkeypatch.undo()
    status, _ = await api.call("GET", "/health/x", "admin")
    assert status == 404  # all or nothing: no document without its entry


async def test_no_answer_goes_out_when_its_entry_cannot_be_written(
    api: Api, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.bulk([{"_id": "p1", "place": "area-a1", "name": "Jane Secret"}], user="alice")

    def failing(entries: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(client.app[AUDIT]._journal, "append", failing)
    response = await client.get("/health/p1", headers=as_user("alice"))
    assert response.status == 500
    assert "Jane Secret" not in await response.text()
    assert client.app[AUDIT].pending == 1  # kept, written by the next flush that works
    monkeypatch.undo()
    await client.app[AUDIT].flush()
    assert client.app[AUDIT].pending == 0


async def test_a_longpoll_answer_is_recorded_before_its_body(api: Api, config: Config) -> None:
    await api.bulk([{"_id": "p1", "place": "area-a1"}], user="alice")
    status, body = await api.call(
        "GET", "/health/_changes", "alice", feed="longpoll", include_docs="true", timeout="1000"
    )
    assert status == 200 and [r["id"] for r in body["results"]] == ["p1"]
    assert _docs(config.data_dir)[-1][:5] == ("alice", None, "read", "health", '["p1"]')


# -- the start-up check ---------------------------------------------------------------
def _tamper(data_dir: Path) -> None:
    with closing(sqlite3.connect(db_path(data_dir))) as conn:
        conn.executescript(
            "DROP TRIGGER audit_no_update; UPDATE audit SET actor='mallory' WHERE id=1;"
        )
        embedded.install_triggers(conn)
        conn.commit()


async def _started(config: Config) -> None:
    async with running(config) as client:
        await Api(client).bulk([{"_id": "p1", "place": "area-a1"}])


async def test_the_server_refuses_a_broken_trail_and_says_why(config: Config) -> None:
    await _started(config)
    _tamper(config.data_dir)
    with capture_logs() as logs, pytest.raises(AuditBroken, match="audit verify"):
        await _started(config)
    [event] = [e for e in logs if e["event"] == "audit_chain_checked"]
    assert event["ok"] is False and event["log_level"] == "error"
    assert event["problem"].startswith("entry 1 (")


async def test_a_sound_trail_is_reported_at_start(config: Config) -> None:
    await _started(config)
    with capture_logs() as logs:
        await _started(config)
    [event] = [e for e in logs if e["event"] == "audit_chain_checked"]
    assert event["ok"] is True and event["summary"].startswith("audit chain ok: 2 entries")


async def test_the_override_starts_a_broken_trail_loudly(config: Config) -> None:
    await _started(config)
    _tamper(config.data_dir)
    config = Config(**{**config.__dict__, "audit_allow_broken": True})
    with capture_logs() as logs:
        await _started(config)
    assert [e["log_level"] for e in logs if e["event"] == "audit_chain_checked"] == ["error"]
    [(detail,)] = [r[5:] for r in on_disk(config.data_dir, "server_start")][-1:]
    assert detail.startswith("audit broken: entry 1")


# -- fieldsync audit verify -----------------------------------------------------------
def _verify(config: Config) -> int:
    return cli.main(["audit", "verify", "--data-dir", str(config.data_dir)])


async def test_verify_exits_0_with_a_summary(
    config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    await _started(config)
    capsys.readouterr()
    assert _verify(config) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("audit chain ok: 2 entries, first 20")


async def test_verify_exits_1_naming_the_first_bad_entry(
    config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    await _started(config)
    _tamper(config.data_dir)
    capsys.readouterr()
    assert _verify(config) == 1
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("audit chain BROKEN at entry 1 (20")
    assert line.endswith("): hash mismatch (row edited)")


async def test_the_verify_command_runs_as_a_program(config: Config) -> None:
    await _started(config)
    with closing(sqlite3.connect(db_path(config.data_dir))) as conn:
        conn.executescript("DROP TRIGGER audit_no_update;")
    done = subprocess.run(
        [sys.executable, "-m", "sync", "audit", "verify", "--data-dir", str(config.data_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == (
        "audit chain BROKEN at the trail: triggers missing: audit_no_update (rows can be changed)\n"
    )
