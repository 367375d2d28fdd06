"""The audit trail in CouchDB: one keyed hash chain per instance, in ``<prefix>audit``.

With ``FIELDSYNC_COUCHDB_URL`` set, several instances record at once.  Each owns
a chain of its own, so no two writers ever append to one chain and no append
has to win a race::

    key:chain                    the chain key, wrapped by the master key (made once,
                                 by whichever instance starts first; 409: take the winner's)
    head:<instance>              {"seq", "hash", "mac"}: how far the chain is known to reach
    chain:<instance>:<seq, 12>   {"instance", "seq", "ts", "actor", "device", "action", "db",
                                  "doc_ids", "detail", "prev", "hash"}

``hash(seq) = "k1:" + hmac_sha256(K, prev || canonical-json([seq, ts, actor, device,
action, db, doc_ids, detail]))`` as in :mod:`sync.audit`, and ``prev`` of entry 1
is ``genesis(instance)``, a MAC of the instance id: a chain cannot be passed off
as another instance's.  Entries are created with ``_bulk_docs`` without ``_rev``
(a conflict is a bug, never a race: each instance owns its chain), then the head
moves.  The head is a lower bound, made (at seq 0) before the first entry: the
entries past it are those of a flush that the instance did not finish (it was
killed); a chain shorter than its head lost entries at its tail.

**The instance id is new at every process start** (the start time and 8 random
hex digits).  An instance is the one writer of its chain, and that must hold
whatever is done with data dirs: copied from a template (several instances then
share everything a data dir holds), or reused by a restarted container while the
old process may still be finishing.  A fresh id per start needs no coordination
and no lease; a restart starts a new chain, and the old one ends where its
process stopped.

**Nothing acknowledged is lost**: :meth:`CouchChain.append` returns once CouchDB
answered that it stored the entries (201, or 202: on fewer than a quorum of
copies), and the server sends no answer before its entries are appended
(:func:`sync.audit.flush_before_answer`); reads do not go through the local
read journal then.  Entries whose append failed are kept, with their sequence
numbers, and sent first by the next append, so a lost answer never leaves a gap
or a duplicate; the request that failed is answered 500.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hmac
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from sync.audit import KEY_LABEL, Chain, Entry
from sync.errors import Conflict, FieldsyncError, PreconditionFailed, StoreError
from sync.keys import KeyError_, MasterKey
from sync.store.couchdb.client import CouchClient, path

log = structlog.get_logger("fieldsync.audit")

DB_NAME = "audit"  # after the deployment's prefix
KEY_DOC = "key:chain"
PAGE = 2000
_TRIES = 20


def new_instance_id() -> str:
    """``20260101T120000-1a2b3c4d``: when this process started, and 8 random hex digits."""
    started = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{started}-{secrets.token_hex(4)}"


def entry_doc_id(instance: str, seq: int) -> str:
    return f"chain:{instance}:{seq:012d}"


def head_doc_id(instance: str) -> str:
    return f"head:{instance}"


def genesis(chain: Chain, instance: str) -> str:
    """The ``prev`` of an instance's first entry: binds the chain to the instance id."""
    return chain.entry_mac("genesis", 0, Entry("", instance, None, "genesis", None, ()))


