"""The embedded adapter of the patient-ID port (barcode.ports): SQLite tables.

:class:`EmbeddedPatientIds` runs each call as one transaction through the
store's single writer (``SqliteStore.write_tx``), or, for the CLI, as one
``BEGIN IMMEDIATE`` on the data dir's file (:meth:`EmbeddedPatientIds.on_file`).
That is what makes allocation safe under concurrency: SQLite has one writer,
so reading the counter and moving it on cannot interleave with another
allocation, in this process or in a CLI run against the same file.  The plain
functions below take the connection of such a transaction.

Tables::

    patient_id_counter(scheme PK, next)        the next sequence number per scheme
    patient_ids(id PK, status, block, by, at,   every ID ever issued, reserved or
                retired_at, retired_reason)     retired; the PK is the uniqueness
    patient_id_blocks(id PK, device, by,        blocks handed to devices for
                      size, created)            offline registration

    status   issued    handed out online (API, CLI, SMS registration)
             reserved  in a device's block, handed out on the device
             retired   never to be handed out again

An ID is inserted with ``INSERT OR IGNORE``: a sequence number whose ID is
already in the table (retired, or recorded before the counter reached it) is
skipped, never reused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from barcode.ids import IdFormat
from barcode.ports import Block, Status, check_count, check_device, normalised
from sync.store.schema import with_file

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS patient_id_counter(scheme TEXT PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS patient_id_blocks(
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, requested_by TEXT NOT NULL,
    size INTEGER NOT NULL, created TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS patient_id_blocks_by_device ON patient_id_blocks(device);
CREATE TABLE IF NOT EXISTS patient_ids(
    id TEXT PRIMARY KEY, status TEXT NOT NULL, block INTEGER REFERENCES patient_id_blocks(id),
    allocated_by TEXT NOT NULL, allocated_at TEXT NOT NULL,
    retired_at TEXT, retired_reason TEXT);
CREATE INDEX IF NOT EXISTS patient_ids_by_block ON patient_ids(block);
"""


class Transactions(Protocol):
    """Where the SQL runs: ``SqliteStore`` (the server) or :class:`_FileTransactions` (CLI)."""

    async def write_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


class EmbeddedPatientIds:
    """The port over SQLite: each call one transaction of ``transactions``."""

    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    @classmethod
    async def opened(cls, transactions: Transactions) -> EmbeddedPatientIds:
        """The adapter, once its tables exist."""
        await transactions.write_tx(create_tables)
        return cls(transactions)

    @classmethod
    def on_file(cls, data_dir: Path) -> EmbeddedPatientIds:
        """For the CLI: each call opens the data dir's file (safe while the server runs)."""
        return cls(_FileTransactions(data_dir))

    async def allocate(self, fmt: IdFormat, count: int, by: str) -> list[str]:
        check_count("count", count)
        return await self._tx.write_tx(lambda conn: allocate(conn, fmt, count, by))

    async def reserve_block(self, fmt: IdFormat, size: int, device: str, by: str) -> Block:
        check_count("size", size)
        check_device(device)
        return await self._tx.write_tx(lambda conn: reserve_block(conn, fmt, size, device, by))

    async def blocks_of(self, device: str) -> list[Block]:
        return await self._tx.read(lambda conn: blocks_of(conn, device))

    async def retire(self, fmt: IdFormat, patient_id: str, by: str, reason: str) -> str:
        normalised(fmt, patient_id)  # a typo is refused before a transaction is opened
        return await self._tx.write_tx(lambda conn: retire(conn, fmt, patient_id, by, reason))

    async def status_of(self, patient_id: str) -> Status | None:
        return await self._tx.read(lambda conn: status_of(conn, patient_id))


class _FileTransactions:
    """One ``BEGIN IMMEDIATE`` on the data dir's file per call, on a thread (the CLI)."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir

    async def write_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run(conn: sqlite3.Connection) -> T:
            create_tables(conn)
            return fn(conn)

        return await asyncio.to_thread(with_file, self._data_dir, run)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.write_tx(fn)


def create_tables(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def allocate(
    conn: sqlite3.Connection,
    fmt: IdFormat,
    count: int,
    by: str,
    *,
    status: Status = Status.ISSUED,
    block: int | None = None,
) -> list[str]:
    """Hand out ``count`` new IDs, recorded as ``status`` (and ``block``) for ``by``."""
    check_count("count", count)
    at = now()
    number = _next_number(conn, fmt)
    ids: list[str] = []
    while len(ids) < count:
        candidate = fmt.id_for(number)
        number += 1
        inserted = conn.execute(
            "INSERT OR IGNORE INTO patient_ids(id, status, block, allocated_by, allocated_at) "
            "VALUES(?,?,?,?,?)",
            (candidate, status.value, block, by, at),
        )
        if inserted.rowcount == 1:
            ids.append(candidate)
    conn.execute(
        "INSERT INTO patient_id_counter(scheme, next) VALUES(?,?) "
        "ON CONFLICT(scheme) DO UPDATE SET next=excluded.next",
        (fmt.scheme.value, number),
    )
    return ids


def _next_number(conn: sqlite3.Connection, fmt: IdFormat) -> int:
    row = conn.execute(
        "SELECT next FROM patient_id_counter WHERE scheme=?", (fmt.scheme.value,)
    ).fetchone()
    return fmt.first_number if row is None else max(int(row[0]), fmt.first_number)


def reserve_block(
    conn: sqlite3.Connection, fmt: IdFormat, size: int, device: str, by: str
) -> Block:
    """Reserve ``size`` new IDs for ``device`` to hand out offline."""
    created = now()
    cursor = conn.execute(
        "INSERT INTO patient_id_blocks(device, requested_by, size, created) VALUES(?,?,?,?)",
        (device, by, size, created),
    )
    block_id = int(cursor.lastrowid or 0)
    ids = allocate(conn, fmt, size, by, status=Status.RESERVED, block=block_id)
    return Block(block_id, device, by, created, tuple(ids))


def blocks_of(conn: sqlite3.Connection, device: str) -> list[Block]:
    """The blocks reserved for ``device``, oldest first."""
    rows = conn.execute(
        "SELECT id, device, requested_by, created FROM patient_id_blocks WHERE device=? "
        "ORDER BY id",
        (device,),
    ).fetchall()
    blocks = []
    for block_id, owner, by, created in rows:
        ids = conn.execute(
            "SELECT id FROM patient_ids WHERE block=? ORDER BY rowid", (block_id,)
        ).fetchall()
        blocks.append(Block(block_id, owner, by, created, tuple(row[0] for row in ids)))
    return blocks


def retire(conn: sqlite3.Connection, fmt: IdFormat, patient_id: str, by: str, reason: str) -> str:
    """Mark an ID retired for good; an ID never allocated here is recorded as retired too.

    Returns the normalised ID.  Raises ValueError for an ID that fails its check
    digit: retiring a typo would be recorded against the wrong number.
    """
    patient_id = normalised(fmt, patient_id)
    at = now()
    conn.execute(
        "INSERT INTO patient_ids(id, status, allocated_by, allocated_at, retired_at, "
        "retired_reason) VALUES(?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
        "status=excluded.status, retired_at=excluded.retired_at, "
        "retired_reason=excluded.retired_reason",
        (patient_id, Status.RETIRED.value, by, at, at, reason),
    )
    return patient_id


def status_of(conn: sqlite3.Connection, patient_id: str) -> Status | None:
    row = conn.execute("SELECT status FROM patient_ids WHERE id=?", (patient_id,)).fetchone()
    return None if row is None else Status(row[0])
