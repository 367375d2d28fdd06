"""Bases: a place's walk from the start, kept, so that a phone's first pull of the place
reads one CouchDB document a page instead of the log and one meta a change (ADR 0001,
"Bases").

A base holds what a phone pulling the place from the start was sent when the base was
made: the walk's rows in order, each with the cursor after it and the document's meta then
(or nothing, for an entry that sent nothing), in chunk documents of the data database
(``c:`` + token + ``:`` + number); the place's pointer (``b:`` + place) names them.
Cursors are log positions, so a phone can go from a base to the log, or from one base
to another, at any row.

Replaying a base is pulling when it was made, and again now: what changed since comes
from the entries after the base, as for any phone that pulled then.  What no phone may be
sent any more, though, a base would still hold:

- a document that moved out of the place: its writer drops the place's base (the
  pointer, a write that must stand on a quorum of copies) before it saves the meta that
  moves the document (``CouchStore._write_once``);
- shredded documents, and bodies sealed under the keys a rotation deletes: the commands
  delete every base of every database (``drop_all``), a shred before it starts and again
  once it is done, a rotation once everything is re-sealed.  That first moves the
  database's *epoch* on (``bump_epoch``): a base made under another epoch is not used, so
  one whose build was under way meanwhile is never read.

A reader takes a base's rows only after reading its pointer and the epoch again, by key
(quorum reads): a base dropped before that read is not used, and a move that comes after
it is a write that came after the read, as with any replica.  A builder reads the
pointer and the epoch before it walks, and its pointer is written against the revision it
read: a drop meanwhile makes it fail (409), and the base is thrown away.

Chunks never change, so an instance keeps those it read (sealed, as CouchDB holds them).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from sync.errors import NotFound, StoreUnavailable
from sync.store.base import Position
from sync.store.couchdb import metas
from sync.store.couchdb.client import CouchClient, path

log = structlog.get_logger("fieldsync.couchdb")

POINTER_PREFIX = "b:"
CHUNK_PREFIX = "c:"
EPOCH_ID = "bases-epoch"
MARK = "made_by"  # put_alone's token field
# A base is made for a place whose first pull sends at least this many changes.
MIN_ROWS = 1_000
# Rows a chunk holds at most, and characters of their JSON (Cloudant: 1 MB a document).
ROWS_PER_CHUNK = 100
CHUNK_CHARACTERS = 600_000
# How long chunks of a base that was replaced or dropped stay for readers still using them.
RETIRED_SECONDS = 600.0
# How long an instance trusts what it read of a place's pointer to decide whether to look
# (never to send: rows are sent only after reading the pointer again).
KNOWN_SECONDS = 300.0
REBUILD_AFTER_SECONDS = 86_400.0  # a base older than this is made again at the next first pull
SMALL_SECONDS = 3_600.0  # a place found too small for a base is not walked again before
KEPT_CHUNK_CHARACTERS = 16 * 1024 * 1024  # of chunk text kept parsed (a few times that in memory)
_TRIES = 20
_LISTED = 500  # ids listed a request when every base goes

Row = tuple[Position, "metas.Meta | None"]
Walk = AsyncIterator[list[Row]]  # a place's walk from the start, a page at a time


def pointer_id(place: str) -> str:
    return POINTER_PREFIX + place


@dataclass(frozen=True, slots=True)
class Pointer:
    place: str
    token: str | None  # None: no base (dropped, or never made)
    epoch: str
    end: Position  # the cursor after the base's last row
    chunks: tuple[tuple[str, Position], ...]  # (chunk id, cursor after its last row)
    at: float

    @staticmethod
    def read(place: str, leaves: Sequence[Mapping[str, Any]]) -> Pointer | None:
        """The pointer, if it is one document (a fork is no base until the next write)."""
        if len(leaves) != 1:
            return None
        doc = leaves[0]
        token = doc.get("token")
        return Pointer(
            place,
            str(token) if token else None,
            str(doc.get("epoch", "")),
            _position(doc.get("end", [0, 0])),
            tuple((str(c), _position(last)) for c, last in doc.get("chunks", [])),
            float(doc.get("at", 0.0)),
        )


def _young(pointer: Pointer | None) -> bool:
    """A base (not a dropped one) made less than ``REBUILD_AFTER_SECONDS`` ago."""
    return (
        pointer is not None
        and bool(pointer.token)
        and time.time() - pointer.at < REBUILD_AFTER_SECONDS
    )


def _position(value: Any) -> Position:
    done, offset = value
    return int(done), int(offset)


def _epoch(leaves: Sequence[Mapping[str, Any]] | None) -> str | None:
    """The database's epoch; None while it forked (no base is used then)."""
    if not leaves:
        return ""
    if len(leaves) != 1:
        return None
    return str(leaves[0].get("epoch", ""))


