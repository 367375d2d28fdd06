"""The CouchDB adapter of the refused-records port (sync.refusals.ports): shared by instances.

One database, ``<prefix>refusals``, holds two kinds of document::

    r:<id>              one refused (worker, doc id, rev): worker, device, doc_id, rev,
                        reason, detail, first_at, last_at, body_bytes, ident,
                        counts {<instance>: n}, key_ref, truncated,
                        and the sealed body as the attachment ``body``
    dropped:<worker>    refusals cut by the per-worker cap: counts {<instance>: n}, last_at

plus ``_design/refusals`` (views ``by_worker`` [worker, last_at, ident] with a
``_count``, and ``by_time`` [last_at, ident] -> worker).

- **One document per refusal, named by it.**  ``ident`` (the page's id) is 52 bits
  of the SHA-256 of (worker, doc id, rev), so every instance recording the same
  refusal writes the same document: the first create wins (the others get a 409),
  and every repeat is an update against the ``_rev`` read, retried after a 409.
- **Counts add up across instances.**  Each adapter (one per server process) has
  an instance id and adds only to its own entry of ``counts``; the count is their
  sum.  Two updates that both went through against one ``_rev`` in a cluster (202)
  leave two leaves; every read and the next write merge them (each instance's
  highest entry, the latest ``last_at``).  An instance's entry is what it last
  wrote there plus what it adds, not what it read: on a cluster a read may miss
  our own write of a moment ago (taken by fewer than a quorum of copies), and a
  write answered 409 may still have landed on one copy, and be retried.  So an
  adapter writes its entries one batch at a time (two of its writes from one read,
  both taken, would each add to the same entry and one be lost), and remembers
  what it wrote to each document (the newest ``OWN_KEPT``), for the
  document's incarnation (``born``, new at each creation: a document cut or pruned
  and made again starts from nothing).  A write whose answer was lost is not
  retried (the recorder logs and drops the batch): a count may be missing then,
  never doubled.
- **Sealed.**  The body is the sealer's output (never plaintext), kept as an
  attachment, so the views and listings never carry it.
- **Cap and pruning by anyone.**  Deletes carry the ``_rev`` read; only deletes that
  went through are counted as dropped or pruned, so two instances cutting or
  pruning at once count each refusal once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from sync.errors import NotFound, PreconditionFailed, StoreError, StoreUnavailable
from sync.refusals.ports import Cursor, NewRefusal, Refusal, SealedBody
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.designs import DesignOnce

DB_NAME = "refusals"  # after the deployment's prefix
VIEWS = {
    "by_worker": {
        "map": "function (doc) { if (doc.type === 'refusal') "
        "{ emit([doc.worker, doc.last_at, doc.ident], null); } }",
        "reduce": "_count",
    },
    "by_time": {
        "map": "function (doc) { if (doc.type === 'refusal') "
        "{ emit([doc.last_at, doc.ident], doc.worker); } }",
    },
}
VERSION = 1
FEW_WORKERS = 20  # more workers than this with refusals: one walk of by_time, filtered
PAGE = 500  # rows a request when walking a view
_TRIES = 50
OWN_KEPT = 100_000  # documents whose entry this instance remembers (about 100 bytes each)
MAX = "\ufff0"  # sorts after any text a key holds here


def ident_of(worker: str, doc_id: str, rev: str) -> int:
    """The refusal's id: 52 bits (an exact JavaScript number) of its key's SHA-256."""
    key = json.dumps([worker, doc_id, rev], ensure_ascii=True).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:7], "big") >> 4


def doc_id_of(ident: int) -> str:
    return f"r:{ident}"


class CouchRefusals:
    def __init__(self, client: CouchClient, db: str, instance: str | None = None) -> None:
        self._client, self._db = client, db
        self._instance = instance or uuid.uuid4().hex[:16]
        self._design = DesignOnce(client, db, "refusals", VIEWS, VERSION)
        # document id -> (its ``born``, our entry in its ``counts`` as we last wrote it)
        self._own: OrderedDict[str, tuple[str | None, int]] = OrderedDict()
        # One writer of our entries at a time: two of our writes from one read, both
        # taken on a cluster (202), would each add to the same entry, and one be lost.
        self._recording = asyncio.Lock()
        self._dropping = asyncio.Lock()

    @classmethod
    def for_prefix(cls, client: CouchClient, prefix: str) -> CouchRefusals:
        return cls(client, prefix + DB_NAME)

    # -- recording ----------------------------------------------------------------------
    async def record(self, refusals: Sequence[NewRefusal], per_worker: int) -> None:
        if not refusals:
            return
        await self._design.ensure()
        pending = _grouped(refusals)
        async with self._recording:
            for _ in range(_TRIES):
                pending = await self._write(pending)
                if not pending:
                    break
            else:
                raise StoreUnavailable("Could not record refused records (busy); they are dropped.")
        for worker in sorted({r.worker for r in refusals}):
            await self.cut(worker, per_worker)

    async def _write(self, pending: dict[str, list[NewRefusal]]) -> dict[str, list[NewRefusal]]:
        """One round: create or update each document; those that met a 409, to try again."""
        found = await self._client.leaves_by_id(self._db, list(pending))
        docs, losers = [], []
        for key, news in pending.items():
            leaves = found.get(key, [])
            docs.append(self._updated(leaves, news) if leaves else self._created(key, news))
            losers += [leaf for leaf in leaves[1:]]
        results = await self._bulk(docs)
        again = {r["id"]: pending[r["id"]] for r in results if r.get("error") == "conflict"}
        _raise_other(results)
        done = {r["id"] for r in results if "error" not in r}
        for doc in docs:
            if doc["_id"] in done:
                self._wrote(doc)
        await self._bulk([_deletion(leaf) for leaf in losers if leaf["_id"] in done], check=False)
        return again

    def _created(self, key: str, news: list[NewRefusal]) -> dict[str, Any]:
        first = news[0]
        doc: dict[str, Any] = {
            "_id": key,
            "type": "refusal",
            "ident": ident_of(first.worker, first.doc_id, first.rev),
            "worker": first.worker,
            "device": first.device,
            "doc_id": first.doc_id,
            "rev": first.rev,
            "reason": first.reason,
            "detail": first.detail,
            "first_at": min(n.at for n in news),
            "last_at": max(n.at for n in news),
            "body_bytes": first.body_bytes,
            "counts": {self._instance: sum(n.times for n in news)},
            "born": uuid.uuid4().hex,
        }
        if first.body is not None:
            doc.update(key_ref=first.body.key_ref, truncated=first.body.truncated)
            data = base64.b64encode(first.body.data).decode()
            doc["_attachments"] = {
                "body": {"content_type": "application/octet-stream", "data": data}
            }
        return doc

    def _updated(self, leaves: list[dict[str, Any]], news: list[NewRefusal]) -> dict[str, Any]:
        doc = merged(leaves)
        self._add_own(doc, sum(n.times for n in news))
        doc["last_at"] = max([doc["last_at"], *(n.at for n in news)])
        # Instances record at once: the first refusal is the earliest, whoever created it.
        doc["first_at"] = min([doc["first_at"], *(n.at for n in news)])
        return doc

    def _add_own(self, doc: dict[str, Any], add: int) -> None:
        """Our entry in ``doc["counts"]`` (as read, merged) moved on by ``add``, from what we
        last wrote to this incarnation of the document rather than from what was read."""
        counts: dict[str, int] = doc["counts"]
        read = counts.get(self._instance, 0)
        known = self._own.get(str(doc["_id"]))
        if known is None or known[0] != doc.get("born"):  # not written by us (or forgotten)
            counts[self._instance] = read + add
            return
        # Read less: a copy that missed our last write.  Read ours plus ``add``: this very
        # write, answered 409 yet taken by one copy, being retried.  Neither adds twice.
        counts[self._instance] = max(known[1] + add, read)

    def _wrote(self, doc: Mapping[str, Any]) -> None:
        key = str(doc["_id"])
        self._own[key] = (doc.get("born"), int(doc["counts"].get(self._instance, 0)))
        self._own.move_to_end(key)
        while len(self._own) > OWN_KEPT:
            self._own.popitem(last=False)

    # -- the per-worker cap -------------------------------------------------------------
    async def cut(self, worker: str, per_worker: int) -> int:
        """Keep the newest ``per_worker`` refusals of ``worker``; count what this call deleted."""
        params = {"group_level": "1", **_range([worker], [worker, {}])}
        answer = await self._client.json("GET", self._design.view("by_worker"), params=params)
        rows = answer.get("rows", [])
        over = (int(rows[0]["value"]) if rows else 0) - per_worker
        if over <= 0:
            return 0
        # Past the newest ``per_worker`` as of one read, newest first: another instance
        # cutting at once deletes only older ones, so none of those newest is ever cut.
        # (The oldest ``over`` by count, read after its deletions, reached into them.)
        params = {"reduce": "false", "descending": "true", "skip": str(per_worker)}
        params.update(_range([worker, {}], [worker]))
        answer = await self._client.json("GET", self._design.view("by_worker"), params=params)
        gone, last_at = await self._delete([row["id"] for row in answer.get("rows", [])])
        if gone:
            await self._count_dropped(worker, gone, last_at)
        return gone

    async def _delete(self, ids: list[str], older_than: str | None = None) -> tuple[int, str]:
        """Delete each document (every leaf), unless written since (or newer than
        ``older_than``); how many went, and the latest ``last_at`` among them."""
        found = await self._client.leaves_by_id(self._db, ids)
        chosen = {
            key: leaves
            for key, leaves in found.items()
            if older_than is None or merged(leaves)["last_at"] < older_than
        }
        winners = [leaves[0] for leaves in chosen.values()]
        results = await self._bulk([_deletion(leaf) for leaf in winners], check=False)
        gone = {r["id"] for r in results if "error" not in r}
        rest = [leaf for key in gone for leaf in chosen[key][1:]]
        await self._bulk([_deletion(leaf) for leaf in rest], check=False)
        times = [str(merged(chosen[key])["last_at"]) for key in gone]
        return len(gone), max(times, default="")

    async def _count_dropped(self, worker: str, gone: int, last_at: str) -> None:
        key = f"dropped:{worker}"
        async with self._dropping:
            await self._add_dropped(key, worker, gone, last_at)

    async def _add_dropped(self, key: str, worker: str, gone: int, last_at: str) -> None:
        for _ in range(_TRIES):
            leaves = (await self._client.leaves_by_id(self._db, [key])).get(key, [])
            doc: dict[str, Any] = merged(leaves) if leaves else {"_id": key, "type": "dropped"}
            if not leaves:
                doc["born"] = uuid.uuid4().hex
            doc.setdefault("counts", {})
            self._add_own(doc, gone)
            doc["worker"] = worker
            doc["last_at"] = max(str(doc.get("last_at", "")), last_at)
            [result] = await self._bulk([doc], check=False)
            if result.get("error") == "conflict":
                continue
            _raise_other([result])
            self._wrote(doc)
            await self._bulk([_deletion(leaf) for leaf in leaves[1:]], check=False)
            return
        raise StoreUnavailable(f"Could not count the refusals dropped for {worker}; try again.")

    # -- reading ------------------------------------------------------------------------
    async def counts(self, workers: Collection[str]) -> dict[str, int]:
        wanted = set(workers)
        if not wanted:
            return {}
        await self._design.ensure()
        found = {w: n for w, n in (await self._kept_per_worker()).items() if w in wanted}
        keys = [f"dropped:{w}" for w in sorted(wanted)]
        dropped = await self._client.leaves_by_id(self._db, keys)
        for leaves in dropped.values():
            doc = merged(leaves)
            worker = str(doc["worker"])
            found[worker] = found.get(worker, 0) + total(doc)
        return {w: n for w, n in found.items() if n}

    async def _kept_per_worker(self) -> dict[str, int]:
        params = {"group_level": "1"}
        answer = await self._client.json("GET", self._design.view("by_worker"), params=params)
        return {str(row["key"][0]): int(row["value"]) for row in answer.get("rows", [])}

    async def for_workers(
        self, workers: Collection[str] | None, limit: int, before: str | None = None
    ) -> Sequence[Refusal]:
        cursor = None if before is None else Cursor.parse(before)
        if workers is not None and not workers:
            return []
        await self._design.ensure()
        if workers is None:
            return await self._walk(None, limit, cursor)
        having = [w for w in await self._kept_per_worker() if w in set(workers)]
        if len(having) > FEW_WORKERS:
            return await self._walk(frozenset(having), limit, cursor)
        pages = await asyncio.gather(*(self._of_worker(w, limit, cursor) for w in having))
        rows = sorted((r for page in pages for r in page), key=_order, reverse=True)
        return rows[:limit]

    async def _of_worker(self, worker: str, limit: int, cursor: Cursor | None) -> list[Refusal]:
        start: list[Any] = [worker, {}] if cursor is None else [worker, cursor.last_at, cursor.id]
        params = {"reduce": "false", "descending": "true", **_range(start, [worker])}
        params["limit"] = str(limit + 1)  # the cursor's own row may come first
        answer = await self._client.json("GET", self._design.view("by_worker"), params=params)
        found = await self._refusals([row["id"] for row in answer.get("rows", [])])
        return [r for r in found if cursor is None or _order(r) < (cursor.last_at, cursor.id)]

    async def _walk(
        self, workers: frozenset[str] | None, limit: int, cursor: Cursor | None
    ) -> list[Refusal]:
        """Newest first along ``by_time``, keeping ``workers``' (None: all) until ``limit``;
        the view names each row's worker, so only the documents kept are read."""
        start: list[Any] = [{}] if cursor is None else [cursor.last_at, cursor.id]
        ids: list[str] = []
        skip = 0
        while len(ids) < limit:
            params = {"descending": "true", "limit": str(PAGE), "skip": str(skip)}
            params["startkey"] = _json(start)
            answer = await self._client.json("GET", self._design.view("by_time"), params=params)
            rows = answer.get("rows", [])
            for row in rows:
                older = cursor is None or tuple(row["key"]) < (cursor.last_at, cursor.id)
                if older and (workers is None or row.get("value") in workers):
                    ids.append(str(row["id"]))
            if len(rows) < PAGE:
                break
            start, skip = rows[-1]["key"], 1
        kept = await self._refusals(ids[:limit])
        return sorted(kept, key=_order, reverse=True)

    async def _refusals(self, ids: list[str]) -> list[Refusal]:
        """The refusals of ``ids``, each read whole (every leaf merged), in ``ids``' order."""
        found = await self._client.leaves_by_id(self._db, ids)
        return [_refusal(merged(found[key])) for key in ids if key in found]

    async def get(self, refusal_id: int) -> tuple[Refusal, SealedBody | None] | None:
        await self._design.ensure()
        key = doc_id_of(refusal_id)
        leaves = (await self._client.leaves_by_id(self._db, [key])).get(key)
        if not leaves:
            return None
        doc = merged(leaves)
        if "body" not in doc.get("_attachments", {}) or not doc.get("key_ref"):
            return _refusal(doc), None
        try:  # the body never changes once written: the latest revision's is the one
            data = await self._client.raw(path(self._db, key, "body"))
        except NotFound:  # deleted in between (pruned, cut)
            return None
        return _refusal(doc), SealedBody(str(doc["key_ref"]), data, bool(doc.get("truncated")))

    # -- pruning ------------------------------------------------------------------------
    async def prune(self, older_than: str) -> int:
        await self._design.ensure()
        gone = 0
        while True:  # each round deletes what it found: the next starts from the oldest again
            params = {"limit": str(PAGE), "endkey": _json([older_than])}
            answer = await self._client.json("GET", self._design.view("by_time"), params=params)
            rows = answer.get("rows", [])
            deleted, _ = await self._delete([row["id"] for row in rows], older_than)
            gone += deleted
            if len(rows) < PAGE or not deleted:
                break
        await self._prune_dropped(older_than)
        return gone

    async def _prune_dropped(self, older_than: str) -> None:
        params = {"startkey": _json("dropped:"), "endkey": _json("dropped:" + MAX)}
        answer = await self._client.json("GET", path(self._db, "_all_docs"), params=params)
        await self._delete([row["id"] for row in answer.get("rows", [])], older_than)

    # -- CouchDB ------------------------------------------------------------------------
    async def _bulk(self, docs: Sequence[Mapping[str, Any]], check: bool = True) -> list[Any]:
        """``_bulk_docs``; its per-document results (``check``: any error but a 409 raises)."""
        if not docs:
            return []
        where = path(self._db, "_bulk_docs")
        try:
            results: list[Any] = await self._client.json("POST", where, body={"docs": list(docs)})
        except PreconditionFailed as exc:
            if "missing_stub" not in exc.reason:
                raise
            # A cluster copy that has not received the revision read yet cannot find the
            # body an attachment stub names (412 for the whole request, though other copies
            # may have taken some documents): as a 409, each is read again and written
            # again.  A count may then be added twice; dropping the records would lose them.
            return [{"id": doc["_id"], "error": "conflict"} for doc in docs]
        if check:
            _raise_other([r for r in results if r.get("error") != "conflict"])
        return results


