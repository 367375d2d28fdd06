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
(:mod:`sync.auditcouch`, the :class:`Remote` of :class:`AuditLog`), stored before
the answer goes out; admin changes and management commands, which change the
data dir's file, keep their entry in the data dir's chain, in the same
transaction.  ``fieldsync audit verify`` checks both.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import getpass
import hashlib
import hmac
import json
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import structlog
from aiohttp import web

from sync.errors import FieldsyncError
from sync.keys import KeyError_, MasterKey

if TYPE_CHECKING:
    from sync.auditjournal import Journal

log = structlog.get_logger("fieldsync.audit")

GENESIS = "0" * 64
LONG_ID = 200  # characters; longer document ids are named by their SHA-256 in the trail
MAX_MOVE_DELAY = 30.0  # seconds between retries of a failing journal move
KEYED = "k1:"
KEY_LABEL = b"fieldsync audit chain v1"
KEY_META = "audit_chain_key"
HEAD_META = "audit_head"
TRIGGER_NAMES = ("audit_no_update", "audit_no_delete")
TRIGGERS = tuple(
    f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE {verb} ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END"
    for name, verb in zip(TRIGGER_NAMES, ("UPDATE", "DELETE"), strict=True)
)


@dataclass(frozen=True, slots=True)
class Entry:
    ts: str
    actor: str
    device: str | None
    action: str
    db: str | None
    doc_ids: tuple[str, ...]
    detail: str | None = None


def named(doc_ids: Sequence[str]) -> tuple[str, ...]:
    """Document ids as the trail names them: a long id by its SHA-256, so that reading
    documents with huge ids cannot make every read write megabytes of trail."""
    return tuple(
        i if len(i) <= LONG_ID else "sha256:" + hashlib.sha256(i.encode()).hexdigest()
        for i in doc_ids
    )


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def cli_actor() -> str:
    """``cli:<os user>``: who ran a management command."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def entry_hash(previous: str, entry: Entry) -> str:
    """The legacy, unkeyed link (entries written before the chain was keyed)."""
    payload = json.dumps(
        [entry.ts, entry.actor, entry.device, entry.action, entry.db, list(entry.doc_ids)],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256((previous + payload).encode()).hexdigest()


@dataclass(frozen=True)
class Head:
    id: int
    hash: str
    mac: str


class Chain:
    """The chain key and what it computes: entry MACs, the head checkpoint, appends."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, data: bytes) -> str:
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def entry_mac(self, previous: str, entry_id: int, entry: Entry) -> str:
        fields = [entry_id, entry.ts, entry.actor, entry.device, entry.action, entry.db]
        fields += [list(entry.doc_ids), entry.detail]
        payload = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
        return KEYED + self._mac((previous + payload).encode())

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

    def line_mac(self, payload: bytes) -> str:
        """The MAC of a read-journal line (:mod:`sync.auditjournal`)."""
        return self._mac(b"journal\x00" + payload)

    def head_mac(self, entry_id: int, digest: str) -> str:
        return self._mac(f"head\x00{entry_id}\x00{digest}".encode())

    def append(self, conn: sqlite3.Connection, entries: Sequence[Entry]) -> None:
        """Append entries and move the head (inside the caller's transaction).

        The link comes from the head checkpoint, not from the table's last row:
        rows deleted at the tail then show as a broken link, never as a clean chain.
        """
        if not entries:
            return
        head = read_head(conn)
        last = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        if head is not None:
            previous, next_id = head.hash, max(head.id, last[0] if last else 0) + 1
        elif last is None:
            previous, next_id = GENESIS, 1
        else:  # the first keyed entry after legacy ones seals them; a lost head stays visible
            sealing = not str(last[1]).startswith(KEYED)
            previous, next_id = (str(last[1]) if sealing else GENESIS), int(last[0]) + 1
        for entry in entries:
            digest = self.entry_mac(previous, next_id, entry)
            conn.execute(
                "INSERT INTO audit(id, ts, actor, device, action, db, doc_ids, detail, "
                "prev_hash, hash) VALUES(?,?,?,?,?,?,?,?,?,?)",
                (next_id, entry.ts, entry.actor, entry.device, entry.action, entry.db,
                 json.dumps(list(entry.doc_ids), ensure_ascii=False), entry.detail, previous,
                 digest),
            )  # fmt: skip
            previous, next_id = digest, next_id + 1
        write_head(conn, Head(next_id - 1, previous, self.head_mac(next_id - 1, previous)))


