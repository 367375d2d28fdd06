"""Reading changes from CouchDB: the per-place logs (workers) and the meta database's feed (admins).

A walk through place logs sends a document for the entry ``(doc id, v)`` that
wrote its current version ``v`` in its current place; any other entry naming it
is a row without a change (the document moved away, or a later entry names it):

- ``meta.version <  v``  the meta is not visible yet: stop the place here, retry later
                         (unless the entry is older than ``PlaceLog.lost_before``: then
                         that version was lost with a cluster copy, or shredded; a row
                         with no change);
- ``meta.version == v``  and the document is in this place: send its latest change;
- otherwise              a row with no change: the entry of the document's current
                         version (appended at the end of its place's log, now or by
                         the writer's settler) sends it.

So each written document comes once per walk of its place, with its latest winner
and leaves, and a reader never steps over an entry it cannot see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import structlog

from sync.store.base import Change, GlobalPage, LogPage, LogRow, Position
from sync.store.couchdb import metas
from sync.store.couchdb.ahead import after
from sync.store.couchdb.client import KEYS_PER_REQUEST, CouchClient, path
from sync.store.couchdb.log import BLANK, Entry, PlaceLog

logger = structlog.get_logger()


async def place_changes(
    client: CouchClient,
    log: PlaceLog,
    meta_db: str,
    log_db: str,
    places: frozenset[str],
    cursor: Mapping[str, Position],
    limit: int,
    pages: int = 1,
) -> tuple[list[LogPage], Mapping[str, metas.Meta]]:
    """Rows of ``places`` after ``cursor``, place after place, up to ``limit`` changes a
    page; and the metas read for them.

    ``pages`` > 1 reads what that many pages take at once (one log read, the metas in as
    few requests as ``_METAS_PER_REQUEST`` allows) and walks them one after the other; a
    page follows only a full one, so each is the page a request starting at the one
    before's end would get.
    """
    order = sorted(places)
    done = {p: cursor.get(p, (0, 0))[0] for p in order}
    runs: dict[str, list[Entry]] = {p: [] for p in order}
    span = limit * pages
    window, open_places = log.first_window(log_db, done, span), order
    while open_places:  # one key per place first: a no-op sync costs one request
        got = await log.read(log_db, done, open_places, window)
        full = []
        for p in open_places:
            runs[p] += got[p]
            if got[p]:
                done[p] = got[p][-1].position
            if len(got[p]) == window - 1:
                full.append(p)
        unread = _unread(runs, cursor)
        if unread >= span:
            open_places = full
            break
        # A few busy places (a worker's own): read about the rest of the page at once,
        # as many entries as the ones read suggest; many (a supervisor's): grow the
        # window in steps, not to waste keys on quiet places.
        per_entry = max(1.0, unread / max(1, sum(len(r) for r in runs.values())))
        enough = int((span - unread) / per_entry * 1.25) + 2
        grown = enough if len(full) <= 8 else window * 4
        open_places, window = full, max(2, min(grown, span + 1, 1001))
    loader = _MetaLoader(client, meta_db, _ids_in_order(order, runs, cursor))
    if pages > 1:
        await loader.load(_batch(span))
    walked: list[LogPage] = []
    at = dict(cursor)
    while len(walked) < pages:
        rest = {p: [e for e in runs[p] if e.position > at.get(p, (0, 0))[0]] for p in order}
        rows, walked_all = await _walk(order, rest, at, loader, limit, log)
        walked.append(LogPage(rows, walked_all and not open_places))
        if walked_all:
            break
        at = after(at, walked[-1])
    return walked, loader.found


def _unread(runs: Mapping[str, Sequence[Entry]], cursor: Mapping[str, Position]) -> int:
    """How many ids the entries read hold after the cursor (part of the first may be sent)."""
    count = 0
    for place, run in runs.items():
        count += sum(len(e.ids) for e in run)
        position, offset = cursor.get(place, (0, 0))
        if run and run[0].position == position + 1:
            count -= min(offset, len(run[0].ids))
    return count


def _skipped(entry: Entry, cursor: Mapping[str, Position]) -> int:
    """How many ids of ``entry`` were sent before ``cursor`` (it may stop inside an entry)."""
    position, offset = cursor.get(entry.place, (0, 0))
    return offset if entry.position == position + 1 else 0


def _ids_in_order(
    order: Sequence[str], runs: Mapping[str, Sequence[Entry]], cursor: Mapping[str, Position]
) -> list[str]:
    """The ids the walk will look at, in the order it looks at them (first time each)."""
    seen: dict[str, None] = {}
    for place in order:
        for entry in runs[place]:
            for doc_id, _ in entry.ids[_skipped(entry, cursor) :]:
                if doc_id != BLANK:
                    seen.setdefault(doc_id)
    return list(seen)


class _MetaLoader:
    """The metas a walk needs, read as it goes: a page of ``limit`` changes reads about
    ``limit`` metas, not those of every id in the entries read ahead."""

    def __init__(self, client: CouchClient, meta_db: str, ordered: list[str]) -> None:
        self.client, self.meta_db, self.ordered = client, meta_db, ordered
        self.index = {doc_id: n for n, doc_id in enumerate(ordered)}
        self.loaded = 0  # ordered[:loaded] have been read
        self.found: dict[str, metas.Meta] = {}

    async def get(self, doc_id: str, wanted: int) -> metas.Meta | None:
        """``doc_id``'s meta, reading it with the ``wanted`` next ones if not read yet."""
        at = self.index[doc_id]
        if at >= self.loaded:
            await self.load(max(at + 1 - self.loaded, wanted))
        return self.found.get(doc_id)

    async def load(self, more: int) -> None:
        """Read the metas of the ``more`` next ids (``_METAS_PER_REQUEST`` a request, the
        requests sent together)."""
        end = min(len(self.ordered), self.loaded + more)
        batch = self.ordered[self.loaded : end]
        if batch:
            self.found.update(
                await metas.load(self.client, self.meta_db, batch, _METAS_PER_REQUEST)
            )
        self.loaded = end


