"""The CouchDB adapter of the audit port (sync.audit_store.ports): ``<prefix>audit``.

With ``FIELDSYNC_COUCHDB_URL`` set, several server instances record at once.
Each owns a chain of its own (named by a new instance id at every start, see
:mod:`sync.couchaudit`), so no append has to win a race::

    key:chain                    the chain key, sealed by the master key (made once,
                                 by whichever instance starts first; 409: take the winner's)
    head:<chain>                 {"seq", "hash", "mac"}: how far the chain is known to reach
    chain:<chain>:<seq, 12>      {"instance", "seq", "ts", "actor", "device", "action", "db",
                                  "doc_ids", "detail", "prev", "hash"}

Entries are created with ``_bulk_docs`` without ``_rev``: a conflict is either
an earlier try of ours whose answer was lost (same hash: fine) or another
writer on the chain (a bug: refused with ``StoreError``, nothing overwritten).
The head moves after the entries, at most once every ``HEAD_EVERY`` second
while entries keep coming (then once more, a moment after the last; and at
close), so it is a lower bound (:attr:`CouchAudit.head_is_exact` is False):
entries past it are those appended since it last moved, or by a process killed
before it moved; a chain shorter than its head lost entries at its tail (the
last second's entries are covered by the links alone).  Moving it with every
append doubled the audit trail's writes, one per page of a phone's pull.

**Durable before answered.**  ``append`` returns once CouchDB answered that it
stored the entries (201, or 202: on fewer than a quorum of copies).  Entries are
numbered as soon as ``append`` is called (no await in between: in call order);
whoever holds the chain's lock sends everything numbered so far, so concurrent
requests share one ``_bulk_docs``.  Entries whose append failed are kept with
their numbers and sent first by the next append, so a lost answer never leaves
a gap or a duplicate.

**Restart continues a chain.**  The first append of a chain in a process reads
its end (the last entry listed by ``_all_docs``, then by id, a quorum read, any
entries past it that a lagging node did not list; and the head) and links after
it.  That is safe only when no other process writes the chain:
:meth:`CouchAudit.start` is the way to claim a new chain, and refuses one that
exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from sync.audit_store.links import (
    ChainKey,
    Entry,
    Head,
    Linked,
    first_link,
    reseal_key,
    seal_key,
    unseal_key,
)
from sync.audit_store.ports import check_name
from sync.errors import Conflict, FieldsyncError, StoreError
from sync.keys import MasterKey
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.once import CreatedOnce

log = structlog.get_logger("fieldsync.audit")

DB_NAME = "audit"  # after the deployment's prefix
KEY_DOC = "key:chain"
PAGE = 2000
HEAD_EVERY = 1.0  # seconds: a chain's head moves at most this often while entries come
PROBE = 16  # entries read by id past the listed end of a chain, a request at a time
_TRIES = 20


def entry_doc_id(chain: str, seq: int) -> str:
    return f"chain:{chain}:{seq:012d}"


def head_doc_id(chain: str) -> str:
    return f"head:{chain}"


@dataclass
class _Tail:
    """One chain as this process writes it: numbered so far, stored so far."""

    seq: int  # the last number given
    previous: str  # its hash
    stored: int  # the highest number known to be stored, and its hash
    stored_hash: str
    head_rev: str | None = None
    unsent: list[dict[str, Any]] = field(default_factory=list)  # numbered, not known stored
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    head_seq: int = -1  # what the stored head says, as far as this process wrote it
    head_moved: float = -HEAD_EVERY  # when (monotonic)
    head_later: asyncio.Task[None] | None = None  # the move a moment after the last append
    key: ChainKey | None = None  # the chain's key, for that move


class CouchAudit:
    head_is_exact = False

    def __init__(self, client: CouchClient, db: str) -> None:
        self.client = client
        self.db = db
        self._home = CreatedOnce(client, db)
        self._tails: dict[str, _Tail] = {}
        self._opening = asyncio.Lock()

    @classmethod
    def for_prefix(cls, client: CouchClient, prefix: str) -> CouchAudit:
        return cls(client, prefix + DB_NAME)

    # -- the key ----------------------------------------------------------------------------
    async def chain_key(self, master: MasterKey, *, create: bool) -> ChainKey | None:
        """The key every instance shares (made once; a rival's 409: take the winner's)."""
        if create:
            await self._home.ensure()
        elif not await self._exists():
            return None
        for _ in range(_TRIES):
            leaves = await self._leaves(KEY_DOC)
            if leaves:
                return ChainKey(unseal_key(master, str(leaves[0]["wrapped"])))
            if not create:
                return None
            _, sealed = seal_key(master)
            with contextlib.suppress(Conflict):
                await self.client.json("PUT", path(self.db, KEY_DOC), body={"wrapped": sealed})
        raise StoreError("could not read or make the audit chain key in CouchDB")

    async def rewrap_key(self, old: MasterKey, new: MasterKey) -> None:
        if not await self._exists():
            return  # no instance has recorded yet
        for _ in range(_TRIES):
            leaves = await self._leaves(KEY_DOC)
            if not leaves:
                return
            resealed = reseal_key(old, new, str(leaves[0]["wrapped"]))
            if resealed is None:
                return  # already under the new key
            with contextlib.suppress(Conflict):
                body = {"_rev": leaves[0]["_rev"], "wrapped": resealed}
                await self.client.put_status(path(self.db, KEY_DOC), body)
                return
        raise StoreError("could not re-wrap the audit chain key in CouchDB")

    # -- writing ----------------------------------------------------------------------------
    async def start(self, key: ChainKey, chain: str) -> None:
        """Claim a new chain: its head at seq 0, before entry 1 (refused if it exists)."""
        check_name(chain)
        await self._home.ensure()
        link = first_link(key, chain)
        tail = _Tail(0, link, 0, link)
        async with self._opening:
            if chain in self._tails:
                raise StoreError(
                    f"audit chain {chain} is started already by this process: two writers on "
                    "one chain (each writer starts a chain of its own)"
                )
            if await self._last_entry(chain) is not None:  # a head may lag: entries tell
                raise StoreError(
                    f"audit chain {chain} has entries already: two writers on one chain "
                    "(each writer starts a chain of its own)"
                )
            await self._move_head(key, chain, tail)
            self._tails[chain] = tail

    async def append(self, key: ChainKey, chain: str, entries: Sequence[Entry]) -> Head:
        check_name(chain)
        tail = self._tails.get(chain) or await self._open(key, chain)
        tail.key = key
        for one in key.link(tail.previous, tail.seq + 1, entries):
            tail.unsent.append(entry_doc(chain, one))
            tail.seq, tail.previous = one.seq, one.hash
        mine = tail.seq
        async with tail.lock:
            if tail.stored < mine:
                await self._flush(key, chain, tail)
        return key.head(tail.stored, tail.stored_hash)

    async def _flush(self, key: ChainKey, chain: str, tail: _Tail) -> None:
        sending = list(tail.unsent)
        await self._send(sending)
        del tail.unsent[: len(sending)]
        tail.stored, tail.stored_hash = int(sending[-1]["seq"]), str(sending[-1]["hash"])
        if time.monotonic() - tail.head_moved >= HEAD_EVERY:
            await self._head_follows(key, chain, tail)
        elif tail.head_later is None:
            tail.head_later = asyncio.create_task(self._head_later(key, chain, tail))

    async def _head_follows(self, key: ChainKey, chain: str, tail: _Tail) -> None:
        """Move the head to what is stored (if behind); a failure leaves it a lower bound."""
        if tail.head_seq >= tail.stored:
            return
        try:
            await self._move_head(key, chain, tail)
        except FieldsyncError as exc:  # stored all the same; the head is a lower bound
            log.warning("audit_head_not_moved", chain=chain, reason=exc.reason)

    async def _head_later(self, key: ChainKey, chain: str, tail: _Tail) -> None:
        try:
            await asyncio.sleep(max(0.0, tail.head_moved + HEAD_EVERY - time.monotonic()))
            async with tail.lock:
                await self._head_follows(key, chain, tail)
        finally:
            tail.head_later = None

    async def _open(self, key: ChainKey, chain: str) -> _Tail:
        """This process's first append to ``chain``: continue after what is stored."""
        async with self._opening:
            if chain in self._tails:
                return self._tails[chain]
            await self._home.ensure()
            head_leaves = await self._leaves(head_doc_id(chain))
            last = await self._past(chain, await self._last_entry(chain))
            seq, digest = (0, first_link(key, chain)) if last is None else last
            head = _head(head_leaves[0]) if head_leaves else None
            if head is not None and head.id > seq:  # a truncated tail: the break stays visible
                seq, digest = head.id, head.hash
            tail = _Tail(seq, digest, seq, digest)
            tail.head_rev = str(head_leaves[0]["_rev"]) if head_leaves else None
            self._tails[chain] = tail
            return tail

    async def _last_entry(self, chain: str) -> tuple[int, str] | None:
        params = {
            "startkey": _key(entry_doc_id(chain, 0)[:-12] + "\ufff0"),
            "endkey": _key(entry_doc_id(chain, 0)[:-12]),
            "descending": "true",
            "limit": "1",
            "include_docs": "true",
        }
        answer = await self.client.json("GET", path(self.db, "_all_docs"), params=params)
        rows = [row for row in answer.get("rows", []) if row.get("doc")]
        if not rows:
            return None
        return int(rows[0]["doc"]["seq"]), str(rows[0]["doc"]["hash"])

    async def _past(self, chain: str, last: tuple[int, str] | None) -> tuple[int, str] | None:
        """``last`` (from ``_all_docs``, which a lagging cluster node may answer), moved on
        past any later entries a quorum read finds: never link after a stale end."""
        while True:
            seq = 0 if last is None else last[0]
            ids = [entry_doc_id(chain, seq + n) for n in range(1, PROBE + 1)]
            found = await self.client.leaves_by_id(self.db, ids)
            for doc_id in ids:
                if doc_id not in found:
                    return last
                doc = found[doc_id][0]
                last = (int(doc["seq"]), str(doc["hash"]))

    async def _send(self, docs: list[dict[str, Any]]) -> None:
        answer = await self.client.json("POST", path(self.db, "_bulk_docs"), body={"docs": docs})
        refused = [r for r in answer if "error" in r]
        if not refused:
            return
        if any(r["error"] != "conflict" for r in refused):
            first = refused[0]
            raise StoreError(f"CouchDB refused audit entry {first.get('id')}: {first['error']}")
        await self._stored_before(docs, {str(r["id"]) for r in refused})

    async def _stored_before(self, docs: list[dict[str, Any]], ids: set[str]) -> None:
        """Conflicts: only an earlier try of ours (a lost answer) may have made these."""
        found = await self.client.leaves_by_id(self.db, sorted(ids))
        for doc in docs:
            if doc["_id"] in ids:
                leaves = found.get(doc["_id"], [])
                if not leaves or leaves[0].get("hash") != doc["hash"]:
                    raise StoreError(
                        f"audit entry {doc['_id']} exists with other contents: two writers on "
                        "one chain (a bug: each instance owns its chain)"
                    )

    async def _move_head(self, key: ChainKey, chain: str, tail: _Tail) -> None:
        seq, digest = tail.stored, tail.stored_hash
        body: dict[str, Any] = {"seq": seq, "hash": digest, "mac": key.head_mac(seq, digest)}
        for _ in range(_TRIES):
            if tail.head_rev is not None:
                body["_rev"] = tail.head_rev
            try:
                answer = await self.client.json("PUT", path(self.db, head_doc_id(chain)), body=body)
            except Conflict:  # our earlier write went through but its answer was lost
                tail.head_rev = await self._own_head_rev(chain, seq)
                continue
            tail.head_rev = str(answer["rev"])
            tail.head_seq, tail.head_moved = seq, time.monotonic()
            return
        raise StoreError(f"could not move the head of audit chain {chain}")

    async def _own_head_rev(self, chain: str, seq: int) -> str:
        """The head's ``_rev`` after a 409, if the head is ours (never ahead of ``seq``)."""
        leaves = await self._leaves(head_doc_id(chain))
        if not leaves:
            raise StoreError(f"the head of audit chain {chain} vanished")
        if int(leaves[0].get("seq", 0)) > seq:
            raise StoreError(
                f"the head of audit chain {chain} is ahead of this process: two writers on "
                "one chain (a bug: each instance owns its chain)"
            )
        return str(leaves[0]["_rev"])

    # -- reading ----------------------------------------------------------------------------
    async def head(self, chain: str) -> Head | None:
        check_name(chain)
        mine = self._tails.get(chain)
        if mine is not None and mine.key is not None:  # ours: first move it to what is stored
            async with mine.lock:
                await self._head_follows(mine.key, chain, mine)
        if not await self._exists():
            return None
        leaves = await self._leaves(head_doc_id(chain))
        return _head(leaves[0]) if leaves else None

    async def entries(self, chain: str, first: int = 1) -> list[Linked]:
        check_name(chain)
        if not await self._exists():
            return []
        start, end = entry_doc_id(chain, max(first, 0)), entry_doc_id(chain, 0)[:-12] + "\ufff0"
        listed = {
            (one := _linked(doc)).seq: one
            async for doc in self._docs(start, end, include_docs=True)
        }
        return await self._filled(chain, max(first, 1), listed)

    async def _filled(self, chain: str, first: int, listed: dict[int, Linked]) -> list[Linked]:
        """What ``_all_docs`` listed, with what a lagging copy of a cluster left out read by
        id (quorum reads): the numbers missing between ``first`` and the last listed, and
        any entries past it.  A gap or a cut tail that remains is really there."""
        top = max(listed, default=first - 1)
        missing = [n for n in range(first, top + 1) if n not in listed]
        while True:
            ids = [entry_doc_id(chain, n) for n in missing]
            ids += [entry_doc_id(chain, top + n) for n in range(1, PROBE + 1)]
            found = await self.client.leaves_by_id(self.db, ids)
            for leaves in found.values():
                one = _linked(leaves[0])
                listed[one.seq] = one
            if entry_doc_id(chain, top + PROBE) not in found:
                return [listed[n] for n in sorted(listed)]
            missing, top = [], top + PROBE

    async def chains(self) -> list[str]:
        if not await self._exists():
            return []
        names = set()
        async for row in self._docs("chain:", "chain:\ufff0", include_docs=False):
            names.add(str(row["id"]).split(":")[1])
        async for row in self._docs("head:", "head:\ufff0", include_docs=False):
            names.add(str(row["id"])[len("head:") :])
        return sorted(names)

    async def guard_problems(self) -> list[str]:
        return []  # nothing in CouchDB refuses an edit: the MACs and links are the guard

    async def close(self) -> None:
        """The heads of this process's chains follow what is stored, then the client closes."""
        for tail in self._tails.values():
            if tail.head_later is not None:
                tail.head_later.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tail.head_later
        for chain, tail in self._tails.items():
            if tail.key is not None:
                async with tail.lock:
                    await self._head_follows(tail.key, chain, tail)
        await self.client.close()

    async def _docs(
        self, start: str, end: str, *, include_docs: bool
    ) -> AsyncIterator[dict[str, Any]]:
        """Documents (or, without ``include_docs``, rows) with ids in [start, end], a page
        at a time."""
        params = {"startkey": _key(start), "endkey": _key(end), "limit": str(PAGE)}
        if include_docs:
            params["include_docs"] = "true"
        while True:
            answer = await self.client.json("GET", path(self.db, "_all_docs"), params=params)
            rows = answer.get("rows", [])
            for row in rows:
                if not include_docs:
                    yield row
                elif row.get("doc"):
                    yield row["doc"]
            if len(rows) < PAGE:
                return
            params = {**params, "startkey": _key(rows[-1]["id"]), "skip": "1"}

    async def _exists(self) -> bool:
        return await self.client.status("HEAD", path(self.db)) != 404

    async def _leaves(self, doc_id: str) -> list[dict[str, Any]]:
        return (await self.client.leaves_by_id(self.db, [doc_id])).get(doc_id, [])


