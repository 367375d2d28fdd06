"""The CouchDB adapter of the sync-activity port (sync.activity.ports): shared by instances.

One database, ``<prefix>activity``, with one document per *instance*, worker,
device and UTC day::

    <instance>:<day>:<worker>:<device>    {"type": "activity", "instance", "worker",
                                           "device", "day", "syncs", "docs"}

and ``_design/activity``, two views summing ``[syncs, docs]`` (``_sum``):
``by_worker`` keyed ``[worker, day, device]`` and ``by_day`` keyed ``[day, worker, device]``.

- **Concurrent instances add up.**  Each server process (a fresh instance id per
  start) writes only its own documents, so two instances never write the same
  document; a read sums them (the views' ``_sum``).
- **A retry never counts twice.**  The adapter holds this instance's totals of
  the days it wrote and writes each document's *total*, not an increment.  A
  write whose answer was lost is undone in memory (the recorder keeps the counts
  and adds them again), and the next write puts the right total whether the lost
  one went through or not.  Only this instance writes its documents, so a 409
  means the ``_rev`` kept here is stale (a lost answer that went through): the
  ``_rev`` is read again and the total written again.
- Totals of days before yesterday are forgotten here (the recorder only writes today).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import Collection, Sequence
from typing import Any

from sync.activity.ports import DayActivity
from sync.errors import StoreError, StoreUnavailable
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.designs import DesignOnce

DB_NAME = "activity"  # after the deployment's prefix
_EMIT = "emit([{}], [doc.syncs, doc.docs]);"
VIEWS = {
    "by_worker": {
        "map": "function (doc) { if (doc.type === 'activity') { "
        + _EMIT.format("doc.worker, doc.day, doc.device")
        + " } }",
        "reduce": "_sum",
    },
    "by_day": {
        "map": "function (doc) { if (doc.type === 'activity') { "
        + _EMIT.format("doc.day, doc.worker, doc.device")
        + " } }",
        "reduce": "_sum",
    },
}
VERSION = 1
FEW_WORKERS = 20  # more workers than this: one read of the days, filtered
_TRIES = 5
Bucket = tuple[str, str, str]  # worker, device, day


class CouchActivity:
    def __init__(self, client: CouchClient, db: str, instance: str | None = None) -> None:
        self._client, self._db = client, db
        self._instance = instance or uuid.uuid4().hex[:16]
        self._design = DesignOnce(client, db, "activity", VIEWS, VERSION)
        self._totals: dict[Bucket, tuple[int, int]] = {}  # this instance's, as written
        self._revs: dict[Bucket, str] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def for_prefix(cls, client: CouchClient, prefix: str) -> CouchActivity:
        return cls(client, prefix + DB_NAME)

    # -- writing ------------------------------------------------------------------------
    async def add(self, buckets: Sequence[DayActivity]) -> None:
        if not buckets:
            return
        await self._design.ensure()
        async with self._lock:  # one write at a time: the totals held here stay ours
            before = dict(self._totals)
            try:
                await self._write(buckets)
            except Exception:
                self._totals = before  # the recorder adds these counts again next time
                raise
            self._forget_old()

    async def _write(self, buckets: Sequence[DayActivity]) -> None:
        changed: set[Bucket] = set()
        for b in buckets:
            key = (b.worker, b.device, b.day)
            syncs, docs = self._totals.get(key, (0, 0))
            self._totals[key] = (syncs + b.syncs, docs + b.docs)
            changed.add(key)
        todo = sorted(changed)
        for _ in range(_TRIES):
            todo = await self._put(todo)
            if not todo:
                return
            await self._read_revs(todo)  # stale revs (a lost answer went through)
        raise StoreUnavailable("Could not write the sync activity; it is kept for the next try.")

    async def _put(self, keys: list[Bucket]) -> list[Bucket]:
        """Write each bucket's total; the buckets whose ``_rev`` was stale."""
        docs = [self._doc(key) for key in keys]
        where = path(self._db, "_bulk_docs")
        results = await self._client.json("POST", where, body={"docs": docs})
        by_id = {self._id(key): key for key in keys}
        stale = []
        for result in results:
            key = by_id[str(result["id"])]
            if "error" not in result:
                self._revs[key] = str(result["rev"])
            elif result["error"] == "conflict":
                stale.append(key)
            else:
                raise StoreError(
                    f"CouchDB refused sync activity {result.get('id')}: "
                    f"{result['error']}: {result.get('reason', '')}"
                )
        return stale

    async def _read_revs(self, keys: list[Bucket]) -> None:
        found = await self._client.leaves_by_id(self._db, [self._id(k) for k in keys])
        for key in keys:
            leaves = found.get(self._id(key))
            if leaves:
                self._revs[key] = str(leaves[0]["_rev"])
            else:
                self._revs.pop(key, None)

    def _doc(self, key: Bucket) -> dict[str, Any]:
        worker, device, day = key
        syncs, docs = self._totals[key]
        doc: dict[str, Any] = {
            "_id": self._id(key),
            "type": "activity",
            "instance": self._instance,
            "worker": worker,
            "device": device,
            "day": day,
            "syncs": syncs,
            "docs": docs,
        }
        if key in self._revs:
            doc["_rev"] = self._revs[key]
        return doc

    def _id(self, key: Bucket) -> str:
        worker, device, day = key
        return f"{self._instance}:{day}:{json.dumps([worker, device], ensure_ascii=True)}"

    def _forget_old(self) -> None:
        """Totals of days the recorder no longer writes (before yesterday) are not needed."""
        newest = max((day for _, _, day in self._totals), default="")
        if not newest:
            return
        keep = (dt.date.fromisoformat(newest) - dt.timedelta(days=1)).isoformat()
        for key in [k for k in self._totals if k[2] < keep]:
            del self._totals[key]
            self._revs.pop(key, None)

    # -- reading ------------------------------------------------------------------------
    async def days(self, since: str, workers: Collection[str] | None = None) -> list[DayActivity]:
        await self._design.ensure()
        if workers is not None and len(set(workers)) <= FEW_WORKERS:
            parts = await asyncio.gather(*(self._of_worker(w, since) for w in set(workers)))
            found = [b for part in parts for b in part]
        else:
            wanted = None if workers is None else frozenset(workers)
            found = [b for b in await self._since(since, 3) if wanted is None or b.worker in wanted]
        return sorted(found, key=lambda b: (b.worker, b.day, b.device))

    async def _of_worker(self, worker: str, since: str) -> list[DayActivity]:
        params = {"group_level": "3", **_range([worker, since], [worker, {}])}
        answer = await self._client.json("GET", self._design.view("by_worker"), params=params)
        return [
            DayActivity(row["key"][0], row["key"][2], row["key"][1], *_pair(row["value"]))
            for row in answer.get("rows", [])
        ]

    async def _since(self, since: str, level: int) -> list[DayActivity]:
        params = {"group_level": str(level), **_range([since], [{}])}
        answer = await self._client.json("GET", self._design.view("by_day"), params=params)
        found = []
        for row in answer.get("rows", []):
            day, worker, *device = row["key"]
            syncs, docs = _pair(row["value"])
            found.append(DayActivity(worker, device[0] if device else "", day, syncs, docs))
        return found

    async def totals(self, since: str) -> dict[str, tuple[int, int]]:
        await self._design.ensure()
        found: dict[str, tuple[int, int]] = {}
        for b in await self._since(since, 2):
            syncs, docs = found.get(b.worker, (0, 0))
            found[b.worker] = (syncs + b.syncs, docs + b.docs)
        return found


def _pair(value: Any) -> tuple[int, int]:
    return int(value[0]), int(value[1])


def _range(start: Any, end: Any) -> dict[str, str]:
    return {"startkey": json.dumps(start), "endkey": json.dumps(end)}
