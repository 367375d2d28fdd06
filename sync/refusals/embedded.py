"""The embedded adapter of the refused-records port (sync.refusals.ports): SQLite tables.

Each call is one transaction (or one read) of the server's store (``SqliteStore``:
``write_tx`` through its single writer, ``read`` on a reader thread).  Tables::

    refused_docs(id PK, worker, device, doc_id, rev,     one row per refused
                 reason, detail, first_at, last_at,      (worker, doc_id, rev);
                 count, body_bytes, key_ref, body,       the body sealed (key_ref
                 truncated)                              + body), never plaintext
    refused_docs_dropped(worker PK, count, last_at)      refusals cut by the
                                                          per-worker cap, counted

Times are UTC ISO strings of one format, so they compare as text.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol, TypeVar

from sync.refusals.ports import Cursor, NewRefusal, Refusal, SealedBody

T = TypeVar("T")

TABLES = (
    """CREATE TABLE IF NOT EXISTS refused_docs(
        id INTEGER PRIMARY KEY, worker TEXT NOT NULL, device TEXT, doc_id TEXT NOT NULL,
        rev TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL, first_at TEXT NOT NULL,
        last_at TEXT NOT NULL, count INTEGER NOT NULL, body_bytes INTEGER NOT NULL,
        key_ref TEXT, body BLOB, truncated INTEGER NOT NULL DEFAULT 0,
        UNIQUE(worker, doc_id, rev))""",
    "CREATE INDEX IF NOT EXISTS refused_docs_by_worker ON refused_docs(worker, last_at, id)",
    "CREATE INDEX IF NOT EXISTS refused_docs_by_time ON refused_docs(last_at, id)",
    """CREATE TABLE IF NOT EXISTS refused_docs_dropped(
        worker TEXT PRIMARY KEY, count INTEGER NOT NULL, last_at TEXT NOT NULL)""",
)
_COLUMNS = "id, worker, device, doc_id, rev, reason, detail, first_at, last_at, count, body_bytes"


class Transactions(Protocol):
    """Where the SQL runs: the server's ``SqliteStore``."""

    async def write_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


def create_tables(conn: sqlite3.Connection) -> None:
    for statement in TABLES:
        conn.execute(statement)


class EmbeddedRefusals:
    """The port over SQLite: each call one transaction of ``transactions``."""

    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    @classmethod
    async def opened(cls, transactions: Transactions) -> EmbeddedRefusals:
        """The adapter, once its tables exist."""
        await transactions.write_tx(create_tables)
        return cls(transactions)

    async def record(self, refusals: Sequence[NewRefusal], per_worker: int) -> None:
        if refusals:
            await self._tx.write_tx(lambda conn: record(conn, refusals, per_worker))

    async def counts(self, workers: Collection[str]) -> dict[str, int]:
        return await self._tx.read(lambda conn: counts(conn, workers))

    async def for_workers(
        self, workers: Collection[str] | None, limit: int, before: str | None = None
    ) -> Sequence[Refusal]:
        cursor = None if before is None else Cursor.parse(before)
        return await self._tx.read(lambda conn: for_workers(conn, workers, limit, cursor))

    async def get(self, refusal_id: int) -> tuple[Refusal, SealedBody | None] | None:
        return await self._tx.read(lambda conn: get(conn, refusal_id))

    async def prune(self, older_than: str) -> int:
        return await self._tx.write_tx(lambda conn: prune(conn, older_than))


def record(conn: sqlite3.Connection, refusals: Sequence[NewRefusal], per_worker: int) -> None:
    """Insert each refusal, or count it on the row it repeats; then apply the per-worker cap."""
    conn.executemany(
        "INSERT INTO refused_docs(worker, device, doc_id, rev, reason, detail, first_at, "
        "last_at, count, body_bytes, key_ref, body, truncated) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT(worker, doc_id, rev) DO UPDATE SET count=count+excluded.count, "
        "last_at=max(last_at, excluded.last_at)",
        [_row(r) for r in refusals],
    )
    for worker in sorted({r.worker for r in refusals}):
        cut(conn, worker, per_worker)


def _row(r: NewRefusal) -> tuple[Any, ...]:
    body = r.body
    return (
        r.worker,
        r.device,
        r.doc_id,
        r.rev,
        r.reason,
        r.detail,
        r.at,
        r.at,
        r.times,
        r.body_bytes,
        None if body is None else body.key_ref,
        None if body is None else body.data,
        int(body is not None and body.truncated),
    )


def cut(conn: sqlite3.Connection, worker: str, per_worker: int) -> int:
    """Keep the newest ``per_worker`` refusals of ``worker``; count the rest as dropped."""
    old = conn.execute(
        "SELECT id, last_at FROM refused_docs WHERE worker=? ORDER BY last_at DESC, id DESC "
        "LIMIT -1 OFFSET ?",
        (worker, per_worker),
    ).fetchall()
    if not old:
        return 0
    conn.executemany("DELETE FROM refused_docs WHERE id=?", [(row[0],) for row in old])
    conn.execute(
        "INSERT INTO refused_docs_dropped(worker, count, last_at) VALUES(?,?,?) "
        "ON CONFLICT(worker) DO UPDATE SET count=count+excluded.count, "
        "last_at=max(last_at, excluded.last_at)",
        (worker, len(old), max(row[1] for row in old)),
    )
    return len(old)


def counts(conn: sqlite3.Connection, workers: Collection[str]) -> dict[str, int]:
    names = json.dumps(sorted(set(workers)))
    found: dict[str, int] = {}
    for sql in (
        "SELECT worker, count(*) FROM refused_docs WHERE worker IN "
        "(SELECT value FROM json_each(?)) GROUP BY worker",
        "SELECT worker, count FROM refused_docs_dropped WHERE worker IN "
        "(SELECT value FROM json_each(?))",
    ):
        for worker, n in conn.execute(sql, (names,)):
            found[worker] = found.get(worker, 0) + int(n)
    return found


def for_workers(
    conn: sqlite3.Connection, workers: Collection[str] | None, limit: int, cursor: Cursor | None
) -> list[Refusal]:
    where: list[str] = []
    params: list[Any] = []
    if workers is not None:
        where.append("worker IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(sorted(set(workers))))
    if cursor is not None:
        where.append("(last_at < ? OR (last_at = ? AND id < ?))")
        params += [cursor.last_at, cursor.last_at, cursor.id]
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM refused_docs {clause} ORDER BY last_at DESC, id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [_refusal(row) for row in rows]


def get(conn: sqlite3.Connection, refusal_id: int) -> tuple[Refusal, SealedBody | None] | None:
    row = conn.execute(
        f"SELECT {_COLUMNS}, key_ref, body, truncated FROM refused_docs WHERE id=?",
        (refusal_id,),
    ).fetchone()
    if row is None:
        return None
    key_ref, body, truncated = row[-3:]
    sealed = None if key_ref is None else SealedBody(key_ref, bytes(body), bool(truncated))
    return _refusal(row[:-3]), sealed


def prune(conn: sqlite3.Connection, older_than: str) -> int:
    gone = conn.execute("DELETE FROM refused_docs WHERE last_at < ?", (older_than,)).rowcount
    conn.execute("DELETE FROM refused_docs_dropped WHERE last_at < ?", (older_than,))
    return int(gone)


def _refusal(row: Sequence[Any]) -> Refusal:
    ident, worker, device, doc_id, rev, reason, detail, first_at, last_at, count, size = row
    return Refusal(
        worker, device, doc_id, rev, reason, detail, first_at, last_at, count, ident, size
    )
