"""The embedded adapter of the sync-activity port: one SQLite table, day buckets.

Table::

    sync_activity(worker, day, device, syncs, docs)   PRIMARY KEY(worker, day, device)

Each flush of the recorder is one transaction through the store's single writer
(``SqliteStore.write_tx``): one upsert per bucket that changed.  The table is
created when the server starts (``CREATE TABLE IF NOT EXISTS``, as every domain
adds its tables).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Sequence
from typing import Protocol, TypeVar

from sync.activity.ports import DayActivity

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sync_activity(
    worker TEXT NOT NULL, day TEXT NOT NULL, device TEXT NOT NULL,
    syncs INTEGER NOT NULL DEFAULT 0, docs INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(worker, day, device));
CREATE INDEX IF NOT EXISTS sync_activity_by_day ON sync_activity(day);
"""


class Transactions(Protocol):
    """Where the SQL runs: the server's ``SqliteStore``."""

    async def write_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


class EmbeddedActivity:
    """The port over SQLite: each call one transaction of ``transactions``."""

    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    @classmethod
    async def opened(cls, transactions: Transactions) -> EmbeddedActivity:
        """The adapter, once its table exists."""
        await transactions.write_tx(create_tables)
        return cls(transactions)

    async def add(self, buckets: Sequence[DayActivity]) -> None:
        if buckets:
            await self._tx.write_tx(lambda conn: add(conn, buckets))

    async def days(self, since: str, workers: Collection[str] | None = None) -> list[DayActivity]:
        return await self._tx.read(lambda conn: days(conn, since, workers))

    async def totals(self, since: str) -> dict[str, tuple[int, int]]:
        return await self._tx.read(lambda conn: totals(conn, since))


def create_tables(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def add(conn: sqlite3.Connection, buckets: Sequence[DayActivity]) -> None:
    conn.executemany(
        "INSERT INTO sync_activity(worker, day, device, syncs, docs) VALUES(?,?,?,?,?) "
        "ON CONFLICT(worker, day, device) DO UPDATE SET "
        "syncs = syncs + excluded.syncs, docs = docs + excluded.docs",
        [(b.worker, b.day, b.device, b.syncs, b.docs) for b in buckets],
    )


def days(
    conn: sqlite3.Connection, since: str, workers: Collection[str] | None
) -> list[DayActivity]:
    columns = "SELECT worker, device, day, syncs, docs FROM sync_activity"
    if workers is None:
        sql, args = f"{columns} WHERE day >= ?", [since]
    else:
        # json_each keeps one statement for any number of workers (no 999-variable limit)
        sql = f"{columns} WHERE worker IN (SELECT value FROM json_each(?)) AND day >= ?"
        args = [json.dumps(sorted(set(workers))), since]
    rows = conn.execute(f"{sql} ORDER BY worker, day, device", args).fetchall()
    return [DayActivity(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in rows]


def totals(conn: sqlite3.Connection, since: str) -> dict[str, tuple[int, int]]:
    rows = conn.execute(
        "SELECT worker, sum(syncs), sum(docs) FROM sync_activity WHERE day >= ? GROUP BY worker",
        (since,),
    ).fetchall()
    return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}
