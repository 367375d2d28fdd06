"""The embedded adapter of the audit port (sync.audit_store.ports): SQLite tables.

The data dir's chain (:data:`~sync.audit_store.links.DATA_DIR`) is the ``audit``
table, its keyed head and the sealed chain key in ``meta``::

    audit(id PK, ts, actor, device, action, db, doc_ids JSON, detail, prev_hash, hash)
    meta  audit_chain_key          the chain key, wrapped by the master key (base64)
          audit_head               {"id", "hash", "mac"}: written with every append
          audit_journal_seq        the last read-journal line moved in
                                   (sync.audit_store.embedded_journal)

Any other chain (a store holds several, like CouchDB's) lives in ``audit_chains``,
its head in ``meta`` under ``audit_head:<chain>``::

    audit_chains(chain, seq, ts, actor, device, action, db, doc_ids, detail,
                 prev_hash, hash, PRIMARY KEY(chain, seq))

Triggers refuse UPDATE and DELETE on both tables.  An append links its entries
after the head, not after the table's last row: rows deleted at the tail then
show as a broken link, never as a clean chain; entries and head are written in
one transaction (:attr:`EmbeddedAudit.head_is_exact`).

The plain functions take the connection of a transaction that is already open:
that is how an admin change and its entry commit together (:func:`note`,
:func:`note_cli`), and a document write and its entry (:func:`append_write`).
:class:`EmbeddedAudit`
runs each port call as one transaction of the server's single writer, or, for
the CLI, as one ``BEGIN IMMEDIATE`` on the data dir's file; SQLite's one writer
is what keeps two writers off a chain.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Protocol, TypeVar

from sync.audit import AuditStamp, cli_actor
from sync.audit_store.links import (
    DATA_DIR,
    KEYED,
    ChainKey,
    Entry,
    Head,
    Linked,
    first_link,
    now,
    reseal_key,
    seal_key,
    unseal_key,
)
from sync.audit_store.ports import check_name
from sync.errors import StoreError
from sync.keys import KeyError_, MasterKey
from sync.store.schema import connect, db_path, with_file

T = TypeVar("T")

KEY_META = "audit_chain_key"
HEAD_META = "audit_head"
SEQ_META = "audit_journal_seq"
TRIGGER_NAMES = ("audit_no_update", "audit_no_delete")
TABLES = {
    "audit": TRIGGER_NAMES,
    "audit_chains": ("audit_chains_no_update", "audit_chains_no_delete"),
}
COLUMNS = "ts, actor, device, action, db, doc_ids, detail, prev_hash, hash"
CHAINS_TABLE = """
CREATE TABLE IF NOT EXISTS audit_chains(
    chain TEXT NOT NULL, seq INTEGER NOT NULL, ts TEXT NOT NULL, actor TEXT NOT NULL,
    device TEXT, action TEXT NOT NULL, db TEXT, doc_ids TEXT NOT NULL, detail TEXT,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL, PRIMARY KEY(chain, seq))
"""


def _triggers(table: str) -> tuple[str, ...]:
    names = TABLES[table]
    return tuple(
        f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE {verb} ON {table} "
        "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END"
        for name, verb in zip(names, ("UPDATE", "DELETE"), strict=True)
    )


# -- the chain key ----------------------------------------------------------------------------
def chain_key(conn: sqlite3.Connection, master: MasterKey, *, create: bool = True) -> bytes:
    """The data dir's chain key, made (and sealed by ``master``) on first use."""
    row = conn.execute("SELECT value FROM meta WHERE key=?", (KEY_META,)).fetchone()
    if row is not None:
        return unseal_key(master, str(row[0]))
    if not create:
        raise KeyError_("this data dir has no audit chain key (the server never started?)")
    key, sealed = seal_key(master)
    conn.execute("INSERT INTO meta(key, value) VALUES(?,?)", (KEY_META, sealed))
    if conn.execute("SELECT 1 FROM audit LIMIT 1").fetchone() is None:
        install_triggers(conn)  # a new trail; an old one keeps what it has (checked at start)
    return key


