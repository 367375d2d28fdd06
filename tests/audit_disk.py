"""What the audit trail holds on disk right now, as another process would read it:
the chain's rows, then the read journal's entries not yet moved into it
(``sync.auditjournal``: safe against a crash the moment the answer goes out)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from sync import audit
from sync.auditjournal import committed_seq, journal_path, read
from sync.store.schema import connect, db_path, initialise

Row = tuple[Any, ...]  # (actor, device, action, db, doc_ids as JSON, detail)


def on_disk(data_dir: Path, *actions: str) -> list[Row]:
    """Entries on disk (chain, then journal), those of ``actions`` only if given."""
    with closing(sqlite3.connect(db_path(data_dir))) as conn:
        sql = "SELECT actor, device, action, db, doc_ids, detail FROM audit ORDER BY id"
        rows: list[Row] = conn.execute(sql).fetchall()
        done = committed_seq(conn)
    for seq, e in read(journal_path(data_dir)):
        if seq > done:
            rows.append((e.actor, e.device, e.action, e.db, json.dumps(list(e.doc_ids)), e.detail))
    return [r for r in rows if not actions or r[2] in actions]


def trail_file(tmp_path: Path) -> sqlite3.Connection:
    """A connection to a fresh SQLite file with the audit table and its triggers."""
    path = tmp_path / "a.sqlite3"
    initialise(path)
    connection = connect(path)
    audit.install_triggers(connection)
    return connection