class CouchChain:
    """This instance's chain: appends (one at a time), the head after each.

    It starts (database, shared chain key, head at seq 0) on its first append, so
    a server started while CouchDB is away serves once it is back; entries
    recorded meanwhile wait here, in order, and no answer carrying them goes out.
    """

    def __init__(self, client: CouchClient, prefix: str, master: MasterKey, instance: str) -> None:
        self.client = client
        self.db = prefix + DB_NAME
        self.instance = instance
        self._master = master
        self._chain: Chain | None = None
        self._seq = 0
        self._previous = ""
        self._waiting: list[Entry] = []  # not numbered yet (the chain has not started)
        self._unsent: list[dict[str, Any]] = []  # numbered, not yet known to be stored
        self._stored = 0  # the highest seq known to be stored, and its hash
        self._stored_hash = ""
        self._head_rev: str | None = None
        self._lock = asyncio.Lock()

    @property
    def started(self) -> bool:
        return self._chain is not None

    async def append(self, entries: Sequence[Entry]) -> None:
        """Store ``entries`` (and any a failed append left) at the chain's end; raise if not.

        Entries are numbered as soon as the chain has started (no await between:
        in call order); whoever holds the lock sends everything numbered so far,
        so concurrent requests share one ``_bulk_docs``.
        """
        self._waiting.extend(entries)
        if self._chain is None:
            async with self._lock:
                if self._chain is None:
                    await self._start()
        self._number()
        mine = self._seq
        async with self._lock:
            if self._stored >= mine:
                return  # sent with an earlier request's entries
            sending = list(self._unsent)
            await self._send(sending)
            del self._unsent[: len(sending)]
            self._stored, self._stored_hash = int(sending[-1]["seq"]), str(sending[-1]["hash"])
            try:
                await self._move_head()
            except FieldsyncError:  # stored all the same; the head is a lower bound
                log.exception("audit_head_not_moved", instance=self.instance)

    async def close(self) -> None:
        await self.client.close()

    async def _start(self) -> None:
        """The database, the shared key, and this instance's head at seq 0 (before entry 1)."""
        await ensure_db(self.client, self.db)
        chain = await shared_chain(self.client, self.db, self._master, create=True)
        assert chain is not None
        self._previous = self._stored_hash = genesis(chain, self.instance)
        self._chain = chain
        await self._move_head()
        log.info("audit_chain_started", instance=self.instance, database=self.db)

    def _number(self) -> None:
        chain = self._chain
        assert chain is not None
        for entry in self._waiting:
            self._seq += 1
            digest = chain.entry_mac(self._previous, self._seq, entry)
            self._unsent.append(entry_doc(self.instance, self._seq, self._previous, digest, entry))
            self._previous = digest
        self._waiting = []

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

    async def _move_head(self) -> None:
        assert self._chain is not None
        seq, digest = self._stored, self._stored_hash
        mac = self._chain.head_mac(seq, digest)
        body: dict[str, Any] = {"seq": seq, "hash": digest, "mac": mac}
        for _ in range(_TRIES):
            if self._head_rev is not None:
                body["_rev"] = self._head_rev
            try:
                answer = await self.client.json(
                    "PUT", path(self.db, head_doc_id(self.instance)), body=body
                )
            except Conflict:  # our earlier write went through but its answer was lost
                self._head_rev = await self._own_head_rev(seq)
                continue
            self._head_rev = str(answer["rev"])
            return
        raise StoreError(f"could not move the audit head of instance {self.instance}")

    async def _own_head_rev(self, seq: int) -> str:
        """The head's ``_rev`` after a 409, if the head is ours (never ahead of ``seq``)."""
        head_id = head_doc_id(self.instance)
        leaves = (await self.client.leaves_by_id(self.db, [head_id])).get(head_id, [])
        if not leaves:
            raise StoreError(f"the audit head of instance {self.instance} vanished")
        if int(leaves[0].get("seq", 0)) > seq:
            raise StoreError(
                f"the audit head of instance {self.instance} is ahead of this process: two "
                "writers on one chain (a bug: each instance owns its chain)"
            )
        return str(leaves[0]["_rev"])


def entry_doc(instance: str, seq: int, previous: str, digest: str, entry: Entry) -> dict[str, Any]:
    return {
        "_id": entry_doc_id(instance, seq),
        "instance": instance,
        "seq": seq,
        "ts": entry.ts,
        "actor": entry.actor,
        "device": entry.device,
        "action": entry.action,
        "db": entry.db,
        "doc_ids": list(entry.doc_ids),
        "detail": entry.detail,
        "prev": previous,
        "hash": digest,
    }


async def ensure_db(client: CouchClient, db: str) -> None:
    with contextlib.suppress(PreconditionFailed):
        await client.json("PUT", path(db))


async def shared_chain(
    client: CouchClient, db: str, master: MasterKey, *, create: bool
) -> Chain | None:
    """The chain key every instance shares (made once; a rival's 409: take the winner's)."""
    for _ in range(_TRIES):
        leaves = (await client.leaves_by_id(db, [KEY_DOC])).get(KEY_DOC, [])
        if leaves:
            return Chain(master.unwrap(KEY_LABEL, base64.b64decode(leaves[0]["wrapped"])))
        if not create:
            return None
        wrapped = base64.b64encode(master.wrap(KEY_LABEL, secrets.token_bytes(32))).decode()
        with contextlib.suppress(Conflict):
            await client.json("PUT", path(db, KEY_DOC), body={"wrapped": wrapped})
    raise StoreError("could not read or make the audit chain key in CouchDB")


async def rewrap_chain_key(
    client: CouchClient, prefix: str, old: MasterKey, new: MasterKey
) -> None:
    """Master-key rotation: the shared chain key follows the data keys (resumable)."""
    db = prefix + DB_NAME
    if await client.status("HEAD", path(db)) == 404:
        return  # no instance has recorded yet
    for _ in range(_TRIES):
        leaves = (await client.leaves_by_id(db, [KEY_DOC])).get(KEY_DOC, [])
        if not leaves:
            return
        wrapped = base64.b64decode(leaves[0]["wrapped"])
        try:
            new.unwrap(KEY_LABEL, wrapped)
            return  # already under the new key
        except KeyError_:
            key = old.unwrap(KEY_LABEL, wrapped)
        rewrapped = base64.b64encode(new.wrap(KEY_LABEL, key)).decode()
        with contextlib.suppress(Conflict):
            await client.put_status(
                path(db, KEY_DOC), {"_rev": leaves[0]["_rev"], "wrapped": rewrapped}
            )
            return
    raise StoreError("could not re-wrap the audit chain key in CouchDB")


