"""The audit trail is a keyed chain: appending keeps it valid, every kind of tampering is named."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from audit_disk import trail_file

from sync import audit
from sync.audit_store import embedded
from sync.audit_store.embedded_journal import ServerChain
from sync.audit_store.embedded_verify import verify
from sync.audit_store.links import ChainKey

KEY = secrets.token_bytes(32)


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return trail_file(tmp_path)


def _entries(n: int, start: int = 0) -> list[audit.Entry]:
    return [
        audit.Entry(f"2026-01-01T00:00:{i:02d}", "alice", "dev-1", "read", "health", (f"doc-{i}",))
        for i in range(start, start + n)
    ]


def _chain(conn: sqlite3.Connection, n: int = 5) -> ChainKey:
    chain = ChainKey(KEY)
    embedded.append(conn, chain, _entries(3))
    embedded.append(conn, chain, _entries(n - 3, 3))
    return chain


def _untriggered(conn: sqlite3.Connection) -> None:
    conn.executescript("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")


def _problem(conn: sqlite3.Connection, chain: ChainKey) -> tuple[int | None, str]:
    report = verify(conn, chain)
    assert report.problem is not None, report.summary()
    return report.problem.id, report.problem.what


def test_appended_chain_verifies(conn: sqlite3.Connection) -> None:
    report = verify(conn, _chain(conn))
    assert report.ok
    assert report.summary() == (
        "audit chain ok: 5 entries, first 2026-01-01T00:00:00, last 2026-01-01T00:00:04"
    )


def test_updates_and_deletes_are_refused(conn: sqlite3.Connection) -> None:
    _chain(conn)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit SET actor='mallory' WHERE id=1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE id=1")


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        ("UPDATE audit SET doc_ids='[\"doc-x\"]' WHERE id=3", (3, "hash mismatch (row edited)")),
        ("DELETE FROM audit WHERE id=3", (4, "missing rows: ids 3..3 absent (id gap)")),
        ("DELETE FROM audit WHERE id>=4", (4, "missing rows: tail truncated, ids 4..5 absent")),
    ],
    ids=["edited row", "deleted middle row", "truncated tail (found by the head)"],
)
def test_a_changed_trail_names_its_first_bad_entry(
    conn: sqlite3.Connection, statement: str, problem: tuple[int, str]
) -> None:
    chain = _chain(conn)
    _untriggered(conn)
    conn.execute(statement)
    embedded.install_triggers(conn)  # put back: only the chain can tell
    assert _problem(conn, chain) == problem


def test_entries_appended_after_truncation_show_the_break(conn: sqlite3.Connection) -> None:
    chain = _chain(conn)
    _untriggered(conn)
    conn.execute("DELETE FROM audit WHERE id>=4")
    embedded.install_triggers(conn)
    embedded.append(conn, chain, _entries(1, 9))  # the server goes on writing: it follows the head
    assert _problem(conn, chain) == (6, "missing rows: ids 4..5 absent (id gap)")


def _plain(previous: str, row: tuple[object, ...]) -> str:
    entry = audit.Entry(
        str(row[0]), str(row[1]), None, str(row[2]), str(row[3]), tuple(json.loads(str(row[4])))
    )
    return audit.entry_hash(previous, entry)


def test_a_row_recomputed_with_plain_sha256_is_named(conn: sqlite3.Connection) -> None:
    chain = _chain(conn)
    _untriggered(conn)
    conn.execute("UPDATE audit SET device=NULL, doc_ids='[\"doc-x\"]' WHERE id=4")
    previous = conn.execute("SELECT hash FROM audit WHERE id=3").fetchone()[0]
    for entry_id in (4, 5):  # recompute the rest of the chain as an attacker can
        row = conn.execute(
            "SELECT ts, actor, action, db, doc_ids FROM audit WHERE id=?", (entry_id,)
        ).fetchone()
        digest = _plain(previous, row)
        conn.execute(
            "UPDATE audit SET prev_hash=?, hash=? WHERE id=?", (previous, digest, entry_id)
        )
        previous = digest
    assert _problem(conn, chain) == (
        4,
        "plain SHA-256 hash inside the keyed chain (recomputed without the key)",
    )


def test_a_row_recomputed_under_another_key_is_named(conn: sqlite3.Connection) -> None:
    chain = _chain(conn)
    _untriggered(conn)
    conn.execute("UPDATE audit SET actor='mallory' WHERE id=5")
    forger = ChainKey(secrets.token_bytes(32))
    previous = conn.execute("SELECT hash FROM audit WHERE id=4").fetchone()[0]
    entry = audit.Entry("2026-01-01T00:00:04", "mallory", "dev-1", "read", "health", ("doc-4",))
    digest = forger.entry_mac(previous, 5, entry)
    conn.execute("UPDATE audit SET hash=? WHERE id=5", (digest,))
    embedded.write_head(conn, audit.Head(5, digest, forger.head_mac(5, digest)))
    assert _problem(conn, chain) == (5, "hash mismatch (row edited)")


def test_dropped_triggers_are_named(conn: sqlite3.Connection) -> None:
    chain = _chain(conn)
    conn.executescript("DROP TRIGGER audit_no_delete;")
    assert _problem(conn, chain) == (
        None,
        "triggers missing: audit_no_delete (rows can be changed)",
    )


def test_a_forged_or_lost_head_is_named(conn: sqlite3.Connection) -> None:
    chain = _chain(conn)
    conn.execute("UPDATE meta SET value=? WHERE key=?", ('{"id":5,"hash":"k1:00","mac":"00"}',
                                                       embedded.HEAD_META))  # fmt: skip
    assert _problem(conn, chain) == (5, "head checkpoint forged (its MAC does not match)")
    conn.execute("DELETE FROM meta WHERE key=?", (embedded.HEAD_META,))
    assert _problem(conn, chain) == (None, "head checkpoint missing (rows deleted at the tail?)")
    embedded.append(conn, chain, _entries(1, 9))  # a lost head stays visible in the chain itself
    assert _problem(conn, chain) == (
        6,
        "broken link: prev_hash is not the hash of the entry before",
    )


def _legacy(conn: sqlite3.Connection, n: int) -> None:
    """Entries as a data dir written before the chain was keyed holds them."""
    previous = audit.GENESIS
    for entry in _entries(n):
        digest = audit.entry_hash(previous, entry)
        conn.execute(
            "INSERT INTO audit(ts, actor, device, action, db, doc_ids, prev_hash, hash) "
            "VALUES(?,?,?,?,?,?,?,?)",
            (entry.ts, entry.actor, entry.device, entry.action, entry.db,
             json.dumps(list(entry.doc_ids)), previous, digest),
        )  # fmt: skip
        previous = digest


def test_a_legacy_chain_is_sealed_by_the_first_keyed_entry(conn: sqlite3.Connection) -> None:
    _legacy(conn, 3)
    chain = ChainKey(KEY)
    assert _problem(conn, chain)[1].startswith("no keyed entry yet")
    embedded.append(conn, chain, _entries(2, 3))
    report = verify(conn, chain)
    assert report.ok, report.summary()
    assert (report.entries, report.legacy) == (5, 3)
    assert "(3 legacy plain-SHA-256 entries, sealed)" in report.summary()


def test_a_recomputed_legacy_part_breaks_the_seal(conn: sqlite3.Connection) -> None:
    _legacy(conn, 3)
    chain = ChainKey(KEY)
    embedded.append(conn, chain, _entries(2, 3))
    _untriggered(conn)
    conn.execute("UPDATE audit SET doc_ids='[\"doc-x\"]' WHERE id=2")
    previous = conn.execute("SELECT hash FROM audit WHERE id=1").fetchone()[0]
    for entry_id in (2, 3):
        row = conn.execute(
            "SELECT ts, actor, action, db, doc_ids, device FROM audit WHERE id=?", (entry_id,)
        ).fetchone()
        entry = audit.Entry(row[0], row[1], row[5], row[2], row[3], tuple(json.loads(row[4])))
        digest = audit.entry_hash(previous, entry)
        conn.execute(
            "UPDATE audit SET prev_hash=?, hash=? WHERE id=?", (previous, digest, entry_id)
        )
        previous = digest
    assert _problem(conn, chain) == (
        4,
        "broken link: prev_hash is not the hash of the entry before",
    )


def test_the_tail_check_reads_only_the_last_entries(conn: sqlite3.Connection) -> None:
    chain = _chain(conn, 10)
    _untriggered(conn)
    conn.execute("UPDATE audit SET actor='mallory' WHERE id=2")
    embedded.install_triggers(conn)
    assert verify(conn, chain, last=5).ok  # the start-up check: the tail holds
    assert _problem(conn, chain) == (2, "hash mismatch (row edited)")  # the full walk


def test_the_mac_is_not_a_plain_hash(conn: sqlite3.Connection) -> None:
    _chain(conn, 1)
    (digest,) = conn.execute("SELECT hash FROM audit").fetchone()
    row = conn.execute("SELECT ts, actor, action, db, doc_ids FROM audit").fetchone()
    assert digest.startswith(audit.KEYED)
    assert digest[3:] != _plain(audit.GENESIS, row)
    assert digest[3:] != hashlib.sha256(digest.encode()).hexdigest()


async def test_concurrent_flushes_share_one_transaction(conn: sqlite3.Connection) -> None:
    """Group commit: requests answered together wait for one write, not one each."""
    writes: list[int] = []
    release = asyncio.Event()

    async def write(fn: Callable[[sqlite3.Connection], object]) -> None:
        writes.append(0)
        await release.wait()  # the disk is slow: others pile up meanwhile
        fn(conn)

    log = audit.AuditLog(ServerChain(write, ChainKey(KEY)))
    log.record("alice", "read", "health", ["a"])
    first = asyncio.ensure_future(log.flush())
    await asyncio.sleep(0)
    for n in range(10):
        log.record("bob", "read", "health", [f"b{n}"])
    others = [asyncio.ensure_future(log.flush()) for _ in range(10)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *others)
    assert len(writes) == 2  # the one under way, then everything that waited for it
    assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 11
    assert verify(conn, log.chain).ok