def read_head(conn: sqlite3.Connection) -> Head | None:
    row = conn.execute("SELECT value FROM meta WHERE key=?", (HEAD_META,)).fetchone()
    if row is None:
        return None
    try:
        found = json.loads(row[0])
        return Head(int(found["id"]), str(found["hash"]), str(found["mac"]))
    except (ValueError, KeyError, TypeError):
        return Head(0, "", "")  # unreadable: verification reports it as forged


def write_head(conn: sqlite3.Connection, head: Head) -> None:
    value = json.dumps({"id": head.id, "hash": head.hash, "mac": head.mac})
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?,?)", (HEAD_META, value))


def chain(conn: sqlite3.Connection, master: MasterKey, *, create: bool = True) -> Chain:
    """The data dir's chain, its key made (and wrapped by ``master``) on first use."""
    row = conn.execute("SELECT value FROM meta WHERE key=?", (KEY_META,)).fetchone()
    if row is not None:
        return Chain(master.unwrap(KEY_LABEL, base64.b64decode(row[0])))
    if not create:
        raise KeyError_("this data dir has no audit chain key (the server never started?)")
    key = secrets.token_bytes(32)
    wrapped = base64.b64encode(master.wrap(KEY_LABEL, key)).decode()
    conn.execute("INSERT INTO meta(key, value) VALUES(?,?)", (KEY_META, wrapped))
    if conn.execute("SELECT 1 FROM audit LIMIT 1").fetchone() is None:
        install_triggers(conn)  # a new trail; an old one keeps what it has (checked at start)
    return Chain(key)


def note_cli(conn: sqlite3.Connection, master: MasterKey, action: str, detail: str) -> None:
    """An entry for a management command (actor ``cli:<os user>``), in its transaction."""
    chain(conn, master).note(conn, cli_actor(), action, detail)


def rewrap_key(conn: sqlite3.Connection, old: MasterKey, new: MasterKey) -> None:
    """Master-key rotation: the chain key follows the data keys (caller's transaction)."""
    row = conn.execute("SELECT value FROM meta WHERE key=?", (KEY_META,)).fetchone()
    if row is None:
        return
    wrapped = base64.b64decode(row[0])
    try:
        new.unwrap(KEY_LABEL, wrapped)
        return  # already under the new key (a resumed run)
    except KeyError_:
        key = old.unwrap(KEY_LABEL, wrapped)
    value = base64.b64encode(new.wrap(KEY_LABEL, key)).decode()
    conn.execute("UPDATE meta SET value=? WHERE key=?", (value, KEY_META))


def install_triggers(conn: sqlite3.Connection) -> None:
    """Refuse UPDATE and DELETE on the trail (plain statements: safe inside a transaction)."""
    for statement in TRIGGERS:
        conn.execute(statement)


def missing_triggers(conn: sqlite3.Connection) -> list[str]:
    found = {
        str(name) for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")
    }
    return [name for name in TRIGGER_NAMES if name not in found]


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


Writer = Callable[[Callable[[sqlite3.Connection], None]], Awaitable[None]]


class Remote(Protocol):
    """Where entries go instead of the data dir's chain when several instances record
    (:class:`sync.auditcouch.CouchChain`): ``append`` returns once they are stored."""

    async def append(self, entries: Sequence[Entry]) -> None: ...

    async def close(self) -> None: ...


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
