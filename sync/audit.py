"""An append-only, keyed hash chain of access to patient data and of admin changes.

Each entry says who (``actor``: a user, or ``cli:<os user>``), from which
device, did what (``action``), to which documents of which database, when, and
a ``detail`` (a place, a status, a reason: never PHI, never a secret).
Entries are chained::

    hash(n) = "k1:" + hmac_sha256(K, hash(n-1) || canonical-json([id, ts, actor, device,
                                                                 action, db, doc_ids, detail]))

with ``hash(0) = "0" * 64``.  ``K`` is the chain key: 32 random bytes wrapped by
the master key in ``meta`` (``keys rewrap`` re-wraps it with the data keys), so
whoever can edit the file but lacks the master key cannot recompute the chain.
A keyed *head* checkpoint in ``meta`` (``id``, ``hash``, MAC), written in the
same transaction as every append, makes a truncated tail visible; SQLite
triggers refuse UPDATE and DELETE on the table.

Data dirs written before the chain was keyed hold plain-SHA-256 entries
(``hash(n) = sha256(hash(n-1) || json([ts, actor, device, action, db, doc_ids]))``);
the first keyed entry links to the last of them, which seals them: verification
reports that legacy part separately (:mod:`sync.auditverify`).

Writes of documents append their entry inside the write's own transaction
(:class:`AuditStamp`, given to ``DocStore.write``).  Other entries (reads,
refusals) are recorded in memory by :meth:`AuditLog.record` and made safe by
:meth:`AuditLog.flush`, which the app awaits before any answer goes out
(:func:`flush_before_answer`): appended to the read journal
(:mod:`sync.auditjournal`), from which they move into the chain within a
fraction of a second, or after a crash at the next start.  No answer is sent
whose entry a crash of the server could lose.

With CouchDB configured (several instances), entries of reads, refusals and
document writes go instead to this instance's own chain in CouchDB
(:class:`ChainWriter` over :mod:`sync.audit_store.couchdb`, the :class:`Remote`
of :class:`AuditLog`), stored before the answer goes out; admin changes and
management commands, which change the data dir's file, keep their entry in the
data dir's chain, in the same transaction.  ``fieldsync audit verify`` checks both.

Storage is reached only through the audit port (:mod:`sync.audit_store`): the
chain's arithmetic is :mod:`sync.audit_store.links`, the SQL is
:mod:`sync.audit_store.embedded`.  The functions here that take a SQLite
connection (:meth:`Chain.note`, :meth:`Chain.append`, :func:`chain`,
:func:`note_cli`, :func:`rewrap_key`, ...) are the embedded adapter's way to
append *inside a transaction the caller holds*, kept under their old names for
the domains that call them.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import structlog
from aiohttp import web

from sync.audit_store import embedded

# Entry, now, Head and the chain's constants are named here too (by other domains, tests).
from sync.audit_store.links import GENESIS as GENESIS
from sync.audit_store.links import KEYED as KEYED
from sync.audit_store.links import ChainKey, named
from sync.audit_store.links import Entry as Entry
from sync.audit_store.links import Head as Head
from sync.audit_store.links import entry_hash as entry_hash
from sync.audit_store.links import now as now
from sync.audit_store.ports import AuditStore
from sync.errors import FieldsyncError
from sync.keys import MasterKey

if TYPE_CHECKING:
    import sqlite3

    from sync.auditjournal import Journal

    Writer = Callable[[Callable[[sqlite3.Connection], None]], Awaitable[None]]


log = structlog.get_logger("fieldsync.audit")

MAX_MOVE_DELAY = 30.0  # seconds between retries of a failing journal move
KEY_META = embedded.KEY_META
HEAD_META = embedded.HEAD_META
TRIGGER_NAMES = embedded.TRIGGER_NAMES


def cli_actor() -> str:
    """``cli:<os user>``: who ran a management command."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


class Chain(ChainKey):
    """The chain key (:class:`~sync.audit_store.links.ChainKey`), and the data dir's chain
    appended inside a transaction the caller holds (the embedded adapter's SQL)."""

    def note(
        self,
        conn: sqlite3.Connection,
        actor: str,
        action: str,
        detail: str,
        device: str | None = None,
    ) -> None:
        """Append one entry about no document (an admin change, a key operation)."""
        self.append(conn, [Entry(now(), actor, device, action, None, (), detail)])

    def append(self, conn: sqlite3.Connection, entries: Sequence[Entry]) -> None:
        """Append entries and move the head (inside the caller's transaction).

        The link comes from the head checkpoint, not from the table's last row:
        rows deleted at the tail then show as a broken link, never as a clean chain.
        """
        embedded.append(conn, self, entries)


