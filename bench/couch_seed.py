"""Seeding the CouchDB layout fast, straight into CouchDB (not through fieldsync).

Each document becomes exactly what :meth:`CouchStore.write` leaves behind for a
first revision written with ``new_edits`` (layout: :mod:`sync.store.couchdb.layout`):

- its meta ``d:ID`` in the meta database, version 1, settled (no ``pending``);
- its sealed body ``r:REV:ID`` in ``$data``, sealed by :class:`sync.vault.Vault`
  under the place's data key (the same :class:`bench.seed.Seeder` key path as the
  SQLite seeding, so the server opens it);
- its id in a log entry of its place in ``$log``, ``ENTRY_DOCS`` ids per entry at
  consecutive positions (a device that syncs every few forms; the same shape for
  every database size, so the sizes compare the databases and not their logs).

All go in ``_bulk_docs`` requests of ``BULK`` documents, ``IN_FLIGHT`` at a time,
while the next batch is sealed on a worker thread. :func:`check_shape` proves
the documents match the store's own on a scratch database before the benchmark
relies on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

from bench.seed import DB, Sealed, Seeded, Seeder, record
from sync.config import Config, Endpoint
from sync.errors import NotFound, PreconditionFailed, StoreUnavailable
from sync.replication.revtree import RevNode
from sync.store.base import RevisionWrite, StoredRevision
from sync.store.couchdb import layout, metas
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.store import CouchStore

# Ids per log entry: a phone that syncs every few forms (BENCH_LOG_ENTRY_DOCS to change).
ENTRY_DOCS = int(os.environ.get("BENCH_LOG_ENTRY_DOCS") or 10)
BULK = 5_000  # documents per _bulk_docs request
IN_FLIGHT = 3  # _bulk_docs requests at once
SEAL_BATCH = BULK  # fieldsync documents sealed per step (each makes a meta and a body)
TIMEOUT = 900.0
VIEW_TIMEOUT = 4 * 3600.0  # a million metas through QuickJS on a busy machine


def open_client(url: str, in_flight: int = IN_FLIGHT + 1) -> CouchClient:
    return CouchClient(Endpoint.parse(url), max_in_flight=in_flight, timeout=TIMEOUT)


def meta_doc(sealed: Sealed) -> dict[str, Any]:
    rev, place = sealed.rev, sealed.place
    held = StoredRevision(sealed.id, rev, place, False, sealed.key_ref, sealed.body)
    return metas.body(sealed.id, place, 1, {rev: RevNode(None, False)}, {rev: place}, held)


def body_doc(sealed: Sealed) -> dict[str, Any]:
    return {
        "_id": layout.body_id(sealed.id, sealed.rev),
        "place": sealed.place,
        "deleted": False,
        "key_ref": sealed.key_ref,
        "body": layout.b64(sealed.body),
    }


@dataclass
class _Log:
    """The entries being filled, one per place, and each place's last position."""

    at: float
    size: int  # ids per entry
    filling: dict[str, list[list[Any]]] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)

    def add(self, place: str, doc_id: str) -> dict[str, Any] | None:
        ids = self.filling.setdefault(place, [])
        ids.append([doc_id, 1])
        return self._close(place) if len(ids) >= self.size else None

    def _close(self, place: str) -> dict[str, Any]:
        position = self.positions.get(place, 0) + 1
        self.positions[place] = position
        ids = self.filling.pop(place)
        return {"_id": layout.entry_id(place, position), "ids": ids, "at": self.at}

    def rest(self) -> list[dict[str, Any]]:
        return [self._close(place) for place in list(self.filling)]


