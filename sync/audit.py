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
There each entry costs a CouchDB write, so a read also names what the caller's
changes pages announced and it reads next (:mod:`sync.replication.ahead`).

Storage is reached only through the audit port (:mod:`sync.audit_store`): the
chain's arithmetic is :mod:`sync.audit_store.links`, the SQL is
:mod:`sync.audit_store.embedded`, whose plain functions append *inside a
transaction the caller holds* (:func:`~sync.audit_store.embedded.note`,
:func:`~sync.audit_store.embedded.note_cli`,
:func:`~sync.audit_store.embedded.append_write`), and the server's writes into
the data dir's chain are :mod:`sync.audit_store.embedded_journal` (the
:class:`Local` of :class:`AuditLog`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import getpass
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog
from aiohttp import web

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
    from sync.auditjournal import Journal


log = structlog.get_logger("fieldsync.audit")

MAX_MOVE_DELAY = 30.0  # seconds between retries of a failing journal move


def cli_actor() -> str:
    """``cli:<os user>``: who ran a management command."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


@dataclass(frozen=True)
class AuditStamp:
    """Who writes and why: the store appends its entry inside the write's own transaction
    (on SQLite, :func:`sync.audit_store.embedded.append_write`)."""

    chain: ChainKey
    actor: str
    device: str | None
    action: str = "write"
    detail: str | None = None

    def entry(self, db: str | None, doc_ids: Sequence[str]) -> Entry:
        return Entry(now(), self.actor, self.device, self.action, db, named(doc_ids), self.detail)


class Local(Protocol):
    """The data dir's chain as the server writes it, each call one transaction of the
    store's single writer (:class:`sync.audit_store.embedded_journal.ServerChain`)."""

    chain: ChainKey

    async def append(self, entries: Sequence[Entry]) -> None:
        """Link ``entries`` after the chain's end (a group commit)."""
        ...

    async def move(self, entries: Sequence[tuple[int, Entry]]) -> None:
        """Move journaled entries (numbered by the journal) into the chain, once each."""
        ...


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
    :meth:`flush` hands what is pending to it and returns once the entries the
    request recorded are stored, in whichever append they went (another request's,
    or one :meth:`send_early` started while the answer was being made); a failed
    flush raises (the answer is not sent) and the remote keeps the entries, in
    order, for its next append.
    """

    def __init__(
        self,
        local: Local,
        journal: Journal | None = None,
        commit_delay: float = 0.2,
        remote: Remote | None = None,
    ) -> None:
        self._local = local
        self.remote = remote
        self.chain = local.chain
        self._journal = journal
        self._delay = commit_delay
        self._pending: list[Entry] = []
        self._journaled: list[tuple[int, Entry]] = []
        self._lock = asyncio.Lock()
        self._mover: asyncio.Task[None] | None = None
        # With a remote: entries are numbered as recorded; every one up to ``_stored`` is
        # stored.  Appends under way carry the number of the last entry they hold (the
        # remote keeps a failed append's entries for the next, and an append returns once
        # everything handed to it before is stored).
        self._recorded = 0
        self._stored = 0
        self._sending: list[tuple[int, asyncio.Future[None]]] = []

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
        self._recorded += 1
        stake = _STAKE.get(None)
        if stake is not None:  # what this request's answer waits for
            stake[0] = self._recorded

    @property
    def last_number(self) -> int:
        """The number of the last entry recorded (0: none yet)."""
        return self._recorded

    def wait_for(self, number: int) -> None:
        """The current request's answer also waits for entry ``number``, which another
        request recorded (:mod:`sync.replication.ahead`: an entry naming what it reads)."""
        holder = _STAKE.get(None)
        if holder is not None:
            holder[0] = max(holder[0], number)

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

    async def flush(self, upto: int | None = None) -> None:
        """Make everything recorded so far safe against a crash (journal, or chain).

        With a remote, ``upto`` (a request's last entry, :func:`stake`) is enough: a
        request waits for its own entries, wherever they went, not for everybody's."""
        if self.remote is not None:
            await self._stored_up_to(self._recorded if upto is None else upto)
            return
        if not self._pending:
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
                await self._local.append(entries)
            except BaseException:
                self._pending[:0] = entries
                raise

    def send_early(self) -> None:
        """With a remote: start storing what is recorded so far, while the answer is
        still being made (a ``_bulk_get``'s bodies opened and encoded meanwhile).
        :meth:`flush` waits for it, so no answer carrying these goes out before."""
        if self.remote is not None and self._pending:
            self._send()

    def _send(self) -> asyncio.Future[None]:
        """Hand what is pending to the remote (nothing: it tries what it kept again)."""
        assert self.remote is not None
        entries, self._pending = self._pending, []
        upto = self._recorded
        task = asyncio.ensure_future(self.remote.append(entries))
        task.add_done_callback(functools.partial(self._sent, upto))
        self._sending.append((upto, task))
        return task

    def _sent(self, upto: int, task: asyncio.Future[None]) -> None:
        self._sending.remove((upto, task))
        if not task.cancelled() and task.exception() is None:
            self._stored = max(self._stored, upto)

    async def _stored_up_to(self, target: int) -> None:
        """Return once entries 1..``target`` are stored; raise what a failed append met."""
        while self._stored < target:
            covering = [task for upto, task in self._sending if upto >= target]
            task = covering[0] if covering else self._send()
            # not gather: a request that goes away must not cancel an append others share
            await asyncio.wait([task])
            if self._stored < target:
                if task.cancelled():
                    raise asyncio.CancelledError
                error = task.exception()
                assert error is not None
                raise error

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
            await self._local.move(moving)
            del self._journaled[: len(moving)]
            if not self._journaled:
                self._journal.empty()

    async def close(self) -> None:
        if self._mover is not None and not self._mover.done():
            self._mover.cancel()
        if self.remote is not None:
            if self._sending:
                await asyncio.wait([task for _, task in self._sending])
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
# The number of the last entry a request recorded (set by :func:`middleware`).
_STAKE: contextvars.ContextVar[list[int]] = contextvars.ContextVar("audit_stake")


def stake() -> int | None:
    """The last entry the current request recorded (0: none); None outside a request."""
    holder = _STAKE.get(None)
    return None if holder is None else holder[0]


async def flush_before_answer(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: nothing leaves before what was recorded is on disk.

    A 5xx answer carries no data: it goes out even when the trail cannot be
    written (what is pending stays pending for the next flush).
    """
    audit = request.app.get(AUDIT)
    if audit is not None and response.status < 500:
        await audit.flush(stake())


@web.middleware
async def middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Flush inside the error middleware, so a failed flush answers 500 instead of the data."""
    audit = request.app.get(AUDIT)
    token = _STAKE.set([0])
    try:
        try:
            response = await handler(request)
        except Exception:
            if audit is not None:
                await audit.flush(stake())
            raise
        if audit is not None and not response.prepared:
            await audit.flush(stake())
        return response
    finally:
        _STAKE.reset(token)
