"""What the meta database's views answer: document counts and ``_all_docs`` pages.

Views (``layout.DESIGN_DOC``) are read from one copy of each shard, so in a cluster
they may lag a little behind the latest writes: good enough for counts and id
listings, never used for the changes a reader must not miss (:mod:`feed`).  The id
listings collate raw, so their order is ``_all_docs``' (and Python's ``str``'s).
https://docs.couchdb.org/en/stable/api/ddoc/views.html
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import orjson

from sync.store.base import AllDocsQuery, Change
from sync.store.couchdb import layout, metas
from sync.store.couchdb.client import CouchClient, path


def view(meta_db: str, name: str) -> str:
    return path(meta_db) + f"/{layout.DESIGN}/_view/{name}"


async def counts(
    client: CouchClient, meta_db: str, places: frozenset[str] | None
) -> tuple[int, int]:
    """(live, deleted) documents of ``places`` (None: all), from the ``counts`` view;
    an existence check (every write asks one, with no places) queries no view."""
    where = view(meta_db, "counts")
    if places is None:
        answer = await client.json("GET", where, params={"group_level": "1"})
    elif places:
        keys = [[flag, p] for flag in (0, 1) for p in sorted(places)]
        answer = await client.json("POST", where, params={"group": "true"}, body={"keys": keys})
    else:
        return 0, 0
    found = [0, 0]
    for row in answer.get("rows", []):
        key, value = row.get("key"), row.get("value")
        if isinstance(key, list) and key and value is not None:
            found[int(key[0])] += int(value)
    return found[0], found[1]


async def live_counts(client: CouchClient, meta_db: str, places: Collection[str]) -> dict[str, int]:
    """Live documents per place of ``places``, in one grouped query of the ``counts`` view."""
    params = {"group_level": "2", "startkey": "[0]", "endkey": "[0,{}]"}
    answer = await client.json("GET", view(meta_db, "counts"), params=params)
    wanted = frozenset(places)
    found: dict[str, int] = {}
    for row in answer.get("rows", []):
        key, value = row.get("key"), row.get("value")
        if isinstance(key, list) and len(key) == 2 and key[1] in wanted and value is not None:
            found[str(key[1])] = int(value)
    return found


async def live_page(
    client: CouchClient, meta_db: str, places: frozenset[str] | None, query: AllDocsQuery
) -> list[Change]:
    """The page ``query`` of the live documents of ``places`` (None: all), in id order."""
    if _empty_range(query) or query.limit == 0:
        return []
    if places is None:
        return await _live(client, meta_db, None, query, query.skip, query.limit)
    stop = None if query.limit is None else query.skip + query.limit
    runs = await asyncio.gather(
        *(_live(client, meta_db, p, query, 0, stop) for p in sorted(places))
    )
    merged = sorted((c for run in runs for c in run), key=lambda c: c.id, reverse=query.descending)
    return merged[query.skip : stop]


async def _live(
    client: CouchClient,
    meta_db: str,
    place: str | None,
    query: AllDocsQuery,
    skip: int,
    limit: int | None,
) -> list[Change]:
    """Live documents of one place (view ``live_by_place``) or of all (view ``live``)."""
    params = _range_params(place, query)
    params["include_docs"] = "true"
    if skip:
        params["skip"] = str(skip)
    if limit is not None:
        params["limit"] = str(limit)
    name = "live" if place is None else "live_by_place"
    answer = await client.json("GET", view(meta_db, name), params=params)
    return [metas.parse(row["doc"]).as_change() for row in answer.get("rows", []) if row.get("doc")]


def _empty_range(query: AllDocsQuery) -> bool:
    """A range no id can fall in (CouchDB refuses to query such a range of a view)."""
    if query.start is None or query.end is None:
        return False
    return query.start < query.end if query.descending else query.start > query.end


def _range_params(place: str | None, query: AllDocsQuery) -> dict[str, str]:
    """Key range of ``query`` in the ``live`` view (``place`` None) or in one place's part
    of ``live_by_place`` (keys ``place!id``, bounds :func:`layout.live_range`)."""
    low, high = (None, None) if place is None else layout.live_range(place)
    if query.descending:
        low, high = high, low

    def key(doc_id: str | None, bound: str | None) -> str | None:
        if doc_id is None:
            return bound
        return doc_id if place is None else layout.live_key(place, doc_id)

    params: dict[str, str] = {"inclusive_end": "true" if query.inclusive_end else "false"}
    for name, value in (("startkey", key(query.start, low)), ("endkey", key(query.end, high))):
        if value is not None:
            params[name] = orjson.dumps(value).decode()
    if query.descending:
        params["descending"] = "true"
    return params