class CouchSeeder:
    """Writes first revisions of documents into the CouchDB layout of database ``db``.

    Places and their data keys come from ``seeder`` (the data dir's SQLite file,
    where the CouchDB backend keeps them too).
    """

    def __init__(
        self,
        seeder: Seeder,
        client: CouchClient,
        prefix: str,
        db: str = DB,
        entry_docs: int = ENTRY_DOCS,
    ) -> None:
        self.seeder, self.client, self.prefix, self.db = seeder, client, prefix, db
        self.entry_docs = entry_docs
        self.requests = 0

    async def create_db(self) -> None:
        with contextlib.suppress(PreconditionFailed):  # the server's own start may be first
            await CouchStore(self.client, self.prefix).create_db(self.db)

    async def seed(
        self, docs: Iterable[dict[str, Any]], keep: frozenset[str] = frozenset()
    ) -> tuple[int, list[Seeded]]:
        """Store ``docs`` as new documents; returns (count, the documents of ``keep`` places)."""
        log = _Log(time.time(), self.entry_docs)
        kept: list[Seeded] = []
        pending: set[asyncio.Task[None]] = set()
        count = 0
        source = iter(docs)
        batch = await asyncio.to_thread(self._seal, source)
        while batch:
            upcoming = asyncio.create_task(asyncio.to_thread(self._seal, source))
            count += len(batch)
            kept += [s.seeded for s in batch if s.place in keep]
            entries = [e for s in batch if (e := log.add(s.place, s.id)) is not None]
            for database, chunk in self._requests(batch, entries):
                pending = await self._send(pending, database, chunk)
            batch = await upcoming
        for database, chunk in _chunked(layout.log_db(self.prefix, self.db), log.rest()):
            pending = await self._send(pending, database, chunk)
        if pending:
            await asyncio.gather(*pending)
        return count, kept

    async def _send(
        self, pending: set[asyncio.Task[None]], database: str, docs: list[dict[str, Any]]
    ) -> set[asyncio.Task[None]]:
        """Start one ``_bulk_docs`` once fewer than ``IN_FLIGHT`` run (a failure raises)."""
        while len(pending) >= IN_FLIGHT:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        return pending | {asyncio.create_task(self._bulk(database, docs))}

    def _seal(self, source: Iterator[dict[str, Any]]) -> list[Sealed]:
        return [self.seeder.seal(raw, self.db) for raw in islice(source, SEAL_BATCH)]

    def _requests(
        self, batch: list[Sealed], entries: list[dict[str, Any]]
    ) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """Bodies, then metas, then log entries: the order of a store write."""
        yield from _chunked(layout.data_db(self.prefix, self.db), [body_doc(s) for s in batch])
        yield from _chunked(layout.meta_db(self.prefix, self.db), [meta_doc(s) for s in batch])
        yield from _chunked(layout.log_db(self.prefix, self.db), entries)

    async def _bulk(self, database: str, docs: list[dict[str, Any]]) -> None:
        self.requests += 1
        answers = await self.client.json(
            "POST", path(database, "_bulk_docs"), body={"docs": docs}, timeout=TIMEOUT
        )
        failed = [a for a in answers if a.get("error")]
        if failed:
            raise RuntimeError(f"seeding {database}: {len(failed)} refused, e.g. {failed[0]}")


