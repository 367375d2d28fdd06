"""The embedded adapter of the device port (device_registry.ports): the data dir's SQLite file.

:class:`EmbeddedDevices` runs each call as one transaction through the store's
single writer (``SqliteStore.write_tx``; reads through ``read``), or, for the
management commands, as one ``BEGIN IMMEDIATE`` on the data dir's file
(:meth:`EmbeddedDevices.on_file`, safe while the server runs).  SQLite has one
writer, so a check and the write it guards cannot interleave with another
change: that is what makes serials, IMEIs, numbers and codes unique here.  The
SQL is :mod:`device_registry.embedded_sql`; the tables
:mod:`device_registry.embedded_schema`.  An admin change's audit entry is
appended to the data dir's chain in the change's own transaction.

The server's adapter answers a live binding again for ``recent_seconds``
(``FIELDSYNC_DEVICES_CACHE_SECONDS``, counted from when its read was sent) and
forgets what it keeps after every change made through it, so a phone marked lost
on the console is refused at its very next request.  A management command's
adapter (:meth:`EmbeddedDevices.on_file`) keeps nothing; instead each of its
changes that can refuse a phone returns only once ``recent_seconds`` have passed
since it was written, so that every binding the running server still keeps was
read after it: the command says "done" only when it holds (docs/adr/0006, as
between CouchDB instances).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from device_registry import embedded_schema, embedded_sql
from device_registry.dump import TABLES
from device_registry.enrolment import Enrolment, IssuedCode, RefusedAttempt
from device_registry.lookup import number
from device_registry.model import Device, DeviceOwner, HistoryEntry, NewDevice
from device_registry.ports import Bound, DeviceKey, Heard, Note
from device_registry.status import DeviceStatus
from device_registry.verdict import worth_keeping
from sync.audit_store import embedded as embedded_audit
from sync.recent import OnOneFile
from sync.scopes import Scope
from sync.store.schema import with_file

T = TypeVar("T")


class Transactions(Protocol):
    """Where the SQL runs: ``SqliteStore`` (the server) or the data dir's file (CLI)."""

    async def write_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


class _FileTransactions:
    """Each call one transaction on the data dir's file, tables made first."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir

    async def write_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run(conn: sqlite3.Connection) -> T:
            embedded_schema.ensure(conn)
            return fn(conn)

        return await asyncio.to_thread(with_file, self._data_dir, run)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.write_tx(fn)


def _noted(note: Note | None, fn: Callable[[sqlite3.Connection], T]) -> Callable[..., T]:
    """``fn`` with ``note``'s audit entry appended in its transaction when it works."""

    def run(conn: sqlite3.Connection) -> T:
        result = fn(conn)
        if note is not None:
            chain = note.log.chain
            embedded_audit.note(conn, chain, note.actor, note.action, note.detail, note.device)
        return result

    return run


