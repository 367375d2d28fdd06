"""The CouchDB adapter of the patient-ID port (barcode.ports): unique across instances.

One database, ``<prefix>patient_ids``, holds three kinds of document::

    counter:<scheme>        {"next": N, "claim": token}   sequence numbers below N are
    counter:blocks          {"next": N, "claim": token}   taken (block ids likewise)
    <patient ID>            {"status", "block", "allocated_by", "allocated_at",
                             "retired_by"?, "retired_at"?, "retired_reason"?}
    block:<device>:<id>     {"block", "device", "requested_by", "created", "ids"}

An instance **claims a range** of sequence numbers by moving a counter on with
CouchDB's optimistic concurrency: it reads every live leaf of the counter
(a quorum read), writes ``next`` + the range's size against the winner's
``_rev`` with a fresh ``claim`` token, and

- on 409 (another instance moved it first) reads again and retries;
- on 201 (a quorum of copies took it) owns the range: two writes against the
  same ``_rev`` cannot both reach a quorum;
- on 202 (fewer than a quorum did, so another instance may have written the
  same ``_rev`` through another node, and had its 201) never owns the range:
  its numbers are skipped and the counter read again.  (A read back showing our
  write as the only leaf proves nothing: the rival's may be on copies that read
  did not reach.)

It then hands out numbers from its range without asking CouchDB.  Each ID is
recorded as a document whose id is the ID itself, created without a ``_rev``
(so a create of an ID that is already there, such as one retired in advance,
fails with a conflict and the number is skipped); retiring updates that
document.  A range not used up (a crash, a restart) is simply skipped: numbers
are never reused, at the cost of gaps.  The counter only moves forward: its
``next`` is the highest of its leaves, so a conflict left by a lost claim never
sets it back.  ``status_of`` counts an ID as retired if any leaf says so, so a
retirement that raced another write is never lost.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from barcode.embedded import now
from barcode.ids import IdFormat
from barcode.ports import Block, Status, check_count, check_device, normalised
from sync.errors import Conflict, StoreError, StoreUnavailable
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.once import CreatedOnce

DB_NAME = "patient_ids"  # after the deployment's prefix
BLOCKS_COUNTER = "counter:blocks"
# Numbers claimed at a time: one counter write per CLAIM IDs handed out; a crash
# skips at most this many.  Blocks ids are few, so they are claimed a few at a time.
CLAIM = 100
BLOCK_CLAIM = 8
_TRIES = 50
RECENT_BLOCKS, RECENT_MOST = 60.0, 1000  # blocks reserved here, listed from memory too
_FIRST_PAUSE, _LONGEST_PAUSE = 0.005, 0.2  # seconds between two tries, at random


class CouchPatientIds:
    def __init__(self, client: CouchClient, db: str, claim: int = CLAIM) -> None:
        self._client = client
        self._db = db
        self._claim_size = claim
        self._ranges: dict[str, tuple[int, int]] = {}  # counter id -> [next, end) still ours
        self._locks: dict[str, asyncio.Lock] = {}
        self._home = CreatedOnce(client, self._db)
        # Blocks reserved here a moment ago: listed even before ``_all_docs`` shows them.
        self._made: list[tuple[float, Block]] = []

    @classmethod
    def for_prefix(cls, client: CouchClient, prefix: str) -> CouchPatientIds:
        return cls(client, prefix + DB_NAME)

    # -- the port ---------------------------------------------------------------------
    async def allocate(self, fmt: IdFormat, count: int, by: str) -> list[str]:
        check_count("count", count)
        return await self._record(fmt, count, {"status": Status.ISSUED.value, "block": None}, by)

    async def reserve_block(self, fmt: IdFormat, size: int, device: str, by: str) -> Block:
        check_count("size", size)
        check_device(device)
        await self._ensure_db()
        [block_id] = await self._numbers(BLOCKS_COUNTER, 1, 1, BLOCK_CLAIM)
        fields = {"status": Status.RESERVED.value, "block": block_id}
        ids = await self._record(fmt, size, fields, by)
        block = Block(block_id, device, by, now(), tuple(ids))
        body = {
            "block": block.id,
            "device": device,
            "requested_by": by,
            "created": block.created,
            "ids": list(block.ids),
        }
        # The id is unique (a claimed block number): no other writer, so 202 is fine.
        await self._client.put_status(path(self._db, block_doc_id(device, block_id)), body)
        self._made = [*self._made[-RECENT_MOST:], (time.monotonic(), block)]
        return block

    async def blocks_of(self, device: str) -> list[Block]:
        await self._ensure_db()
        start = block_doc_id(device, 0)[:-12]
        params = {
            "startkey": _key(start),
            "endkey": _key(start + "\ufff0"),
            "include_docs": "true",
        }
        answer = await self._client.json("GET", path(self._db, "_all_docs"), params=params)
        docs = [row["doc"] for row in answer.get("rows", []) if row.get("doc")]
        listed = {block.id: block for block in map(_block, docs) if block.device == device}
        for block in self._recent():  # ``_all_docs`` on a cluster may lag our own write
            if block.device == device:
                listed.setdefault(block.id, block)
        return sorted(listed.values(), key=lambda b: (b.created, b.id))

    def _recent(self) -> list[Block]:
        """Blocks reserved here in the last :data:`RECENT_BLOCKS` seconds."""
        since = time.monotonic() - RECENT_BLOCKS
        self._made = [(at, block) for at, block in self._made if at > since]
        return [block for _, block in self._made]

    async def retire(self, fmt: IdFormat, patient_id: str, by: str, reason: str) -> str:
        patient_id = normalised(fmt, patient_id)
        await self._ensure_db()
        at = now()
        for _ in range(_TRIES):
            leaves = await self._leaves(patient_id)
            body = _without_conflicts(leaves[0]) if leaves else _fresh(patient_id, by, at)
            body.update(
                status=Status.RETIRED.value, retired_by=by, retired_at=at, retired_reason=reason
            )
            try:  # 202 is enough: a retired leaf counts whatever else CouchDB keeps
                await self._client.put_status(path(self._db, patient_id), body)
            except Conflict:  # written meanwhile (allocated, or retired by another): again
                continue
            return patient_id
        raise StoreUnavailable(f"Could not record {patient_id} as retired; try again.")

    async def status_of(self, patient_id: str) -> Status | None:
        await self._ensure_db()
        leaves = await self._leaves(patient_id)
        if not leaves:
            return None
        if any(leaf.get("status") == Status.RETIRED.value for leaf in leaves):
            return Status.RETIRED
        return Status(leaves[0]["status"])

    # -- recording IDs ----------------------------------------------------------------
    async def _record(
        self, fmt: IdFormat, count: int, fields: Mapping[str, Any], by: str
    ) -> list[str]:
        """``count`` IDs from our ranges, each created as a document; taken ones skipped."""
        await self._ensure_db()
        counter = f"counter:{fmt.scheme.value}"
        at, ids = now(), list[str]()
        while len(ids) < count:
            numbers = await self._numbers(counter, fmt.first_number, count - len(ids))
            docs = [
                {"_id": fmt.id_for(n), **fields, "allocated_by": by, "allocated_at": at}
                for n in numbers
            ]
            ids += await self._create(docs)
        return ids

    async def _create(self, docs: Sequence[Mapping[str, Any]]) -> list[str]:
        """Create ``docs`` in one request; the ids created (a conflict: already there)."""
        answer = await self._client.json(
            "POST", path(self._db, "_bulk_docs"), body={"docs": list(docs)}
        )
        created = []
        for result in answer:
            if "error" not in result:
                created.append(str(result["id"]))
            elif result["error"] != "conflict":
                raise StoreError(
                    f"CouchDB refused patient ID {result.get('id')}: "
                    f"{result['error']}: {result.get('reason', '')}"
                )
        return created

    # -- claiming numbers ---------------------------------------------------------------
    async def _numbers(self, counter: str, first: int, count: int, claim: int = 0) -> list[int]:
        """``count`` sequence numbers of ``counter`` that no other instance holds."""
        async with self._locks.setdefault(counter, asyncio.Lock()):
            taken: list[int] = []
            while len(taken) < count:
                start, end = self._ranges.get(counter, (0, 0))
                if start >= end:
                    size = max(count - len(taken), claim or self._claim_size)
                    start, end = await self._claim(counter, first, size)
                use = min(end - start, count - len(taken))
                taken += range(start, start + use)
                self._ranges[counter] = (start + use, end)
            return taken

    async def _claim(self, counter: str, first: int, size: int) -> tuple[int, int]:
        """Move ``counter`` on by ``size``; the range [start, end) it gave us."""
        pause = _FIRST_PAUSE
        for _ in range(_TRIES):
            leaves = await self._leaves(counter)
            start = max([first] + [int(leaf.get("next", 0)) for leaf in leaves])
            body: dict[str, Any] = {"next": start + size, "claim": uuid.uuid4().hex}
            if leaves:
                body["_rev"] = leaves[0]["_rev"]
            try:
                status = await self._client.put_status(path(self._db, counter), body)
            except Conflict:  # another instance claimed first: read again
                status = 409
            if status == 201:
                await self._prune(counter, leaves[1:])
                return start, start + size
            # 409, or 202: another instance may have had its 201 for the same range through
            # the other copies.  Skipped for good (a 202's leaf stays: it only moves
            # ``next`` on).  Instances that split the copies between them all lose: they
            # wait a moment, at random, before they try again.
            await asyncio.sleep(random.uniform(0, pause))
            pause = min(pause * 2, _LONGEST_PAUSE)
        raise StoreUnavailable(f"Could not claim patient-ID numbers ({counter}); try again.")

    async def _prune(self, counter: str, others: Sequence[Mapping[str, Any]]) -> None:
        """After a 201: the counter's other leaves (left by 202s) are below the ``next``
        just written, so they go (a read of the counter stays one leaf long)."""
        await self._client.delete_leaves(self._db, counter, others)

    # -- CouchDB ------------------------------------------------------------------------
    async def _leaves(self, doc_id: str) -> list[dict[str, Any]]:
        found = await self._client.leaves_by_id(self._db, [doc_id])
        return found.get(doc_id, [])

    async def _ensure_db(self) -> None:
        """Create the database once per process (another instance may have made it)."""
        await self._home.ensure()


def block_doc_id(device: str, block_id: int) -> str:
    return f"block:{device}:{block_id:012d}"


def _block(doc: Mapping[str, Any]) -> Block:
    return Block(
        int(doc["block"]),
        str(doc["device"]),
        str(doc["requested_by"]),
        str(doc["created"]),
        tuple(str(i) for i in doc["ids"]),
    )


def _fresh(patient_id: str, by: str, at: str) -> dict[str, Any]:
    """The record of an ID retired before it was ever allocated here."""
    return {"_id": patient_id, "block": None, "allocated_by": by, "allocated_at": at}


def _without_conflicts(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("_conflicts", "_revisions")}


def _key(text: str) -> str:
    return orjson.dumps(text).decode()
