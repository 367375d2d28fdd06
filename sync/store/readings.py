"""The data dir's SQLite file as the core's readings see it (:mod:`sync.readings`).

Ready when a trivial query answers; its size is the file's and its write-ahead log's.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from sync.readings import StoreReading
from sync.store.sqlite import SqliteStore


def sqlite_reading(store: SqliteStore) -> StoreReading:
    """The ``store`` readiness check and the ``sqlite`` size."""

    async def size() -> int:
        return _file_sizes(store.path)

    return StoreReading("store", lambda: store.read(_trivial), "sqlite", size)


def _trivial(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


def _file_sizes(db: Path) -> int:
    total = 0
    for part in (db, db.with_name(db.name + "-wal")):
        with contextlib.suppress(FileNotFoundError):
            total += part.stat().st_size
    return total