async def _walk(
    order: Sequence[str],
    runs: Mapping[str, Sequence[Entry]],
    cursor: Mapping[str, Position],
    loader: _MetaLoader,
    limit: int,
    log: PlaceLog,
) -> tuple[list[LogRow], bool]:
    """The rows of the entries read (module docstring); False if ``limit`` cut it short."""
    lost_before = log.lost_before()
    rows: list[LogRow] = []
    sent = 0
    seen: set[str] = set()  # an entry appended twice (by a writer and a settler) sends once
    for place in order:
        for entry in runs[place]:
            skipped = _skipped(entry, cursor)
            ahead = False
            for n, (doc_id, version) in enumerate(entry.ids[skipped:], start=skipped + 1):
                last = n == len(entry.ids)
                after = (entry.position, 0) if last else (entry.position - 1, n)
                if doc_id == BLANK:  # a shredded document's
                    rows.append(LogRow(None, place, after))
                    continue
                meta = await loader.get(doc_id, _batch(limit - sent))
                if meta is None or meta.version < version:
                    if entry.at > lost_before:
                        ahead = True  # ahead of the metas we can see: stop here, retry later
                        break
                    # Written long ago, and quorum reads still miss that version: it was
                    # lost with the one copy that took it, or shredded. Pass over it.
                    logger.warning("couchdb_log_version_lost", place=place, doc_id=doc_id)
                    log.passed["version"] += 1
                    rows.append(LogRow(None, place, after))
                    continue
                current = meta.place == place and meta.version == version
                change = meta.as_change() if current and doc_id not in seen else None
                if change is not None:
                    seen.add(doc_id)
                    sent += 1
                rows.append(LogRow(change, place, after))
                if sent >= limit:
                    return rows, False
            if ahead:
                break
    return rows, True


# The metas of a read ahead (three of PouchDB's pages) go in one request, not three sent
# together: each request costs CouchDB and fieldsync's process CPU of its own. CouchDB 3.5.0
# spent 1.5-1.7 CPU s reading 10,000 metas 100 a request, 1.1-1.3 s at 500 or 1,000.
_METAS_PER_REQUEST = 500

# Metas read beyond what the page still needs: rows that send nothing (a document
# that moved away, or named again further on) would otherwise cost a read each.
_SLACK = 8


def _batch(needed: int) -> int:
    """How many metas to read for ``needed`` more changes: a few more, within the requests
    that ``needed`` takes anyway (100 needed: one request of 100, not 100 and 8)."""
    whole = -(-needed // KEYS_PER_REQUEST) * KEYS_PER_REQUEST
    return max(1, min(needed + _SLACK, whole))


async def global_changes(
    client: CouchClient, meta_db: str, since: str | None, limit: int, descending: bool
) -> tuple[GlobalPage, list[metas.Meta]]:
    """Every document's latest change after CouchDB's own token ``since`` (at least once),
    and the metas read for them.

    Fewer than ``limit`` rows means the feed ran out: rows that are not metas (the
    design document) are read past, not counted.
    """
    rows: list[tuple[Change, str]] = []
    read: list[metas.Meta] = []
    last = since
    while len(rows) < limit:
        asked = limit - len(rows)
        params = {"include_docs": "true", "limit": str(asked), "style": "all_docs"}
        if descending:
            params["descending"] = "true"
        if last is not None:
            params["since"] = last
        answer = await client.json("GET", path(meta_db, "_changes"), params=params)
        results: list[dict[str, Any]] = answer.get("results", [])
        for row in results:
            doc = row.get("doc")
            if doc and "tree" in doc and not doc.get("_deleted"):
                read.append(metas.parse(doc))
                rows.append((read[-1].as_change(), seq_text(row.get("seq"))))
        last = seq_text(answer.get("last_seq", last))
        if len(results) < asked or descending:
            break
    return GlobalPage(rows, last if last is not None else "0"), read


def seq_text(seq: object) -> str:
    """CouchDB's opaque sequence as text (pouchdb-server's are integers)."""
    return seq if isinstance(seq, str) else orjson.dumps(seq).decode()