# -- verifying every chain -------------------------------------------------------------------
@dataclass(frozen=True)
class ChainReport:
    instance: str
    entries: int
    first_ts: str | None
    last_ts: str | None
    problem: str | None = None  # "entry SEQ (TIME): what", or about the chain as a whole

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem is not None:
            return f"instance {self.instance}: audit chain BROKEN at {self.problem}"
        return (
            f"instance {self.instance}: audit chain ok: {self.entries} entries, "
            f"first {self.first_ts}, last {self.last_ts}"
        )


async def verify_all(client: CouchClient, prefix: str, master: MasterKey) -> list[ChainReport]:
    """Check every instance's chain in ``<prefix>audit``: links, MACs, no gap, the head."""
    db = prefix + DB_NAME
    status = await client.status("HEAD", path(db))
    if status == 404:
        return []
    chain = await shared_chain(client, db, master, create=False)
    if chain is None:
        return []
    entries: dict[str, list[dict[str, Any]]] = {}
    heads: dict[str, dict[str, Any]] = {}
    async for doc in _all_docs(client, db):
        doc_id = str(doc["_id"])
        if doc_id.startswith("chain:"):
            entries.setdefault(doc_id.split(":")[1], []).append(doc)
        elif doc_id.startswith("head:"):
            heads[doc_id[len("head:") :]] = doc
    instances = sorted(set(entries) | set(heads))
    return [_verify_one(chain, i, entries.get(i, []), heads.get(i)) for i in instances]


async def _all_docs(client: CouchClient, db: str) -> Any:
    """Every document of ``db`` in id order, a page at a time."""
    params: dict[str, str] = {"include_docs": "true", "limit": str(PAGE)}
    while True:
        answer = await client.json("GET", path(db, "_all_docs"), params=params)
        rows = answer.get("rows", [])
        for row in rows:
            if row.get("doc"):
                yield row["doc"]
        if len(rows) < PAGE:
            return
        params = {**params, "startkey": orjson.dumps(rows[-1]["id"]).decode(), "skip": "1"}


def _verify_one(
    chain: Chain, instance: str, docs: Iterable[Mapping[str, Any]], head: Mapping[str, Any] | None
) -> ChainReport:
    previous, expected, count = genesis(chain, instance), 1, 0
    first_ts: str | None = None
    last_ts: str | None = None
    hashes = {0: previous}
    for doc in docs:
        seq, ts = int(doc.get("seq", -1)), str(doc.get("ts"))
        problem = _check(chain, instance, doc, seq, expected, previous)
        if problem is not None:
            return ChainReport(instance, count, first_ts, last_ts, f"entry {seq} ({ts}): {problem}")
        previous, expected, count = str(doc["hash"]), seq + 1, count + 1
        hashes[seq] = previous
        first_ts, last_ts = first_ts or ts, ts
    problem = _head_problem(chain, head, hashes, expected - 1)
    return ChainReport(instance, count, first_ts, last_ts, problem)


def _check(
    chain: Chain, instance: str, doc: Mapping[str, Any], seq: int, expected: int, previous: str
) -> str | None:
    if seq != expected or doc.get("_id") != entry_doc_id(instance, seq):
        return f"missing entries: seq {expected}..{seq - 1} absent (a gap)"
    if doc.get("prev") != previous:
        return "broken link: prev is not the hash of the entry before"
    try:
        ids = tuple(str(i) for i in doc["doc_ids"])
        entry = Entry(str(doc["ts"]), str(doc["actor"]), doc["device"], str(doc["action"]),
                      doc["db"], ids, doc["detail"])  # fmt: skip
    except (KeyError, TypeError):
        return "an entry without its fields (edited)"
    good = chain.entry_mac(previous, seq, entry)
    return None if hmac.compare_digest(good, str(doc.get("hash"))) else "hash mismatch (edited)"


def _head_problem(
    chain: Chain, head: Mapping[str, Any] | None, hashes: Mapping[int, str], last: int
) -> str | None:
    if head is None:
        return "the chain: head checkpoint missing (deleted?)"
    try:
        seq, digest, mac = int(head["seq"]), str(head["hash"]), str(head["mac"])
    except (KeyError, TypeError, ValueError):
        return "the chain: head checkpoint unreadable (forged?)"
    if not hmac.compare_digest(chain.head_mac(seq, digest), mac):
        return "the chain: head checkpoint forged (its MAC does not match)"
    if seq > last:
        return f"entry {last + 1}: tail truncated, entries {last + 1}..{seq} absent"
    if hashes.get(seq) != digest:
        return f"entry {seq}: hash mismatch with the head checkpoint"
    return None