def read_head(conn: sqlite3.Connection) -> Head | None:
    return embedded.read_head(conn)


def write_head(conn: sqlite3.Connection, head: Head) -> None:
    embedded.write_head(conn, head)


def chain(conn: sqlite3.Connection, master: MasterKey, *, create: bool = True) -> Chain:
    """The data dir's chain, its key made (and wrapped by ``master``) on first use."""
    return Chain(embedded.chain_key(conn, master, create=create))


def note_cli(conn: sqlite3.Connection, master: MasterKey, action: str, detail: str) -> None:
    """An entry for a management command (actor ``cli:<os user>``), in its transaction."""
    chain(conn, master).note(conn, cli_actor(), action, detail)


def rewrap_key(conn: sqlite3.Connection, old: MasterKey, new: MasterKey) -> None:
    """Master-key rotation: the chain key follows the data keys (caller's transaction)."""
    embedded.rewrap_key(conn, old, new)


def install_triggers(conn: sqlite3.Connection) -> None:
    """Refuse UPDATE and DELETE on the trail (plain statements: safe inside a transaction)."""
    embedded.install_triggers(conn)


def missing_triggers(conn: sqlite3.Connection) -> list[str]:
    return embedded.missing_triggers(conn)


@dataclass(frozen=True)
class AuditStamp:
    """Who writes and why: the store appends it inside the write's own transaction."""

    chain: Chain
    actor: str
    device: str | None
    action: str = "write"
    detail: str | None = None

    def entry(self, db: str | None, doc_ids: Sequence[str]) -> Entry:
        return Entry(now(), self.actor, self.device, self.action, db, named(doc_ids), self.detail)

    def append(self, conn: sqlite3.Connection, db: str | None, doc_ids: Sequence[str]) -> None:
        if doc_ids:
            self.chain.append(conn, [self.entry(db, doc_ids)])


class Remote(Protocol):
    """Where entries go instead of the data dir's chain when several instances record
    (:class:`ChainWriter`): ``append`` returns once they are stored."""

    async def append(self, entries: Sequence[Entry]) -> None: ...

    async def close(self) -> None: ...


class ChainWriter:
    """This process's own chain in an audit store (the :class:`Remote` of :class:`AuditLog`).

    It claims the chain (:meth:`AuditStore.start`: refused if the name is taken)
    on its first append, so a server started while the store is away serves once
    it is back; entries recorded meanwhile wait here, in order, and no answer
    carrying them goes out.  Once started, the store numbers entries in call
    order and keeps those of a failed append for the next (sync.audit_store.ports).
    """

    def __init__(self, store: AuditStore, master: MasterKey, name: str) -> None:
        self.store = store
        self.instance = name
        self._master = master
        self._key: ChainKey | None = None
        self._waiting: list[Entry] = []  # recorded before the chain started
        self._starting = asyncio.Lock()

    @property
    def started(self) -> bool:
        return self._key is not None

    async def append(self, entries: Sequence[Entry]) -> None:
        """Store ``entries`` (and any that waited for the start) at the chain's end."""
        self._waiting.extend(entries)
        key = self._key or await self._start()
        batch, self._waiting = self._waiting, []
        await self.store.append(key, self.instance, batch)

    async def _start(self) -> ChainKey:
        async with self._starting:
            if self._key is None:
                key = await self.store.chain_key(self._master, create=True)
                assert key is not None
                await self.store.start(key, self.instance)
                self._key = key
                log.info("audit_chain_started", instance=self.instance)
            return self._key

    async def close(self) -> None:
        await self.store.close()