def open_chain(conn: sqlite3.Connection, master: MasterKey, *, create: bool = True) -> ChainKey:
    """The data dir's chain, its key made (and wrapped by ``master``) on first use."""
    return ChainKey(chain_key(conn, master, create=create))


def has_key(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM meta WHERE key=?", (KEY_META,)).fetchone() is not None


def rewrap_key(conn: sqlite3.Connection, old: MasterKey, new: MasterKey) -> None:
    """Master-key rotation: the chain key follows the data keys (caller's transaction)."""
    row = conn.execute("SELECT value FROM meta WHERE key=?", (KEY_META,)).fetchone()
    resealed = None if row is None else reseal_key(old, new, str(row[0]))
    if resealed is not None:
        conn.execute("UPDATE meta SET value=? WHERE key=?", (resealed, KEY_META))


# -- guards -------------------------------------------------------------------------------------
def install_triggers(conn: sqlite3.Connection) -> None:
    """Refuse UPDATE and DELETE on the trail (plain statements: safe inside a transaction)."""
    for statement in _triggers("audit"):
        conn.execute(statement)


def missing_triggers(conn: sqlite3.Connection, table: str = "audit") -> list[str]:
    found = {
        str(name) for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")
    }
    return [name for name in TABLES[table] if name not in found]


def create_chains_table(conn: sqlite3.Connection) -> None:
    """The table of named chains and its guards (plain statements, idempotent)."""
    conn.execute(CHAINS_TABLE)
    for statement in _triggers("audit_chains"):
        conn.execute(statement)


# -- heads --------------------------------------------------------------------------------------
def _head_key(chain: str) -> str:
    return HEAD_META if chain == DATA_DIR else f"{HEAD_META}:{chain}"


def read_head(conn: sqlite3.Connection, chain: str = DATA_DIR) -> Head | None:
    row = conn.execute("SELECT value FROM meta WHERE key=?", (_head_key(chain),)).fetchone()
    if row is None:
        return None
    try:
        found = json.loads(row[0])
        return Head(int(found["id"]), str(found["hash"]), str(found["mac"]))
    except (ValueError, KeyError, TypeError):
        return Head(0, "", "")  # unreadable: verification reports it as forged


def write_head(conn: sqlite3.Connection, head: Head, chain: str = DATA_DIR) -> None:
    value = json.dumps({"id": head.id, "hash": head.hash, "mac": head.mac})
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?,?)", (_head_key(chain), value))


# -- entries ------------------------------------------------------------------------------------
def _where(chain: str) -> tuple[str, tuple[object, ...]]:
    """The rows of ``chain``: (FROM ... WHERE clause with its seq column, parameters)."""
    if chain == DATA_DIR:
        return "FROM audit WHERE id", ()
    return "FROM audit_chains WHERE chain=? AND seq", (chain,)