def merged(leaves: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The winner (first) with every leaf's counts (each instance's highest), the earliest
    ``first_at`` and the latest ``last_at``, ready to be written against the winner's _rev."""
    doc = {k: v for k, v in leaves[0].items() if k not in ("_conflicts", "_revisions")}
    counts: dict[str, int] = {}
    for leaf in leaves:
        for instance, n in dict(leaf.get("counts") or {}).items():
            counts[str(instance)] = max(counts.get(str(instance), 0), int(n))
    doc["counts"] = counts
    doc["last_at"] = max(str(leaf.get("last_at", "")) for leaf in leaves)
    if "first_at" in doc:
        doc["first_at"] = min(str(leaf.get("first_at", doc["first_at"])) for leaf in leaves)
    return doc


def total(doc: Mapping[str, Any]) -> int:
    return sum(int(n) for n in dict(doc.get("counts") or {}).values())


def _refusal(doc: Mapping[str, Any]) -> Refusal:
    return Refusal(
        str(doc["worker"]),
        None if doc.get("device") is None else str(doc["device"]),
        str(doc["doc_id"]),
        str(doc["rev"]),
        str(doc["reason"]),
        str(doc["detail"]),
        str(doc["first_at"]),
        str(doc["last_at"]),
        total(doc),
        int(doc["ident"]),
        int(doc.get("body_bytes", 0)),
    )


def _grouped(refusals: Iterable[NewRefusal]) -> dict[str, list[NewRefusal]]:
    """The refusals by the document they count on (the first of a key keeps its body)."""
    grouped: dict[str, list[NewRefusal]] = {}
    for r in refusals:
        grouped.setdefault(doc_id_of(ident_of(r.worker, r.doc_id, r.rev)), []).append(r)
    return grouped


def _order(refusal: Refusal) -> tuple[str, int]:
    return refusal.last_at, refusal.id


def _deletion(leaf: Mapping[str, Any]) -> dict[str, Any]:
    return {"_id": leaf["_id"], "_rev": leaf["_rev"], "_deleted": True}


def _raise_other(results: Iterable[Mapping[str, Any]]) -> None:
    for result in results:
        if "error" in result and result["error"] != "conflict":
            raise StoreError(
                f"CouchDB refused refused-record {result.get('id')}: "
                f"{result['error']}: {result.get('reason', '')}"
            )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True)


def _range(start: Any, end: Any) -> dict[str, str]:
    return {"startkey": _json(start), "endkey": _json(end)}