def entry_doc(chain: str, one: Linked) -> dict[str, Any]:
    """The document of one linked entry (also written by ``fieldsync migrate``)."""
    e = one.entry
    return {
        "_id": entry_doc_id(chain, one.seq),
        "instance": chain,
        "seq": one.seq,
        "ts": e.ts,
        "actor": e.actor,
        "device": e.device,
        "action": e.action,
        "db": e.db,
        "doc_ids": list(e.doc_ids),
        "detail": e.detail,
        "prev": one.prev,
        "hash": one.hash,
    }


def _linked(doc: Mapping[str, Any]) -> Linked:
    """An entry document as the chain holds it; its number is the one in its id."""
    seq = int(str(doc["_id"]).rsplit(":", 1)[1])
    try:
        ids = tuple(str(i) for i in doc["doc_ids"])
        entry = Entry(str(doc["ts"]), str(doc["actor"]), _text(doc["device"]),
                      str(doc["action"]), _text(doc["db"]), ids, _text(doc["detail"]))  # fmt: skip
        digest = str(doc["hash"]) if doc.get("seq") == seq else ""
        return Linked(seq, entry, str(doc.get("prev")), digest)
    except (KeyError, TypeError):  # an entry without its fields: edited
        return Linked(seq, Entry(str(doc.get("ts")), "", None, "", None, ()), "", "")


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _head(doc: Mapping[str, Any]) -> Head:
    try:
        return Head(int(doc["seq"]), str(doc["hash"]), str(doc["mac"]))
    except (KeyError, TypeError, ValueError):
        return Head(0, "", "")  # unreadable: verification reports it as forged


def _key(text: str) -> str:
    return orjson.dumps(text).decode()