def last_row(conn: sqlite3.Connection, chain: str = DATA_DIR) -> tuple[int, str] | None:
    """The id and hash of the chain's last stored row."""
    where, args = _where(chain)
    column = "id" if chain == DATA_DIR else "seq"
    row = conn.execute(
        f"SELECT {column}, hash {where} >= 0 ORDER BY {column} DESC LIMIT 1", args
    ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def append(
    conn: sqlite3.Connection, key: ChainKey, entries: Sequence[Entry], chain: str = DATA_DIR
) -> Head | None:
    """Append entries and move the head (inside the caller's transaction); the new head."""
    if not entries:
        return read_head(conn, chain)
    previous, next_id = _end(conn, key, chain)
    linked = key.link(previous, next_id, entries)
    for one in linked:
        _insert(conn, chain, one)
    head = key.head(linked[-1].seq, linked[-1].hash)
    write_head(conn, head, chain)
    return head


def note(
    conn: sqlite3.Connection,
    key: ChainKey,
    actor: str,
    action: str,
    detail: str,
    device: str | None = None,
) -> None:
    """Append one entry about no document (an admin change, a key operation)."""
    append(conn, key, [Entry(now(), actor, device, action, None, (), detail)])


def note_cli(conn: sqlite3.Connection, master: MasterKey, action: str, detail: str) -> None:
    """An entry for a management command (actor ``cli:<os user>``), in its transaction."""
    note(conn, open_chain(conn, master), cli_actor(), action, detail)


def append_write(
    conn: sqlite3.Connection, stamp: AuditStamp, db: str | None, doc_ids: Sequence[str]
) -> None:
    """The entry of a document write, appended in the write's own transaction (none when
    nothing was written)."""
    if doc_ids:
        append(conn, stamp.chain, [stamp.entry(db, doc_ids)])


def _end(conn: sqlite3.Connection, key: ChainKey, chain: str) -> tuple[str, int]:
    """What the next entry links to, and its number (the head first, then the rows)."""
    head, last = read_head(conn, chain), last_row(conn, chain)
    if head is not None:
        return head.hash, max(head.id, last[0] if last else 0) + 1
    if last is None:
        return first_link(key, chain), 1
    # The first keyed entry after legacy ones seals them; a lost head stays visible.
    sealing = chain == DATA_DIR and not last[1].startswith(KEYED)
    return (last[1] if sealing else first_link(key, chain)), last[0] + 1


def _insert(conn: sqlite3.Connection, chain: str, one: Linked) -> None:
    e = one.entry
    ids = json.dumps(list(e.doc_ids), ensure_ascii=False)
    values = (e.ts, e.actor, e.device, e.action, e.db, ids, e.detail, one.prev, one.hash)
    if chain == DATA_DIR:
        conn.execute(f"INSERT INTO audit(id, {COLUMNS}) VALUES(?,?,?,?,?,?,?,?,?,?)",
                     (one.seq, *values))  # fmt: skip
    else:
        conn.execute(f"INSERT INTO audit_chains(chain, seq, {COLUMNS}) "
                     "VALUES(?,?,?,?,?,?,?,?,?,?,?)", (chain, one.seq, *values))  # fmt: skip


def rows(conn: sqlite3.Connection, chain: str = DATA_DIR, first: int = 1) -> Iterator[Linked]:
    """The chain's rows numbered ``first`` or more, in order, as :class:`Linked`."""
    where, args = _where(chain)
    column = "id" if chain == DATA_DIR else "seq"
    sql = f"SELECT {column}, {COLUMNS} {where} >= ? ORDER BY {column}"
    for row in conn.execute(sql, (*args, first)):
        yield _linked(row)


def _linked(row: tuple[object, ...]) -> Linked:
    try:
        ids = tuple(str(i) for i in json.loads(str(row[6])))
    except ValueError:
        ids = ("<unreadable doc_ids>",)  # an edited row: its MAC cannot match
    device, db, detail = (None if v is None else str(v) for v in (row[3], row[5], row[7]))
    entry = Entry(str(row[1]), str(row[2]), device, str(row[4]), db, ids, detail)
    return Linked(int(str(row[0])), entry, str(row[8]), str(row[9]))


def hash_of(conn: sqlite3.Connection, seq: int, chain: str = DATA_DIR) -> str | None:
    where, args = _where(chain)
    row = conn.execute(f"SELECT hash {where}=?", (*args, seq)).fetchone()
    return None if row is None else str(row[0])


def has_entries(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM audit LIMIT 1").fetchone() is not None


def chain_names(conn: sqlite3.Connection) -> list[str]:
    names = {DATA_DIR} if has_entries(conn) or read_head(conn) else set()
    names |= {str(n) for (n,) in conn.execute("SELECT DISTINCT chain FROM audit_chains")}
    prefix = HEAD_META + ":"
    heads = "SELECT key FROM meta WHERE substr(key, 1, 11) = 'audit_head:'"
    for (meta_key,) in conn.execute(heads):
        names.add(str(meta_key)[len(prefix) :])
    return sorted(names)


def start(conn: sqlite3.Connection, key: ChainKey, chain: str) -> None:
    """Make ``chain`` with its head at 0 (before entry 1); StoreError if it exists."""
    if read_head(conn, chain) is not None or last_row(conn, chain) is not None:
        raise StoreError(
            f"audit chain {chain} exists already: two writers on one chain (each writer "
            "starts a chain of its own)"
        )
    write_head(conn, key.head(0, first_link(key, chain)), chain)


# -- the read journal's bookkeeping (sync.audit_store.embedded_journal) ----------------------
def committed_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key=?", (SEQ_META,)).fetchone()
    return 0 if row is None else int(row[0])


def set_committed_seq(conn: sqlite3.Connection, seq: int) -> None:
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?,?)", (SEQ_META, str(seq)))


def snapshot(data_dir: Path, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn`` on one consistent read snapshot of the data dir's file (``BEGIN`` …
    ``ROLLBACK``): a whole-chain check that never blocks the server's writer."""
    with closing(connect(db_path(data_dir), create=False)) as conn:
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("ROLLBACK")


# -- the port ---------------------------------------------------------------------------------
class Transactions(Protocol):
    """Where the SQL runs: ``SqliteStore`` (the server) or :class:`FileTransactions` (CLI)."""

    async def write_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


class EmbeddedAudit:
    """The port over SQLite: each call one transaction of ``transactions``."""

    head_is_exact = True

    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions
        self._unsent: dict[str, list[Entry]] = {}  # a failed append's, sent first by the next

    @classmethod
    async def opened(cls, transactions: Transactions) -> EmbeddedAudit:
        """The adapter, once the table of named chains exists."""
        await transactions.write_tx(create_chains_table)
        return cls(transactions)

    @classmethod
    def on_file(cls, data_dir: Path) -> EmbeddedAudit:
        """For the CLI: each call opens the data dir's file (safe while the server runs)."""
        return cls(FileTransactions(data_dir))

    async def chain_key(self, master: MasterKey, *, create: bool) -> ChainKey | None:
        def run(conn: sqlite3.Connection) -> ChainKey | None:
            if not create and not has_key(conn):
                return None
            return ChainKey(chain_key(conn, master, create=create))

        return await self._tx.write_tx(run)

    async def rewrap_key(self, old: MasterKey, new: MasterKey) -> None:
        await self._tx.write_tx(lambda conn: rewrap_key(conn, old, new))

    async def start(self, key: ChainKey, chain: str) -> None:
        check_name(chain)
        await self._tx.write_tx(lambda conn: start(conn, key, chain))

    async def append(self, key: ChainKey, chain: str, entries: Sequence[Entry]) -> Head:
        check_name(chain)
        batch = self._unsent.pop(chain, []) + list(entries)  # in order: no await before this
        try:
            head = await self._tx.write_tx(lambda conn: append(conn, key, batch, chain))
        except BaseException:
            self._unsent[chain] = batch + self._unsent.get(chain, [])
            raise
        return head if head is not None else key.head(0, first_link(key, chain))

    async def head(self, chain: str) -> Head | None:
        return await self._tx.read(lambda conn: read_head(conn, check_name(chain)))

    async def entries(self, chain: str, first: int = 1) -> list[Linked]:
        return await self._tx.read(lambda conn: list(rows(conn, check_name(chain), first)))

    async def chains(self) -> list[str]:
        return await self._tx.read(chain_names)

    async def guard_problems(self) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            missing = missing_triggers(conn) if has_entries(conn) else []
            named = conn.execute("SELECT 1 FROM audit_chains LIMIT 1").fetchone() is not None
            return missing + (missing_triggers(conn, "audit_chains") if named else [])

        return await self._tx.read(run)

    async def close(self) -> None:
        return None


class FileTransactions:
    """One ``BEGIN IMMEDIATE`` on the data dir's file per call, on a thread (the CLI)."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir

    async def write_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run(conn: sqlite3.Connection) -> T:
            create_chains_table(conn)
            return fn(conn)

        return await asyncio.to_thread(with_file, self._data_dir, run)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.write_tx(fn)