class AuditLog:
    """Entries recorded in memory, made crash-safe before any answer goes out.

    With a journal (:mod:`sync.auditjournal`, the server's way), :meth:`flush`
    appends what is pending to the journal file (no transaction: nothing for the
    store's readers to notice) and a background task moves journaled entries into
    the chain every ``commit_delay`` seconds, in one transaction.  Without one
    (tools, some tests), :meth:`flush` is a group commit into the chain itself:
    concurrent requests share one transaction.  With a ``remote`` (CouchDB),
    :meth:`flush` hands what is pending to it and returns once it is stored; a
    failed flush raises (the answer is not sent) and the remote keeps the
    entries, in order, for its next append.
    """

    def __init__(
        self,
        write: Writer,
        chain: Chain,
        journal: Journal | None = None,
        commit_delay: float = 0.2,
        remote: Remote | None = None,
    ) -> None:
        self._write = write
        self.remote = remote
        self.chain = chain
        self._journal = journal
        self._delay = commit_delay
        self._pending: list[Entry] = []
        self._journaled: list[tuple[int, Entry]] = []
        self._lock = asyncio.Lock()
        self._mover: asyncio.Task[None] | None = None

    def record(
        self,
        actor: str,
        action: str,
        db: str | None,
        doc_ids: Sequence[str],
        device: str | None = None,
        *,
        detail: str | None = None,
    ) -> None:
        self._pending.append(Entry(now(), actor, device, action, db, named(doc_ids), detail))

    def stamp(
        self, actor: str, device: str | None, action: str = "write", detail: str | None = None
    ) -> AuditStamp:
        return AuditStamp(self.chain, actor, device, action, detail)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def backlog(self) -> tuple[int, str | None]:
        """Entries recorded but not yet in the chain, and the time of the oldest (metrics)."""
        waiting = [entry.ts for _, entry in self._journaled] + [e.ts for e in self._pending]
        return len(waiting), min(waiting, default=None)

    async def flush(self) -> None:
        """Make everything recorded so far safe against a crash (journal, or chain)."""
        if not self._pending:
            return
        if self.remote is not None:  # a failed append keeps them, numbered, for the next
            entries, self._pending = self._pending, []
            await self.remote.append(entries)
            return
        if self._journal is not None:
            entries, self._pending = self._pending, []
            try:
                if not self._journaled:
                    self._journal.empty()  # all it holds is in the chain: keep it short
                self._journaled.extend(self._journal.append(entries))
            except OSError:
                self._pending[:0] = entries
                raise
            self._schedule()
            return
        async with self._lock:  # the flush under way wrote ours, or we write all pending
            entries, self._pending = self._pending, []
            if not entries:
                return
            try:
                await self._write(lambda conn: self.chain.append(conn, entries))
            except BaseException:
                self._pending[:0] = entries
                raise

    def _schedule(self) -> None:
        if self._mover is None or self._mover.done():
            self._mover = asyncio.get_running_loop().create_task(self._move_later())

    async def _move_later(self) -> None:
        delay = self._delay
        while self._journaled:  # what arrives while a move runs goes with the next
            await asyncio.sleep(delay)
            try:
                await self.commit()
                delay = self._delay
            except Exception:  # kept in the journal: the next move (or start) takes them
                log.exception("audit_journal_move_failed", waiting=len(self._journaled))
                delay = min(delay * 4, MAX_MOVE_DELAY)  # a full disk: no log line per 0.2 s

    async def commit(self) -> None:
        """Move journaled entries into the chain now; empty the journal when all are in."""
        await self.flush()
        async with self._lock:
            if self._journal is None or not self._journaled:
                return
            moving = list(self._journaled)
            await self._write(self._journal.mover(self.chain, moving))
            del self._journaled[: len(moving)]
            if not self._journaled:
                self._journal.empty()

    async def close(self) -> None:
        if self._mover is not None and not self._mover.done():
            self._mover.cancel()
        if self.remote is not None:
            entries, self._pending = self._pending, []
            try:  # with what a failed append left (CouchDB away): one last try
                await self.remote.append(entries)
            except FieldsyncError:
                log.exception("audit_entries_not_stored_at_shutdown")
            await self.remote.close()
            return
        await self.commit()
        if self._journal is not None:
            self._journal.close()


AUDIT = web.AppKey("audit", AuditLog)
T = TypeVar("T")


def audited(
    request: web.Request,
    who: tuple[str, str | None],
    action: str,
    detail: str | Callable[[T], str],
    fn: Callable[[sqlite3.Connection], T],
) -> Callable[[sqlite3.Connection], T]:
    """``fn`` with an entry (``who`` = actor, device) appended in its transaction when it works.

    For admin changes (users, places, devices, settings): the change and its
    entry commit together or not at all.  ``detail`` may be worked out from
    ``fn``'s result (what it was before, what it is now).
    """
    audit = request.app.get(AUDIT)

    def run(conn: sqlite3.Connection) -> T:
        result = fn(conn)
        if audit is not None:
            said = detail if isinstance(detail, str) else detail(result)
            audit.chain.note(conn, who[0], action, said, who[1])
        return result

    return run


async def flush_before_answer(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: nothing leaves before what was recorded is on disk.

    A 5xx answer carries no data: it goes out even when the trail cannot be
    written (what is pending stays pending for the next flush).
    """
    audit = request.app.get(AUDIT)
    if audit is not None and response.status < 500:
        await audit.flush()


@web.middleware
async def middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Flush inside the error middleware, so a failed flush answers 500 instead of the data."""
    audit = request.app.get(AUDIT)
    try:
        response = await handler(request)
    except Exception:
        if audit is not None:
            await audit.flush()
        raise
    if audit is not None and not response.prepared:
        await audit.flush()
    return response
