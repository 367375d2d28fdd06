"""What the audit trail holds on disk right now, as another process would read it:
the chain's rows, then the read journal's entries not yet moved into it
(``sync.auditjournal``: safe against a crash the moment the answer goes out)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from sync.audit_store import embedded
from sync.auditjournal import journal_path, read
from sync.keys import load_master_key
from sync.store.schema import connect, db_path, initialise

Row = tuple[Any, ...]  # (actor, device, action, db, doc_ids as JSON, detail)


def on_disk(data_dir: Path, *actions: str) -> list[Row]:
    """Entries on disk (chain, then journal), those of ``actions`` only if given."""
    with closing(sqlite3.connect(db_path(data_dir))) as conn:
        sql = "SELECT actor, device, action, db, doc_ids, detail FROM audit ORDER BY id"
        rows: list[Row] = conn.execute(sql).fetchall()
        rows += _journaled(conn, data_dir)
    return [r for r in rows if not actions or r[2] in actions]


def _journaled(conn: sqlite3.Connection, data_dir: Path) -> list[Row]:
    path = journal_path(data_dir)
    if not path.exists() or path.stat().st_size == 0:
        return []  # (no chain key needed: a test may have rotated the master key)
    chain = embedded.open_chain(conn, load_master_key(data_dir / "master.key", create=False))
    contents = read(path, chain, embedded.committed_seq(conn))
    assert contents.problem is None, contents.problem
    return [
        (e.actor, e.device, e.action, e.db, json.dumps(list(e.doc_ids)), e.detail)
        for _, e in contents.entries
    ]


def trail_file(tmp_path: Path) -> sqlite3.Connection:
    """A connection to a fresh SQLite file with the audit table and its triggers."""
    path = tmp_path / "a.sqlite3"
    initialise(path)
    connection = connect(path)
    embedded.install_triggers(connection)
    return connection
