"""The audit trail is a hash chain: appending keeps it valid, tampering is found."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sync import audit
from sync.appkeys import STORE
from sync.replication.routes import REPLICATION
from sync.store.schema import connect, initialise


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    path = tmp_path / "a.sqlite3"
    initialise(path)
    connection = connect(path)
    audit.install_triggers(connection)
    return connection


def _entries(n: int) -> list[audit.Entry]:
    return [
        audit.Entry(f"2026-01-01T00:00:0{i}", "alice", "dev-1", "read", "health", (f"doc-{i}",))
        for i in range(n)
    ]


def test_appended_chain_verifies(conn: sqlite3.Connection) -> None:
    audit.append(conn, _entries(3))
    audit.append(conn, _entries(2))
    assert audit.verify(conn) is None
    assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 5


def test_updates_and_deletes_are_refused(conn: sqlite3.Connection) -> None:
    audit.append(conn, _entries(2))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit SET actor='mallory' WHERE id=1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE id=1")


def test_tampering_is_found_at_the_tampered_entry(conn: sqlite3.Connection) -> None:
    audit.append(conn, _entries(4))
    conn.executescript("DROP TRIGGER audit_no_update;")
    conn.execute("UPDATE audit SET doc_ids='[\"doc-x\"]' WHERE id=3")
    assert audit.verify(conn) == 3


async def test_audit_log_batches_and_flushes(conn: sqlite3.Connection) -> None:
    async def write(fn: object) -> None:
        fn(conn)  # type: ignore[operator]

    log = audit.AuditLog(write, batch_delay=10)
    log.record("alice", "write", "health", ["a", "b"], device="dev-1")
    log.record("bob", "read", "health", ["c"])
    assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 0
    await log.close()
    rows = conn.execute("SELECT actor, action, doc_ids FROM audit ORDER BY id").fetchall()
    assert rows == [("alice", "write", '["a", "b"]'), ("bob", "read", '["c"]')]
    assert audit.verify(conn) is None


async def test_reads_and_writes_over_http_are_audited(client: Any, api: Any) -> None:
    await api.bulk([{"_id": "p1", "place": "area-a1", "name": "Jane"}], user="alice")
    await api.call("GET", "/health/p1", "bob")  # outside bob's set: nothing read
    await api.call("POST", "/health/_bulk_get", "alice", {"docs": [{"id": "p1"}]})
    replication = client.app[REPLICATION]
    assert replication.parts.audit is not None
    await replication.parts.audit.flush()

    def rows(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
        found = conn.execute("SELECT actor, action, doc_ids FROM audit ORDER BY id").fetchall()
        return [(a, b, c) for a, b, c in found]

    store = client.app[STORE]
    assert await store.read(rows) == [
        ("alice", "write", '["p1"]'),
        ("alice", "read", '["p1"]'),
    ]
    assert await store.read(audit.verify) is None
