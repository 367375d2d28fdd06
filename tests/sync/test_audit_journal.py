"""The read journal (``sync.auditjournal``): entries safe against a crash before their
answer goes out, moved into the keyed chain once each, at run time or at the next start."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from audit_disk import trail_file
from sync_fixtures import Api, Client, running

from sync import audit, cli
from sync.audit import AUDIT
from sync.audit_store.embedded import committed_seq
from sync.audit_store.embedded_journal import recover
from sync.audit_store.embedded_verify import verify
from sync.audit_store.links import ChainKey
from sync.auditjournal import Journal, journal_path, read
from sync.auditverify import AuditBroken
from sync.config import Config
from sync.store.schema import connect


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return trail_file(tmp_path)


def _reads(n: int) -> list[audit.Entry]:
    return [
        audit.Entry(f"2026-01-01T00:00:{i:02d}", "alice", None, "read", "health", (f"d{i}",))
        for i in range(n)
    ]


def _chain_ids(conn: sqlite3.Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT doc_ids FROM audit ORDER BY id")]


def test_a_crash_leaves_entries_that_the_next_start_moves_once(
    conn: sqlite3.Connection, tmp_path: Path
) -> None:
    chain, path = ChainKey(secrets.token_bytes(32)), tmp_path / "journal"
    journal = Journal(path, 1, chain)
    journal.append(_reads(3))
    with path.open("ab") as torn:  # a crash in the middle of the next write
        torn.write(b'[4,"2026-01-01T00:00:09","alice",null,"read","he')
    moved, next_seq = recover(conn, chain, path)
    assert (moved, next_seq) == (3, 4)
    # A crash after that commit but before the file was emptied: nothing twice.
    assert recover(conn, chain, path) == (0, 4)
    assert _chain_ids(conn) == ['["d0"]', '["d1"]', '["d2"]']
    assert verify(conn, chain).ok


def _edit(lines: list[bytes]) -> list[bytes]:
    lines[1] = lines[1].replace(b'"alice"', b'"mallory"')
    return lines


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        (_edit, "bad MAC"),  # an entry changed
        (lambda lines: [lines[0], lines[2]], "lines removed"),  # an entry dropped
        (lambda lines: [lines[0], b"[" * 100_000 + b"\n", lines[2]], "line 2"),  # junk
    ],
)
def test_a_tampered_journal_is_refused_from_the_first_bad_line_on_record(
    conn: sqlite3.Connection, tmp_path: Path, tamper: Any, why: str
) -> None:
    """Whoever can edit the file but lacks the master key can neither forge nor hide."""
    chain, path = ChainKey(secrets.token_bytes(32)), tmp_path / "journal"
    Journal(path, 1, chain).append(_reads(3))
    path.write_bytes(b"".join(tamper(path.read_bytes().splitlines(keepends=True))))
    moved, _ = recover(conn, chain, path)
    assert moved == 1 and _chain_ids(conn)[0] == '["d0"]'
    [(detail,)] = conn.execute("SELECT detail FROM audit WHERE action='journal_rejected'")
    assert why in detail
    assert verify(conn, chain).ok  # the chain holds, and says what was refused


def test_a_line_made_under_another_key_is_refused(conn: sqlite3.Connection, tmp_path: Path) -> None:
    chain, path = ChainKey(secrets.token_bytes(32)), tmp_path / "journal"
    Journal(path, 1, ChainKey(secrets.token_bytes(32))).append(_reads(1))
    assert recover(conn, chain, path) == (0, 1)
    assert conn.execute("SELECT count(*) FROM audit WHERE action='read'").fetchone() == (0,)


def test_a_journal_that_is_no_plain_file_stops_the_start(tmp_path: Path) -> None:
    chain, path = ChainKey(secrets.token_bytes(32)), tmp_path / "journal"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    path.symlink_to(victim)
    with pytest.raises(AuditBroken, match="not a plain file"):
        read(path, chain)
    with pytest.raises(AuditBroken):
        Journal(path, 1, chain)
    assert victim.read_text() == "keep me"


async def test_reads_move_into_the_chain_and_the_journal_empties(
    api: Api, client: Client, config: Config
) -> None:
    await api.bulk([{"_id": "p1", "place": "area-a1"}], user="alice")
    status, _ = await api.call("GET", "/health/p1", "alice")
    assert status == 200
    path, chain = journal_path(config.data_dir), client.app[AUDIT].chain
    with closing(connect(config.data_dir / "fieldsync.sqlite3")) as check:
        done = committed_seq(check)  # the start's entry may have moved already (a busy machine)
    assert [e.doc_ids for _, e in read(path, chain, done).entries][-1] == ("p1",)  # before answer
    await client.app[AUDIT].commit()  # what the background move does every 0.2 s
    assert read(path, chain).entries == [] and path.stat().st_size == 0
    with closing(connect(config.data_dir / "fieldsync.sqlite3")) as check:
        rows = check.execute("SELECT doc_ids FROM audit WHERE action='read'").fetchall()
    assert rows == [('["p1"]',)]


async def test_the_background_move_needs_no_help(api: Api, client: Client, config: Config) -> None:
    await api.bulk([{"_id": "p1", "place": "area-a1"}], user="alice")
    await api.call("GET", "/health/p1", "alice")
    log = client.app[AUDIT]
    assert log._mover is not None
    await log._mover  # it sleeps its delay, moves, and ends once nothing waits
    assert read(journal_path(config.data_dir), log.chain).entries == []


async def test_verify_says_what_waits_in_the_journal(
    config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(config) as client:
        chain = client.app[AUDIT].chain
    # A crash leaves two entries (a clean stop left the journal empty):
    with closing(connect(config.data_dir / "fieldsync.sqlite3")) as check:
        done = committed_seq(check)
    Journal(journal_path(config.data_dir), done + 1, chain).append(_reads(2))
    capsys.readouterr()
    assert cli.main(["audit", "verify", "--data-dir", str(config.data_dir)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("audit chain ok: ")
    assert err.startswith("2 entries wait in the read journal")


async def test_a_failing_move_backs_off_and_keeps_the_entries(
    api: Api, client: Client, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = client.app[AUDIT]
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def failing(fn: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            monkeypatch.setattr(log._local, "_write", real_write)  # the disk has room again
        await real_sleep(0)

    if log._mover is not None:
        await log._mover  # the start's own entry has moved: the mover is idle
    real_write = log._local._write
    monkeypatch.setattr(log._local, "_write", failing)
    monkeypatch.setattr(audit.asyncio, "sleep", sleep)
    await api.bulk([{"_id": "p1", "place": "area-a1"}], user="alice")
    await api.call("GET", "/health/p1", "alice")
    assert log._mover is not None
    await log._mover
    assert slept == [0.2, 0.8, 3.2]  # not one error line every 0.2 s
    assert read(journal_path(config.data_dir), log.chain).entries == []  # nothing lost
