"""The per-place change log in CouchDB: appended by writers, read by key.

Each place has a log of entries at consecutive positions 1, 2, 3, ...; an
entry is one document, created once (a create of an existing id is a 409) and
never changed.  A writer appends at the first free position; because a
position is taken only after the one before it exists, positions never skip.

Readers fetch entries *by id* (``POST _all_docs {"keys": ...}``), which CouchDB
answers with quorum reads, never from a range that one lagging shard copy
serves; and they stop at the first position they cannot see.  So a reader
never steps over an entry that a writer has made: at worst it stops early and
picks the rest up next time.  (docs/adr/0001-couchdb-layout.md, "Never a missed change".)
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from sync.errors import Conflict, StoreUnavailable
from sync.store.couchdb import layout
from sync.store.couchdb.client import CouchClient, path

log = structlog.get_logger()

_APPEND_TRIES = 50
# How long a reader waits at a position, or at an entry's document, that quorum
# reads do not show, before it passes over it (``FIELDSYNC_COUCHDB_LOST_AFTER_SECONDS``).
LOST_AFTER_SECONDS = 600.0
_PROBED = 8  # positions read after a missing one whose place is known to go on
# The id an entry names in place of a shredded document (``sync.couchshred``): no
# document has it (CouchDB refuses an empty id), and readers pass over it.
BLANK = ""
_MIGRATED_KEPT = 100_000  # positions of old tokens kept (a few MB)


@dataclass(frozen=True, slots=True)
class Entry:
    place: str
    position: int
    ids: tuple[tuple[str, int], ...]  # (doc id, version written)
    at: float
    lost: bool = False  # a missing position passed over (PlaceLog.read)


@dataclass(slots=True)
class _Batch:
    """Ids waiting for the next entry of one place's log, and the position it got."""

    ids: dict[str, int]
    written: asyncio.Future[int]


