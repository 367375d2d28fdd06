"""Place sets named by hash, kept in the data dir's ``scope_snapshots`` table.

    scope_snapshots(hash, places)   places: a JSON list, sorted

A since-token names the place sets it was made for by hash
(:mod:`sync.replication.since`); the app factory hands these two to the
changes feed's :class:`sync.replication.changes.SnapshotRegistry`.
"""

from __future__ import annotations

import json
import sqlite3


def save_snapshot(conn: sqlite3.Connection, digest: str, places: frozenset[str]) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO scope_snapshots(hash, places) VALUES(?,?)",
        (digest, json.dumps(sorted(places))),
    )


def load_snapshot(conn: sqlite3.Connection, digest: str) -> frozenset[str] | None:
    row = conn.execute("SELECT places FROM scope_snapshots WHERE hash=?", (digest,)).fetchone()
    return None if row is None else frozenset(json.loads(row[0]))
