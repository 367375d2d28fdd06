"""Reading changes from CouchDB: the per-place logs (workers) and the meta database's feed (admins).

A walk through place logs sends a document for the entry ``(doc id, v)`` that
wrote its current version ``v`` in its current place; any other entry naming it
is a row without a change (the document moved away, or a later entry names it):

- ``meta.version <  v``  the meta is not visible yet: stop the place here, retry later;
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

from sync.store.base import Change, GlobalPage, LogPage, LogRow, Position
from sync.store.couchdb import metas
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.log import Entry, PlaceLog


async def place_changes(
    client: CouchClient,
    log: PlaceLog,
    meta_db: str,
    log_db: str,
    places: frozenset[str],
    cursor: Mapping[str, Position],
    limit: int,
) -> LogPage:
    """Rows of ``places`` after ``cursor``, place after place, up to ``limit`` changes."""
    order = sorted(places)
    done = {p: cursor.get(p, (0, 0))[0] for p in order}
    runs: dict[str, list[Entry]] = {p: [] for p in order}
    window, open_places = 2, order
    while open_places:  # one key per place first: a no-op sync costs one request
        got = await log.read(log_db, done, open_places, window)
        full = []
        for p in open_places:
            runs[p] += got[p]
            if got[p]:
                done[p] = got[p][-1].position
            if len(got[p]) == window - 1:
                full.append(p)
        # A few busy places (a worker's own): read the rest of the page at once; many
        # (a supervisor's): grow the window in steps, not to waste keys on quiet places.
        grown = limit + 1 if len(full) <= 8 else window * 4
        open_places, window = full, min(grown, limit + 1, 1001)
        if _unread(runs, cursor) >= limit:
            break
    ids = [i for run in runs.values() for e in run for i, _ in e.ids]
    found = await metas.load(client, meta_db, ids)
    rows, walked_all = _walk(order, runs, cursor, found, limit)
    return LogPage(rows, walked_all and not open_places)


def _unread(runs: Mapping[str, Sequence[Entry]], cursor: Mapping[str, Position]) -> int:
    """How many ids the entries read hold after the cursor (part of the first may be sent)."""
    count = 0
    for place, run in runs.items():
        count += sum(len(e.ids) for e in run)
        position, offset = cursor.get(place, (0, 0))
        if run and run[0].position == position + 1:
            count -= min(offset, len(run[0].ids))
    return count


def _walk(
    order: Sequence[str],
    runs: Mapping[str, Sequence[Entry]],
    cursor: Mapping[str, Position],
    found: Mapping[str, metas.Meta],
    limit: int,
) -> tuple[list[LogRow], bool]:
    """The rows of the entries read (module docstring); False if ``limit`` cut it short."""
    rows: list[LogRow] = []
    sent = 0
    seen: set[str] = set()  # an entry appended twice (by a writer and a settler) sends once
    for place in order:
        position, offset = cursor.get(place, (0, 0))
        for entry in runs[place]:
            if any(i not in found or found[i].version < v for i, v in entry.ids):
                break  # the entry is ahead of the metas we can see: stop here, retry later
            skipped = offset if entry.position == position + 1 else 0
            for n, (doc_id, version) in enumerate(entry.ids[skipped:], start=skipped + 1):
                meta = found[doc_id]
                last = n == len(entry.ids)
                after = (entry.position, 0) if last else (entry.position - 1, n)
                current = meta.place == place and meta.version == version
                change = meta.as_change() if current and doc_id not in seen else None
                if change is not None:
                    seen.add(doc_id)
                    sent += 1
                rows.append(LogRow(change, place, after))
                if sent >= limit:
                    return rows, False
            offset = 0
            position = entry.position
    return rows, True


async def global_changes(
    client: CouchClient, meta_db: str, since: str | None, limit: int, descending: bool
) -> GlobalPage:
    """Every document's latest change after CouchDB's own token ``since`` (at least once).

    Fewer than ``limit`` rows means the feed ran out: rows that are not metas (the
    design document) are read past, not counted.
    """
    rows: list[tuple[Change, str]] = []
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
                rows.append((metas.parse(doc).as_change(), seq_text(row.get("seq"))))
        last = seq_text(answer.get("last_seq", last))
        if len(results) < asked or descending:
            break
    return GlobalPage(rows, last if last is not None else "0")


def seq_text(seq: object) -> str:
    """CouchDB's opaque sequence as text (pouchdb-server's are integers)."""
    return seq if isinstance(seq, str) else orjson.dumps(seq).decode()
