"""An append-only, hash-chained audit trail of access to patient data.

Each entry says who (user), from which device, did what (read or write),
to which documents of which database, and when.  Entries are chained::

    hash(n) = sha256(hash(n-1) || canonical-json([ts, actor, device, action, db, doc_ids]))

with ``hash(0-1) = "0" * 64``, so editing or removing any entry breaks every
hash after it; SQLite triggers refuse UPDATE and DELETE on the table.
Entries are buffered and written in batches by one background task, off the
request path; :meth:`AuditLog.flush` writes what is pending (also on shutdown).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

GENESIS = "0" * 64
TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
)


@dataclass(frozen=True, slots=True)
class Entry:
    ts: str
    actor: str
    device: str | None
    action: str
    db: str | None
    doc_ids: tuple[str, ...]


def entry_hash(previous: str, entry: Entry) -> str:
    payload = json.dumps(
        [entry.ts, entry.actor, entry.device, entry.action, entry.db, list(entry.doc_ids)],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256((previous + payload).encode()).hexdigest()


def append(conn: sqlite3.Connection, entries: Sequence[Entry]) -> None:
    """Append entries to the chain (inside the caller's transaction)."""
    row = conn.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    previous = GENESIS if row is None else str(row[0])
    for entry in entries:
        digest = entry_hash(previous, entry)
        conn.execute(
            "INSERT INTO audit(ts, actor, device, action, db, doc_ids, prev_hash, hash) "
            "VALUES(?,?,?,?,?,?,?,?)",
            (
                entry.ts,
                entry.actor,
                entry.device,
                entry.action,
                entry.db,
                json.dumps(list(entry.doc_ids)),
                previous,
                digest,
            ),
        )
        previous = digest


def verify(conn: sqlite3.Connection) -> int | None:
    """The id of the first entry whose hash does not follow, or None if the chain holds."""
    previous = GENESIS
    rows = conn.execute(
        "SELECT id, ts, actor, device, action, db, doc_ids, prev_hash, hash FROM audit ORDER BY id"
    )
    for row in rows:
        entry = Entry(row[1], row[2], row[3], row[4], row[5], tuple(json.loads(row[6])))
        if row[7] != previous or entry_hash(previous, entry) != row[8]:
            return int(row[0])
        previous = str(row[8])
    return None


def install_triggers(conn: sqlite3.Connection) -> None:
    """Refuse UPDATE and DELETE on the trail (plain statements: safe inside a transaction)."""
    for statement in TRIGGERS:
        conn.execute(statement)


Writer = Callable[[Callable[[sqlite3.Connection], None]], Awaitable[None]]


class AuditLog:
    """Buffers entries and appends them in batches through the store's writer."""

    def __init__(self, write: Writer, batch_delay: float = 0.2) -> None:
        self._write = write
        self._pending: list[Entry] = []
        self._delay = batch_delay
        self._task: asyncio.Task[None] | None = None

    def record(
        self,
        actor: str,
        action: str,
        db: str | None,
        doc_ids: Sequence[str],
        device: str | None = None,
    ) -> None:
        now = dt.datetime.now(dt.UTC).isoformat()
        self._pending.append(Entry(now, actor, device, action, db, tuple(doc_ids)))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._delay)
        await self.flush()

    async def flush(self) -> None:
        entries, self._pending = self._pending, []
        if entries:
            await self._write(lambda conn: append(conn, entries))

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await self.flush()