def _chunked(
    database: str, docs: list[dict[str, Any]]
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    for start in range(0, len(docs), BULK):
        yield database, docs[start : start + BULK]


def databases(prefix: str, db: str = DB) -> dict[str, str]:
    return {
        "meta": layout.meta_db(prefix, db),
        "data": layout.data_db(prefix, db),
        "log": layout.log_db(prefix, db),
    }


async def create_db(url: str, prefix: str, db: str = DB) -> None:
    """The three databases of ``db`` and its design document, as the server would make them."""
    client = open_client(url)
    try:
        await CouchStore(client, prefix).create_db(db)
    finally:
        await client.close()


async def build_views(url: str, prefix: str, db: str = DB) -> None:
    """Query the meta database's design document once: CouchDB indexes every document now.

    A running server keeps its views up to date query by query; right after a bulk
    seed they are empty, and the first pull would wait for (or time out on) the build.
    """
    client = open_client(url)
    where = path(layout.meta_db(prefix, db)) + f"/{layout.DESIGN}/_view/counts"
    deadline = time.monotonic() + VIEW_TIMEOUT
    try:
        while True:
            try:
                await client.json("GET", where, params={"limit": "1"}, timeout=TIMEOUT)
                return
            except StoreUnavailable as exc:  # CouchDB stops waiting for its indexer: ask again
                if "timeout" not in exc.reason or time.monotonic() > deadline:
                    raise
    finally:
        await client.close()


async def quiet(url: str, prefix: str, timeout: float = 3600.0) -> list[str]:
    """Wait until CouchDB runs no background task (indexer, compaction) on ``prefix*``.

    A bulk seed sets off database and view compactions; timed pulls should not share
    the machine with them. Returns the kinds of task waited for.
    """
    client = open_client(url)
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            tasks = await client.json("GET", "/_active_tasks")
            ours = [t for t in tasks if _database_of(t).startswith(prefix)]
            if not ours:
                break
            seen.update(str(t.get("type")) for t in ours)
            await asyncio.sleep(2.0)
    finally:
        await client.close()
    return sorted(seen)


def _database_of(task: Mapping[str, Any]) -> str:
    """``shards/00000000-7fffffff/NAME.1796193562`` -> ``NAME``."""
    name = str(task.get("database") or "")
    if name.startswith("shards/"):
        name = name.split("/", 2)[2].rsplit(".", 1)[0]
    return name


async def seed_plain(url: str, database: str, docs: Iterable[Seeded]) -> int:
    """``docs`` as plain CouchDB documents (their own revs), in a new database ``database``."""
    client = open_client(url)
    try:
        with contextlib.suppress(PreconditionFailed):
            await client.json("PUT", path(database))
        plain = [{**d.doc, "_rev": d.rev} for d in docs]
        for start in range(0, len(plain), BULK):
            answers = await client.json(
                "POST",
                path(database, "_bulk_docs"),
                body={"docs": plain[start : start + BULK], "new_edits": False},
            )
            if any(a.get("error") for a in answers):
                raise RuntimeError(f"seeding {database}: {answers[:3]}")
        return len(plain)
    finally:
        await client.close()


# -- proof that the fast path writes what the store writes ------------------------------
async def check_shape(url: str, prefix: str) -> None:
    """Write a few documents both ways into scratch databases and compare every document.

    The sealed bodies differ (random nonces), so bodies are compared opened; CouchDB's
    own ``_rev`` and the log entries' ``at`` (a time) are left out. One store write
    appends one entry per place, so the seeder makes entries as large as the batch here.
    """
    with tempfile.TemporaryDirectory(prefix="fieldsync-bench-check-") as tmp:
        config = replace(Config(), data_dir=Path(tmp))
        rng = random.Random(7)
        docs = [record(rng, "p1", n) for n in range(3)] + [record(rng, "p2", 3)]
        client = open_client(url)
        store = CouchStore(client, prefix)
        try:
            with Seeder(Path(tmp), config) as seeder:
                seeder.add_places([("p1", None), ("p2", None)])
                await store.create_db("slow")
                sealed = [seeder.seal(raw, "slow") for raw in docs]
                writes = [
                    RevisionWrite(s.id, (s.rev,), False, s.place, s.key_ref, s.body, True)
                    for s in sealed
                ]
                results = await store.write("slow", writes)
                assert all(r.error is None for r in results), results
                fast = CouchSeeder(seeder, client, prefix, "fast", entry_docs=len(docs))
                await fast.create_db()
                await fast.seed(docs)
                await _compare(client, prefix, seeder)
        finally:
            for db in ("slow", "fast"):
                with contextlib.suppress(NotFound):
                    await store.delete_db(db)
            await client.close()


async def _compare(client: CouchClient, prefix: str, seeder: Seeder) -> None:
    for name in (layout.meta_db, layout.log_db):
        slow = await _docs(client, name(prefix, "slow"))
        fast = await _docs(client, name(prefix, "fast"))
        if [_unsealed(d) for d in slow] != [_unsealed(d) for d in fast]:
            raise AssertionError(f"seeded {name.__name__} differs:\n{slow}\n{fast}")
        for was, now in zip(slow, fast, strict=True):  # the bodies metas hold inline
            if "wb" in was and _open_inline(seeder, "slow", was) != _open_inline(
                seeder, "fast", now
            ):
                raise AssertionError(f"seeded inline body of {now['_id']} differs")
    slow_data = await _docs(client, layout.data_db(prefix, "slow"))
    fast_data = await _docs(client, layout.data_db(prefix, "fast"))
    if [_shape(d) for d in slow_data] != [_shape(d) for d in fast_data]:
        raise AssertionError(f"seeded bodies differ from the store's:\n{slow_data}")
    for was, now in zip(slow_data, fast_data, strict=True):
        if was["_id"].startswith("r:") and _open(seeder, "slow", was) != _open(seeder, "fast", now):
            raise AssertionError(f"seeded body {now['_id']} differs from the store's")


async def _docs(client: CouchClient, database: str) -> list[dict[str, Any]]:
    answer = await client.json("GET", path(database, "_all_docs"), params={"include_docs": "true"})
    return [
        {k: v for k, v in row["doc"].items() if k not in ("_rev", "at", "uuid", "created")}
        for row in answer["rows"]
    ]


def _unsealed(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A meta without its inline body's sealed bytes (sealed twice, they never match)."""
    if "wb" not in doc:
        return dict(doc)
    return {**doc, "wb": _shape(doc["wb"])}


def _open_inline(seeder: Seeder, db: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    held = metas.parse({**doc, "_rev": "1-x"}).winner_body
    if held is None:
        raise AssertionError(f"the inline body of {doc['_id']} is not its winner's")
    return seeder.vault.open_body(db, held)


def _shape(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "body"}


def _open(seeder: Seeder, db: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    _, rev, doc_id = str(doc["_id"]).split(":", 2)
    stored = StoredRevision(
        doc_id, rev, doc["place"], doc["deleted"], doc["key_ref"], layout.unb64(doc["body"])
    )
    return seeder.vault.open_body(db, stored)
