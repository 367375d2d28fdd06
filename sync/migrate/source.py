"""Reading the embedded store for migrate: the SQLite side of the move, read only.

Migrate holds the data dir's lock (no server runs) and reads in one snapshot.
Tables a domain creates on first use may be missing from an older data dir:
:func:`rows` answers nothing for them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Database:
    row_id: int
    name: str
    revs_limit: int
    uuid: str
    created: str


@dataclass(frozen=True)
class DocRow:
    id: str
    place: str
    seq: int
    tree: str  # revtree JSON


def has_table(conn: sqlite3.Connection, table: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,))
    return found.fetchone() is not None


def rows(conn: sqlite3.Connection, sql: str, *args: Any) -> list[sqlite3.Row]:
    """The rows of ``sql``; none when its table is not in this data dir."""
    try:
        return list(conn.execute(sql, args))
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise


def databases(conn: sqlite3.Connection) -> list[Database]:
    return [
        Database(int(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]))
        for r in rows(conn, "SELECT id, name, revs_limit, uuid, created FROM dbs ORDER BY name")
    ]


def count(conn: sqlite3.Connection, sql: str, *args: Any) -> int:
    found = rows(conn, sql, *args)
    return int(found[0][0]) if found else 0


def docs_by_seq(conn: sqlite3.Connection, db: int, batch: int) -> Iterator[list[DocRow]]:
    """Every document of ``db`` in the embedded store's order (its latest change), in batches."""
    after = 0
    while True:
        found = [
            DocRow(str(r[0]), str(r[1]), int(r[2]), str(r[3]))
            for r in conn.execute(
                "SELECT id, place, seq, tree FROM docs WHERE db=? AND seq>? ORDER BY seq LIMIT ?",
                (db, after, batch),
            )
        ]
        if not found:
            return
        yield found
        after = found[-1].seq


def revisions(conn: sqlite3.Connection, db: int, doc_ids: list[str]) -> list[sqlite3.Row]:
    """(doc id, rev, place, deleted, key_ref, body) of every stored body of ``doc_ids``."""
    marks = ",".join("?" * len(doc_ids))
    return rows(
        conn,
        "SELECT doc_id, rev, place, deleted, key_ref, body FROM revs "
        f"WHERE db=? AND doc_id IN ({marks}) ORDER BY doc_id, rev",
        db,
        *doc_ids,
    )