class PlaceLog:
    def __init__(self, client: CouchClient, lost_after: float = LOST_AFTER_SECONDS) -> None:
        self.client = client
        self.lost_after = lost_after
        # What this instance passed over as lost (read by sync.store.couchdb.readings).
        self.passed = {"position": 0, "version": 0}
        self._tails: dict[tuple[str, str], int] = {}  # (log db, place) -> last position known
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._waiting: dict[tuple[str, str], _Batch] = {}
        self._ids_per_entry: dict[tuple[str, str], float] = {}  # as last read
        # (log db, place, embedded seq) -> position: migrated entries never change, so a
        # phone's old token costs its binary search once per instance, not per request.
        self._migrated: OrderedDict[tuple[str, str, int], int] = OrderedDict()

    def forget(self, log_db: str) -> None:
        """Drop what is known of ``log_db``'s tails (the database was deleted or created)."""
        for key in [k for k in self._tails if k[0] == log_db]:
            del self._tails[key]
        for key in [k for k in self._ids_per_entry if k[0] == log_db]:
            del self._ids_per_entry[key]
        for found in [k for k in self._migrated if k[0] == log_db]:
            del self._migrated[found]
        for key in [k for k, lock in self._locks.items() if k[0] == log_db and not lock.locked()]:
            del self._locks[key]

    async def append(self, log_db: str, place: str, ids: Sequence[tuple[str, int]]) -> int:
        """Add ``ids`` to ``place``'s log; the position of the entry that names them.

        One append per place and instance at a time: concurrent appends would only
        race each other for the same position, each 409 costing two more round trips
        (200 deletes at once in one place took 24 s, and 61 of them gave up).  Ids that
        arrive while an entry is being written wait and go together into the next
        entry (a group commit), so N concurrent writers cost about two entries.
        """
        key = (log_db, place)
        batch = self._waiting.get(key)
        if batch is None:
            batch = self._waiting[key] = _Batch({}, asyncio.get_running_loop().create_future())
        for doc_id, version in ids:
            batch.ids[doc_id] = max(version, batch.ids.get(doc_id, 0))
        async with self._locks.setdefault(key, asyncio.Lock()):
            if not batch.written.done():  # nobody wrote our batch yet: we write it
                if self._waiting.get(key) is batch:
                    del self._waiting[key]
                try:
                    batch.written.set_result(await self._append(log_db, place, batch.ids))
                except Exception as exc:  # every writer of the batch gets it
                    batch.written.set_exception(exc)
                except BaseException:
                    batch.written.set_exception(StoreUnavailable("A log append was interrupted."))
                    batch.written.exception()  # ours is the cancellation: mark it seen
                    raise
        return await batch.written

    async def _append(self, log_db: str, place: str, ids: Mapping[str, int]) -> int:
        body = {"ids": [[i, v] for i, v in ids.items()], "at": time.time()}
        position = await self._tail(log_db, place) + 1
        for _ in range(_APPEND_TRIES):
            where = path(log_db, layout.entry_id(place, position))
            try:
                status = await self.client.put_status(where, body)
            except Conflict:  # taken by another writer: look further
                position = max(position + 1, await self._read_tail(log_db, place) + 1)
                continue
            self._tails[(log_db, place)] = position
            if status == 201:
                return position
            # 202: fewer than a quorum of copies took it, so another instance may have
            # taken the same position through another node, and a reader may see only
            # theirs.  Say it again further on; a duplicate costs a reader a second look.
            position += 1
        raise StoreUnavailable(f"Could not append to the change log of place {place!r}; retry.")

    async def _tail(self, log_db: str, place: str) -> int:
        known = self._tails.get((log_db, place))
        return known if known is not None else await self._read_tail(log_db, place)

    async def _read_tail(self, log_db: str, place: str) -> int:
        """The highest position of ``place`` that CouchDB shows (a lagging copy shows less)."""
        low, high = layout.entry_range(place)
        params = {
            "descending": "true",
            "limit": "1",
            "startkey": _key(high),
            "endkey": _key(low),
        }
        answer = await self.client.json("GET", path(log_db, "_all_docs"), params=params)
        rows = answer.get("rows", [])
        found = layout.entry_position(rows[0]["id"]) if rows else 0
        known = max(found, self._tails.get((log_db, place), 0))
        self._tails[(log_db, place)] = known
        return known

    @staticmethod
    def _whole(leaves: Sequence[Mapping[str, Any]]) -> Entry:
        """An entry with every version of it: two instances that took the same position
        through two cluster nodes each got a success, and CouchDB keeps both writes as
        conflicting revisions of the one entry.  Both name documents to announce."""
        entry = _entry(leaves[0])
        ids = list(entry.ids)
        for other in leaves[1:]:
            ids += [i for i in _entry(other).ids if i not in ids]
        return Entry(entry.place, entry.position, tuple(ids), entry.at)

    async def tails(self, log_db: str, places: Iterable[str]) -> dict[str, int]:
        """The last position of each place, as far as this instance can tell (never too high)."""
        order = list(places)
        found = await asyncio.gather(*(self._read_tail(log_db, p) for p in order))
        return dict(zip(order, found, strict=True))

    def lost_before(self) -> float:
        """An entry written before this time (its writer's clock) whose document's meta
        quorum reads still do not show at its version is passed over (``_walk`` in
        ``feed``), as is a position missing below an entry this old: see :meth:`read`."""
        return time.time() - self.lost_after

    async def read(
        self, log_db: str, cursor: Mapping[str, int], places: Sequence[str], window: int
    ) -> dict[str, list[Entry]]:
        """The entries after ``cursor`` of each place, up to the first one not visible.

        A missing position below an entry older than :meth:`lost_before` is passed over
        as an empty entry.  That entry was taken only once the missing one existed, so
        the missing one was written that long ago and quorum reads still miss it: a copy
        that alone took it (a 202) was lost.  Its writer said its ids again further on
        (:meth:`_append`), or their metas are pending and the settler will, so passing it
        loses nothing and keeps the place's readers from stopping there for good (ADR
        0001, *Liveness after losing a copy*).
        """
        keys = [layout.entry_id(p, cursor.get(p, 0) + k) for p in places for k in range(1, window)]
        held = await self._held(log_db, keys)
        lost_before = self.lost_before()
        runs = {p: self._run(held.get(p, {}), p, cursor.get(p, 0), lost_before) for p in places}
        # A place stopped at a missing position that this instance knows is not its last
        # (a tail read or an append went further): read a few after it, to see their age.
        probe = []
        for p, run in runs.items():
            stop = (run[-1].position if run else cursor.get(p, 0)) + 1
            last = self._tails.get((log_db, p), 0)
            read = stop < cursor.get(p, 0) + window  # else the run just reached the window's end
            if read and last > stop and not any(q > stop for q in held.get(p, {})):
                probe += [
                    layout.entry_id(p, q) for q in range(stop + 1, min(last, stop + _PROBED) + 1)
                ]
        if probe:
            for p, more in (await self._held(log_db, probe)).items():
                held.setdefault(p, {}).update(more)
                runs[p] = self._run(held[p], p, cursor.get(p, 0), lost_before)
        for p, run in runs.items():
            self.passed["position"] += sum(e.lost for e in run)
            if run:
                key = (log_db, p)
                self._tails[key] = max(self._tails.get(key, 0), run[-1].position)
                self._ids_per_entry[key] = sum(len(e.ids) for e in run) / len(run)
        return runs

    async def _held(self, log_db: str, keys: Sequence[str]) -> dict[str, dict[int, Entry]]:
        """The entries of ``keys`` that quorum reads show, by place and position."""
        held: dict[str, dict[int, Entry]] = {}
        for leaves in (await self.client.leaves_by_id(log_db, keys)).values():
            entry = self._whole(leaves)
            held.setdefault(entry.place, {})[entry.position] = entry
        return held

    @staticmethod
    def _run(held: Mapping[int, Entry], place: str, done: int, lost_before: float) -> list[Entry]:
        """The entries after ``done``, up to the first missing position that is not lost."""
        run: list[Entry] = []
        position = done + 1
        while True:
            entry = held.get(position)
            if entry is None:
                later = min((q for q in held if q > position), default=None)
                if later is None or held[later].at > lost_before:
                    return run
                log.warning("couchdb_log_position_lost", place=place, position=position)
                entry = Entry(place, position, (), held[later].at, lost=True)
            run.append(entry)
            position += 1

    async def migrated_position(self, log_db: str, place: str, seq: int) -> int:
        """The position of ``place``'s last entry that ``fieldsync migrate`` wrote for an
        embedded sequence at most ``seq`` (0 if none): a binary search over the entries.

        Migrate writes a place's entries first, in the embedded store's order, each with
        its ``embedded_seq``; entries written since have none.  So "has an embedded seq of
        at most ``seq``" holds for positions 1..k and for none after: about log2(tail)
        reads, once per place, token and instance (kept).  A place whose first entry was
        not migrated costs one read.  An entry missing (a hole) counts as not holding,
        which can only give a lower position: changes sent twice, none skipped.
        """
        key = (log_db, place, seq)
        if key in self._migrated:
            self._migrated.move_to_end(key)
            return self._migrated[key]
        low, high = 0, 2  # low holds, high does not: entry 1 first
        if await self._holds(log_db, place, 1, seq):
            low, high = 1, await self._read_tail(log_db, place) + 1
        while high - low > 1:
            middle = (low + high) // 2
            if await self._holds(log_db, place, middle, seq):
                low = middle
            else:
                high = middle
        self._migrated[key] = low
        if len(self._migrated) > _MIGRATED_KEPT:
            self._migrated.popitem(last=False)
        return low

    async def _holds(self, log_db: str, place: str, position: int, seq: int) -> bool:
        """Whether the entry at ``position`` was migrated for an embedded seq <= ``seq``."""
        entry = layout.entry_id(place, position)
        leaves = (await self.client.leaves_by_id(log_db, [entry])).get(entry, [])
        number = leaves[0].get("embedded_seq") if leaves else None
        return isinstance(number, int) and not isinstance(number, bool) and number <= seq

    def first_window(self, log_db: str, done: Mapping[str, int], limit: int) -> int:
        """The window of a walk's first read: one key per place (2), unless this instance
        knows that a few places hold entries after ``done``; then about as many entries as
        ``limit`` changes take there (read before, or an append's), not to read twice."""
        if len(done) > 8:
            return 2
        window = 2
        for place, position in done.items():
            ahead = self._tails.get((log_db, place), 0) - position
            if ahead > 1:
                per_entry = self._ids_per_entry.get((log_db, place), 1.0)
                enough = int(limit / max(per_entry, 1.0) * 1.25) + 2
                window = max(window, min(ahead + 1, enough))
        return min(window, limit + 1, 1001)


def _entry(doc: Mapping[str, Any]) -> Entry:
    place, _, digits = str(doc["_id"]).rpartition("!")
    ids = tuple((str(i), int(v)) for i, v in doc.get("ids", []))
    return Entry(place, int(digits), ids, float(doc.get("at", 0.0)))


def _key(text: str) -> str:
    return orjson.dumps(text).decode()