class Bases:
    """What one instance knows of the bases, and the builds it runs (one at a time)."""

    def __init__(
        self, client: CouchClient, min_rows: int = MIN_ROWS, max_document_bytes: int = 1_000_000
    ) -> None:
        """``min_rows``: 0, no base is made; ``max_document_bytes``: CouchDB's largest
        document (a chunk's text stays under half of it)."""
        self.client = client
        self.min_rows = min_rows
        self.chunk_characters = max(100_000, min(CHUNK_CHARACTERS, max_document_bytes // 2))
        self._known: dict[tuple[str, str], tuple[float, Pointer | None]] = {}
        self._chunks: OrderedDict[tuple[str, str], list[Row]] = OrderedDict()
        self._chunk_sizes: dict[tuple[str, str], int] = {}
        self._kept = 0
        self._building: set[tuple[str, str]] = set()
        # places walked and found too small for a base, and when: not walked again soon
        self._small: dict[tuple[str, str], float] = {}
        self._build_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.used = 0  # changes sent from bases (read by readings and tests)
        self.made = 0  # bases this instance made

    # -- reading -------------------------------------------------------------------
    async def rows(
        self, data_db: str, places: Iterable[str], cursor: Mapping[str, Position], wanted: int
    ) -> dict[str, list[Row]]:
        """For each place whose cursor lies inside its base: the base's rows after the
        cursor, enough for ``wanted`` changes; checked against the pointer and the epoch
        read after deciding to use them.  Empty when no base applies."""
        now = time.monotonic()
        unknown = [
            p
            for p in places
            if cursor.get(p, (0, 0)) == (0, 0) and not self._fresh(data_db, p, now)
        ]
        if unknown:
            found = await self.client.leaves_by_id(data_db, [pointer_id(p) for p in unknown])
            for p in unknown:
                self._remember(data_db, p, Pointer.read(p, found.get(pointer_id(p), [])))
        # the places in walk order, as far as ``wanted`` rows take a page (a supervisor's
        # hundreds of places are not all read for one page)
        inside: dict[str, Pointer] = {}
        needed: dict[str, list[str]] = {}
        rows_ahead = 0
        for p in sorted(places):
            known = self._known.get((data_db, p))
            pointer = known[1] if known is not None else None
            at = cursor.get(p, (0, 0))
            if pointer is None or not pointer.token or at >= pointer.end:
                continue
            inside[p] = pointer
            needed[p] = self._chunks_after(pointer, at, wanted - rows_ahead)
            rows_ahead += len(needed[p]) * ROWS_PER_CHUNK
            if rows_ahead >= wanted:
                break
        if not inside:
            return {}
        missing = [c for ids in needed.values() for c in ids if (data_db, c) not in self._chunks]
        keys = [*(pointer_id(p) for p in inside), EPOCH_ID, *missing]
        found = await self.client.leaves_by_id(data_db, keys, chunk=max(100, len(keys)))
        epoch = _epoch(found.get(EPOCH_ID))
        for chunk_id in missing:
            leaves = found.get(chunk_id)
            if leaves:
                text = str(leaves[0]["rows"])
                self._keep(data_db, chunk_id, _parse_rows(leaves[0]), len(text))
        got: dict[str, list[Row]] = {}
        for p, pointer in inside.items():
            now_pointer = Pointer.read(p, found.get(pointer_id(p), []))
            self._remember(data_db, p, now_pointer)
            usable = (
                now_pointer is not None
                and now_pointer.token == pointer.token
                and epoch is not None
                and now_pointer.epoch == epoch
                and all((data_db, c) in self._chunks for c in needed[p])
            )
            if not usable:
                if now_pointer is not None and now_pointer.epoch != epoch:
                    self._remember(data_db, p, None)  # made before a shred or rotation
                continue
            at = cursor.get(p, (0, 0))
            rows = [r for c in needed[p] for r in self._chunks[(data_db, c)] if r[0] > at]
            got[p] = rows
        return got

    def _fresh(self, data_db: str, place: str, now: float) -> bool:
        known = self._known.get((data_db, place))
        return known is not None and now - known[0] < KNOWN_SECONDS

    def _remember(self, data_db: str, place: str, pointer: Pointer | None) -> None:
        if len(self._known) > 100_000:
            self._known.clear()
        self._known[(data_db, place)] = (time.monotonic(), pointer)

    @staticmethod
    def _chunks_after(pointer: Pointer, at: Position, wanted: int) -> list[str]:
        """The chunks holding the rows after ``at``: enough of them for ``wanted`` rows."""
        ids, rows = [], 0
        for chunk_id, last in pointer.chunks:
            if last <= at:
                continue
            ids.append(chunk_id)
            rows += ROWS_PER_CHUNK
            if rows >= wanted + ROWS_PER_CHUNK:
                break
        return ids

    def _keep(self, data_db: str, chunk_id: str, rows: list[Row], size: int) -> None:
        """Keep a chunk's rows; ``size``: its text's length (what the bound counts)."""
        key = (data_db, chunk_id)
        self._chunks[key] = rows
        self._chunk_sizes[key] = size
        self._kept += size
        while self._kept > KEPT_CHUNK_CHARACTERS and self._chunks:
            old, _ = self._chunks.popitem(last=False)
            self._kept -= self._chunk_sizes.pop(old, 0)

    def forget(self, data_db: str) -> None:
        """The database was deleted or made again."""
        for key in [k for k in self._known if k[0] == data_db]:
            del self._known[key]
        for key in [k for k in self._chunks if k[0] == data_db]:
            del self._chunks[key]
            self._kept -= self._chunk_sizes.pop(key, 0)

    # -- dropping ------------------------------------------------------------------
    async def drop(self, data_db: str, places: Iterable[str]) -> None:
        """The places' bases are no longer used by anyone, once this returns."""
        await asyncio.gather(*(self._drop(data_db, p) for p in sorted(set(places))))

    async def _drop(self, data_db: str, place: str) -> None:
        self._known.pop((data_db, place), None)
        where = pointer_id(place)
        for _ in range(_TRIES):
            leaves = (await self.client.leaves_by_id(data_db, [where])).get(where, [])
            # written even when there is no base: a build under way read this revision and
            # writes its pointer against it, so that write must fail
            body = _pointer_body(place, None, "", (0, 0), [], _retire(leaves))
            if await _stands(self.client, data_db, body, leaves):
                return
        raise StoreUnavailable(f"Could not drop the base of place {place!r}; retry.")

    # -- building ------------------------------------------------------------------
    def consider(self, data_db: str, place: str, walk: Callable[[], Walk]) -> None:
        """After a first pull of ``place`` that found no base to use (or an old one): make
        one in the background, from the pages ``walk()`` gives."""
        key = (data_db, place)
        if key in self._building or not self.min_rows:
            return
        if time.monotonic() - self._small.get(key, -SMALL_SECONDS) < SMALL_SECONDS:
            return
        known = self._known.get(key)
        if _young(known[1] if known is not None else None):
            return
        self._building.add(key)
        task = asyncio.ensure_future(self._build(data_db, place, walk))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._building.discard(key))

    async def _build(self, data_db: str, place: str, walk: Callable[[], Walk]) -> None:
        async with self._build_lock:
            try:
                await self.build(data_db, place, walk())
            except Exception:
                log.warning("couchdb_base_not_made", place=place, exc_info=True)

    async def build(self, data_db: str, place: str, walk: Walk) -> bool:
        """Make ``place``'s base from ``walk`` (its pages from the start): whether it was
        written (not: too few changes, made by another instance lately, or dropped meanwhile).
        Chunks are written as the walk goes, so a build holds a few pages, not the place."""
        where = pointer_id(place)
        found = await self.client.leaves_by_id(data_db, [where, EPOCH_ID])
        leaves = found.get(where, [])
        epoch = _epoch(found.get(EPOCH_ID))
        if len(leaves) > 1 or epoch is None:
            return False
        current = Pointer.read(place, leaves) if leaves else None
        if current is not None and current.epoch == epoch and _young(current):  # made lately
            self._remember(data_db, place, current)
            return False
        chunker = _Chunker(secrets.token_hex(8), self.chunk_characters)
        listed: list[tuple[str, Position]] = []
        ready: list[tuple[str, Position, str]] = []
        changes, end = 0, (0, 0)
        try:
            async for rows in walk:
                for row in rows:
                    changes += row[1] is not None
                    end = row[0]
                    ready += chunker.add(row)
                if changes >= self.min_rows > 0 and len(ready) >= 8:
                    listed += await self._write_chunks(data_db, ready)
                    ready = []
            if not self.min_rows or changes < self.min_rows:
                await self._delete(data_db, [c for c, _ in listed])
                if len(self._small) > 100_000:
                    self._small.clear()
                self._small[(data_db, place)] = time.monotonic()
                return False
            listed += await self._write_chunks(data_db, [*ready, *chunker.finish()])
            body = _pointer_body(place, chunker.token, epoch, end, listed, _retire(leaves))
            if not await _stands(self.client, data_db, body, leaves):
                await self._delete(data_db, [c for c, _ in listed])
                return False
        except BaseException:
            with contextlib.suppress(Exception):
                await self._delete(data_db, [c for c, _ in listed])
            raise
        await self._delete(data_db, _expired(leaves))
        self._remember(data_db, place, Pointer.read(place, [body]))
        self.made += 1
        log.info("couchdb_base_made", place=place, changes=changes, chunks=len(listed))
        return True

    async def _write_chunks(
        self, data_db: str, chunks: Sequence[tuple[str, Position, str]]
    ) -> list[tuple[str, Position]]:
        """Create the chunks (a few a request); their ids and last cursors."""
        batch: list[dict[str, Any]] = []
        size = 0
        for chunk_id, _, text in chunks:
            batch.append({"_id": chunk_id, "rows": text})
            size += len(text)
            if size > 8 * CHUNK_CHARACTERS:
                await self._bulk(data_db, batch)
                batch, size = [], 0
        await self._bulk(data_db, batch)
        return [(chunk_id, last) for chunk_id, last, _ in chunks]

    async def _bulk(self, data_db: str, docs: list[dict[str, Any]]) -> None:
        if not docs:
            return
        answers = await self.client.json("POST", path(data_db, "_bulk_docs"), body={"docs": docs})
        failed = [a for a in answers if a.get("error")]
        if failed:
            raise StoreUnavailable(f"Could not write a base: {failed[0].get('error')}")

    async def _delete(self, data_db: str, chunk_ids: Sequence[str]) -> None:
        if not chunk_ids:
            return
        found = await self.client.leaves_by_id(data_db, list(chunk_ids))
        doomed = [
            {"_id": c, "_rev": leaf["_rev"], "_deleted": True}
            for c, leaves in found.items()
            for leaf in leaves
        ]
        if doomed:
            await self.client.json("POST", path(data_db, "_bulk_docs"), body={"docs": doomed})

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _stands(
    client: CouchClient,
    data_db: str,
    body: dict[str, Any],
    leaves: Sequence[Mapping[str, Any]],
) -> bool:
    """Write ``body`` over the document whose ``leaves`` were read (created, if none):
    whether it stands on a quorum of copies (``put_alone``).  A fork's other leaves go."""
    if leaves:
        body["_rev"] = leaves[0]["_rev"]
    if not await client.put_alone(data_db, body, MARK):
        return False
    others = [{"_id": body["_id"], "_rev": leaf["_rev"], "_deleted": True} for leaf in leaves[1:]]
    if others:
        await client.json("POST", path(data_db, "_bulk_docs"), body={"docs": others})
    return True


def _pointer_body(
    place: str,
    token: str | None,
    epoch: str,
    end: Position,
    chunks: Sequence[tuple[str, Position]],
    retired: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "_id": pointer_id(place),
        "token": token,
        "epoch": epoch,
        "end": list(end),
        "chunks": [[c, list(last)] for c, last in chunks],
        "at": time.time(),
        "retired": retired,
        MARK: secrets.token_hex(8),
    }


def _retire(leaves: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The chunks the new pointer no longer names, kept for readers still on them."""
    retired: list[dict[str, Any]] = []
    now = time.time()
    for leaf in leaves:
        retired += [r for r in leaf.get("retired", []) if now - float(r["at"]) < RETIRED_SECONDS]
        if leaf.get("token"):
            retired.append({"at": now, "chunks": [c for c, _ in leaf.get("chunks", [])]})
    return retired


def _expired(leaves: Sequence[Mapping[str, Any]]) -> list[str]:
    now = time.time()
    return [
        str(c)
        for leaf in leaves
        for r in leaf.get("retired", [])
        if now - float(r["at"]) >= RETIRED_SECONDS
        for c in r["chunks"]
    ]


class _Chunker:
    """Rows into chunk texts: at most ``ROWS_PER_CHUNK`` rows and ``most`` characters each
    (a single larger row alone)."""

    def __init__(self, token: str, most: int = CHUNK_CHARACTERS) -> None:
        self.token, self.most = token, most
        self.count = 0
        self._part: list[bytes] = []
        self._size = 0
        self._last: Position = (0, 0)

    def add(self, row: Row) -> list[tuple[str, Position, str]]:
        """The chunk that ``row`` closed, if it did."""
        after, meta = row
        encoded = orjson.dumps([after[0], after[1], metas.to_doc(meta) if meta else None])
        closed = []
        if self._part and (
            len(self._part) >= ROWS_PER_CHUNK or self._size + len(encoded) > self.most
        ):
            closed = self.finish()
        self._part.append(encoded)
        self._size += len(encoded)
        self._last = after
        return closed

    def finish(self) -> list[tuple[str, Position, str]]:
        if not self._part:
            return []
        chunk_id = f"{CHUNK_PREFIX}{self.token}:{self.count:05d}"
        text = (b"[" + b",".join(self._part) + b"]").decode()
        self.count += 1
        self._part, self._size = [], 0
        return [(chunk_id, self._last, text)]


def _chunks(
    token: str, rows: Sequence[Row], most: int = CHUNK_CHARACTERS
) -> list[tuple[str, Position, str]]:
    """``rows`` as chunk documents' texts: (id, cursor after its last row, text)."""
    chunker = _Chunker(token, most)
    out = [chunk for row in rows for chunk in chunker.add(row)]
    return out + chunker.finish()


def _parse_rows(doc: Mapping[str, Any]) -> list[Row]:
    return [
        ((int(done), int(offset)), metas.parse(meta) if meta else None)
        for done, offset, meta in orjson.loads(doc["rows"])
    ]


async def bump_epoch(client: CouchClient, data_db: str) -> None:
    """Every base of the database made before this returns is no longer used."""
    for _ in range(_TRIES):
        leaves = (await client.leaves_by_id(data_db, [EPOCH_ID])).get(EPOCH_ID, [])
        body = {"_id": EPOCH_ID, "epoch": secrets.token_hex(8), MARK: secrets.token_hex(8)}
        if await _stands(client, data_db, body, leaves):
            return
    raise StoreUnavailable("Could not move the bases' epoch on; retry.")


async def drop_all(client: CouchClient, data_db: str) -> int:
    """Every base of the database goes (a shred, a rotation): none is used from now on (the
    epoch moves on), then its pointers and chunks are deleted, every leaf; how many.  A
    database not made yet has none."""
    try:
        await bump_epoch(client, data_db)
    except NotFound:
        return 0
    gone = 0
    for prefix in (CHUNK_PREFIX, POINTER_PREFIX):
        after = ""
        while True:
            params = {
                "startkey": orjson.dumps(after or prefix).decode(),
                "endkey": orjson.dumps(prefix + "\ufff0").decode(),
                "limit": str(_LISTED),
                "skip": "1" if after else "0",
            }
            answer = await client.json("GET", path(data_db, "_all_docs"), params=params)
            ids = [str(row["id"]) for row in answer.get("rows", [])]
            if not ids:
                break
            found = await client.leaves_by_id(data_db, ids)
            doomed = [
                {"_id": doc_id, "_rev": leaf["_rev"], "_deleted": True}
                for doc_id, leaves in found.items()
                for leaf in leaves
            ]
            if doomed:
                await client.json("POST", path(data_db, "_bulk_docs"), body={"docs": doomed})
            gone += len(ids)
            after = ids[-1]
    return gone