class EmbeddedDevices:
    """The port over SQLite: each call one transaction of ``transactions``."""

    def __init__(
        self,
        transactions: Transactions,
        recent_seconds: float = 0.0,
        *,
        beside_server: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._tx = transactions
        # The server's: live bindings read a moment ago (module docstring).  A command's
        # keeps nothing, and waits the server's bound out after a refusing change.
        self._kept: OnOneFile[Bound | None] = OnOneFile(
            recent_seconds, beside_server=beside_server, clock=clock, sleep=sleep
        )

    @classmethod
    async def opened(
        cls, transactions: Transactions, recent_seconds: float = 0.0
    ) -> EmbeddedDevices:
        """The server's adapter, once its tables exist."""
        await transactions.write_tx(embedded_schema.ensure)
        return cls(transactions, recent_seconds)

    @classmethod
    def on_file(cls, data_dir: Path, recent_seconds: float = 0.0) -> EmbeddedDevices:
        """For the CLI: each call opens the data dir's file (safe while the server runs);
        ``recent_seconds`` is the server's bound, which refusing changes wait out."""
        return cls(_FileTransactions(data_dir), recent_seconds, beside_server=True)

    async def _changing(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A change that refuses no phone (a new device, an edit, a code): what is kept
        here is forgotten anyway, whatever the outcome."""
        return await self._kept.change(self._tx.write_tx(fn), refusing=False)

    async def _refusing(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A change that can refuse a phone (status, worker, a new enrolment, an import):
        once written, answered only when no binding read before it can still be kept."""
        return await self._kept.change(self._tx.write_tx(fn), refusing=True)

    # -- reading ---------------------------------------------------------------------------
    async def get(self, serial: str) -> Device | None:
        return await self._tx.read(lambda conn: embedded_sql.get(conn, serial))

    async def list_all(self) -> list[Device]:
        return await self._tx.read(embedded_sql.list_all)

    async def history(self, serial: str) -> list[HistoryEntry]:
        return await self._tx.read(lambda conn: embedded_sql.history(conn, serial))

    async def owner_of_phone(self, phone: str) -> DeviceOwner | None:
        found = number(phone)
        if found is None:
            return None
        return await self._tx.read(lambda conn: embedded_sql.owner_of_phone(conn, found))

    # -- changing ----------------------------------------------------------------------------
    async def add(
        self, new: NewDevice, actor: str, scope: Scope, worker: str | None, note: Note | None
    ) -> Device:
        def run(conn: sqlite3.Connection) -> Device:
            device = embedded_sql.add(conn, new, actor, scope)
            if worker is not None:
                device = embedded_sql.assign(conn, new.serial, worker, actor, scope)
            return device

        return await self._changing(_noted(note, run))

    async def edit(
        self,
        serial: str,
        changes: Mapping[str, str | None],
        actor: str,
        scope: Scope,
        note: Note | None,
    ) -> Device:
        return await self._changing(
            _noted(note, lambda conn: embedded_sql.edit(conn, serial, changes, actor, scope))
        )

    async def assign(
        self, serial: str, worker: str, actor: str, scope: Scope, reason: str, note: Note | None
    ) -> Device:
        return await self._refusing(
            _noted(
                note, lambda conn: embedded_sql.assign(conn, serial, worker, actor, scope, reason)
            )
        )

    async def mark(
        self,
        serial: str,
        target: DeviceStatus,
        actor: str,
        scope: Scope,
        reason: str,
        note: Note | None,
    ) -> Device:
        return await self._refusing(
            _noted(note, lambda conn: embedded_sql.mark(conn, serial, target, actor, scope, reason))
        )

    # -- enrolment ---------------------------------------------------------------------------
    async def issue_code(
        self, serial: str, actor: str, scope: Scope, now: dt.datetime | None, note: Note | None
    ) -> IssuedCode:
        return await self._changing(
            _noted(note, lambda conn: embedded_sql.issue_code(conn, serial, actor, scope, now))
        )

    async def check_known(self, code: str) -> None:
        await self._tx.read(lambda conn: embedded_sql.check_known(conn, code))

    async def enrol(
        self,
        code: str,
        serial: str,
        worker: str,
        now: dt.datetime | None = None,
        versions: tuple[str, str] = ("", ""),
    ) -> Enrolment:
        return await self._refusing(
            lambda conn: embedded_sql.enrol(conn, code, serial, worker, now, versions)
        )

    # -- every request -----------------------------------------------------------------------
    async def binding(self, token_hash: str) -> Bound | None:
        """Read, or a live binding answered again within the bound (module docstring)."""
        return await self._kept.kept.read_once(
            token_hash,
            lambda: self._tx.read(lambda conn: embedded_sql.binding(conn, token_hash)),
            worth_keeping,
        )

    async def heard(self, heard: Mapping[DeviceKey, Heard]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            for key, seen in heard.items():
                embedded_sql.touch(conn, int(key), seen.at, seen.app_version, seen.os_version)

        if heard:
            await self._tx.write_tx(run)

    async def record_refusals(self, attempts: Sequence[RefusedAttempt]) -> None:
        if attempts:
            await self._tx.write_tx(lambda conn: embedded_sql.record_refusals(conn, attempts))

    async def refusals(self, serials: frozenset[str] | None, limit: int) -> list[dict[str, Any]]:
        return await self._tx.read(lambda conn: embedded_sql.refusals(conn, serials, limit))

    # -- moving a deployment -------------------------------------------------------------------
    async def export_all(self) -> dict[str, list[dict[str, Any]]]:
        return await self._tx.read(export_rows)

    async def import_all(self, dump: Mapping[str, Sequence[Mapping[str, Any]]]) -> int:
        return await self._refusing(lambda conn: import_rows(conn, dump))


def export_rows(conn: sqlite3.Connection) -> dict[str, list[dict[str, Any]]]:
    """Every row of the registry's tables, by table (see ``device_registry.dump``)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for table, columns in TABLES.items():
        cursor = conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid")
        found[table] = [dict(zip(columns, row, strict=True)) for row in cursor]
    return found


def import_rows(conn: sqlite3.Connection, dump: Mapping[str, Sequence[Mapping[str, Any]]]) -> int:
    """Insert the rows not there yet (by primary key); how many were new."""
    new = 0
    for table, columns in TABLES.items():
        marks = ",".join("?" * len(columns))
        sql = f"INSERT OR IGNORE INTO {table}({', '.join(columns)}) VALUES({marks})"
        for row in dump.get(table, ()):
            new += conn.execute(sql, [row.get(c) for c in columns]).rowcount
    return new
