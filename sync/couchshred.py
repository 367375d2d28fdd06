"""Crypto-shredding a place whose documents live in CouchDB.

``fieldsync keys shred PLACE --confirm PLACE`` with ``FIELDSYNC_COUCHDB_URL`` set
runs this instead of :func:`sync.datakeys.embedded_shred.shred`.  Under the rotation lease
(:mod:`sync.couchrotation`: a rotation re-sealing the place's blobs meanwhile
would race with it), for every fieldsync database ``D``:

1. the place gets a fresh data-key version, and after three times
   ``FIELDSYNC_KEY_REFRESH_SECONDS`` (every instance seals the place's new data
   with it by then) its older versions are deleted from ``<prefix>keys`` (and
   purged, and the database compacted, where CouchDB allows): from then on
   nothing sealed under them opens, whatever copy survives (CouchDB's old
   document revisions until compaction, its backups, replicas);
2. every document whose place it is: its meta, all its sealed bodies;
3. bodies written in the place of documents that moved away (``rp``), and a
   body a meta holds inline (``wb``) of such a revision;
4. its attachments (``a:DIGEST:PLACE``);
5. its change-log entries: each is emptied (``{"ids": []}``) rather than deleted,
   because a deleted id can be created again, and a later write in the place
   must never reuse a position a device's cursor has passed;
6. the entries of other places that name a document deleted in step 2 (written
   there before it moved into the place): its id is replaced by ``""`` (version
   0), which readers pass over, so that entries keep their length and a
   cursor's offset inside one still points at the same id;
7. every base (:mod:`sync.store.couchdb.bases`: places' walks, kept for first
   pulls, which hold metas and inline bodies), before step 1 and again at the end:
   the next first pulls make them again.

Steps 2, 5 and 6 take every leaf of a document that forked in a cluster (a meta two
instances wrote at once, before the settler merged it; a log position two
instances took, whose branches readers unite): CouchDB's listing shows only the
winner, and a losing branch would keep the place's ids and bodies.  A document
is shredded (step 6) when no leaf of its meta is left.

A write into the place while this runs may be shredded with the rest or kept
(under the fresh key); run the command again to shred what was kept.  Instances
that opened the old keys hold them in memory until they restart.  Old document revisions stay in
CouchDB until it compacts the databases (``POST /{db}/_compact``); they are
unreadable without the deleted keys.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sync.audit import Entry, cli_actor
from sync.audit import now as audit_now
from sync.couchaudit import CouchChain
from sync.couchrotation import (
    LEASE_NAME,
    LEASE_SECONDS,
    compact,
    fieldsync_dbs,
    settling_seconds,
)
from sync.datakeys.couchdb import CouchDataKeys
from sync.errors import NotFound
from sync.keyadmin import Shredded
from sync.keys import KeyError_, MasterKey, label
from sync.store.base import SHARED
from sync.store.couchdb import layout
from sync.store.couchdb.bases import drop_all
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.lease import Lease, holding, new_owner
from sync.store.couchdb.log import BLANK

Doc = dict[str, Any]
PAGE = 500


@dataclass
class _Count:
    documents: int = 0
    revisions: int = 0
    attachments: int = 0
    entries: int = 0


async def shred(
    client: CouchClient,
    prefix: str,
    master: MasterKey,
    place: str,
    refresh_seconds: float,
    report: Callable[[str], None],
) -> Shredded:
    """Shred ``place`` in CouchDB (steps above), audited in the CLI's chain in ``<prefix>audit``."""
    if place == SHARED:
        raise KeyError_("the shared key seals forms, settings, checkpoints and SMS: not shredded")
    owner = new_owner()
    lease = Lease(client, prefix, LEASE_NAME, owner, LEASE_SECONDS, "fieldsync keys shred")
    async with holding(lease, "cannot shred a place now"):
        keys = CouchDataKeys.for_prefix(client, prefix)
        versions = [k.version for k in await keys.all_async() if k.place == place]
        if not versions:
            raise KeyError_(f"place {place} has no data key: nothing to shred")
        await _drop_bases(client, prefix)  # no base holds the place's documents from now on
        await _fresh_key(keys, master, place, max(versions) + 1)
        seconds = settling_seconds(refresh_seconds)
        report(f"waiting {seconds:g} s for every instance to seal {place}'s data with a fresh key")
        await asyncio.sleep(seconds)
        for version in versions:
            await keys.remove_async(place, version)
        await compact(client, keys.db)
        count = _Count()
        for db in await fieldsync_dbs(client, prefix):
            await _shred_in(client, prefix, db, place, count)
        await _drop_bases(client, prefix)  # nor one made while this ran
    done = Shredded(place, len(versions), count.documents, count.revisions, count.attachments)
    detail = (
        f"place {place}: {done.keys} data keys, {done.documents} documents, "
        f"{done.revisions} revisions, {done.attachments} attachments, "
        f"{count.entries} change-log entries (CouchDB)"
    )
    chain = CouchChain(client, prefix, master, f"cli-{owner}")
    await chain.append([Entry(audit_now(), cli_actor(), None, "key_shred", None, (), detail)])
    return done


async def _drop_bases(client: CouchClient, prefix: str) -> None:
    """Every database's bases (``bases.py``): they hold metas and inline bodies of the
    place's documents, and are made again by the next first pulls."""
    for db in await fieldsync_dbs(client, prefix):
        await drop_all(client, layout.data_db(prefix, db))


async def _fresh_key(keys: CouchDataKeys, master: MasterKey, place: str, version: int) -> None:
    """A new version nobody held before, for what is written in the place from now on: an
    instance that still has the old key in memory never seals new data with it after its
    next refresh, and no version number is ever used for two keys."""
    wrapped = master.wrap(label(place, version), secrets.token_bytes(32))
    await keys.add_async(place, version, wrapped, dt.datetime.now(dt.UTC).isoformat())


async def _shred_in(client: CouchClient, prefix: str, db: str, place: str, count: _Count) -> None:
    meta_db, data_db = layout.meta_db(prefix, db), layout.data_db(prefix, db)
    shredded: set[str] = set()
    async for page in _pages(client, meta_db, layout.META_PREFIX):
        metas, bodies = [], []
        for leaves in page:
            outcomes = [_without_place(meta, place) for meta in leaves]
            metas += [changed for changed, _ in outcomes if changed is not None]
            if all(changed is not None and changed.get("_deleted") for changed, _ in outcomes):
                shredded.add(_doc_id(leaves[0]))
            gone = sorted({rev for _, revs in outcomes for rev in revs})
            bodies += [layout.body_id(_doc_id(leaves[0]), rev) for rev in gone]
        count.revisions += await _delete_ids(client, data_db, bodies)
        await _bulk(client, meta_db, metas)
    attachments = [
        row["id"]
        async for rows in _listed(client, data_db, "a:", include_docs=False)
        for row in rows
        if str(row["id"]).endswith(f":{place}")
    ]
    count.attachments += await _delete_ids(client, data_db, attachments)
    count.documents += len(shredded)
    log_db = layout.log_db(prefix, db)
    count.entries += await _empty_log(client, log_db, place)
    count.entries += await _unname(client, log_db, shredded)


def _without_place(meta: Doc, place: str) -> tuple[Doc | None, list[str]]:
    """The meta to write (deleted, or without the place's bodies) and the revs whose bodies
    go; ``(None, [])`` when the document has nothing in the place."""
    places: dict[str, str] = dict(meta.get("rp", {}))
    if meta.get("place") == place:
        return {"_id": meta["_id"], "_rev": meta["_rev"], "_deleted": True}, sorted(places)
    gone = sorted(rev for rev, where in places.items() if where == place)
    if not gone:
        return None, []
    kept = {rev: where for rev, where in places.items() if where != place}
    changed = {**meta, "rp": kept}
    held = changed.get("wb")
    if isinstance(held, dict) and held.get("rev") in gone:
        del changed["wb"]
    return changed, gone


def _doc_id(meta: Doc) -> str:
    return str(meta["_id"])[len(layout.META_PREFIX) :]


async def _empty_log(client: CouchClient, log_db: str, place: str) -> int:
    low, high = layout.entry_range(place)
    emptied = 0
    async for page in _pages(client, log_db, low, high):
        full = [leaf for leaves in page for leaf in leaves if leaf.get("ids")]
        emptied += await _bulk(client, log_db, [{**d, "ids": []} for d in full])
    return emptied


async def _unname(client: CouchClient, log_db: str, shredded: set[str]) -> int:
    """Step 6: every entry that still names a shredded document names ``""`` instead.

    The whole log is read: a document's earlier places are not all known (``rp``
    forgets the places of revisions stemmed away), and a shred is rare.
    """
    if not shredded:
        return 0
    changed = 0
    async for page in _pages(client, log_db, ""):
        named = [
            leaf
            for leaves in page
            for leaf in leaves
            if any(i in shredded for i, _ in leaf.get("ids", []))
        ]
        blanked = [
            {**d, "ids": [[BLANK, 0] if i in shredded else [i, v] for i, v in d["ids"]]}
            for d in named
        ]
        changed += await _bulk(client, log_db, blanked)
    return changed


async def _delete_ids(client: CouchClient, couch_db: str, ids: Sequence[str]) -> int:
    """Delete the documents ``ids`` that exist (every leaf); how many were deleted."""
    if not ids:
        return 0
    found = await client.leaves_by_id(couch_db, ids)
    docs = [
        {"_id": doc_id, "_rev": leaf["_rev"], "_deleted": True}
        for doc_id, leaves in found.items()
        for leaf in leaves
    ]
    await _bulk(client, couch_db, docs)
    return len(found)


async def _bulk(client: CouchClient, couch_db: str, docs: Sequence[Doc]) -> int:
    """Write ``docs``; a 409 (changed meanwhile) is refused loudly: run the command again."""
    if not docs:
        return 0
    answer = await client.json("POST", path(couch_db, "_bulk_docs"), body={"docs": list(docs)})
    failed = [row for row in answer if row.get("error")]
    if failed:
        raise KeyError_(
            f"{len(failed)} documents in {couch_db} changed while the place was shredded "
            f"(first: {failed[0].get('id')}); its keys are deleted already: run the same "
            "`fieldsync keys shred` command again to finish"
        )
    return len(docs)


async def _pages(
    client: CouchClient, couch_db: str, low: str, high: str | None = None
) -> AsyncIterator[list[list[Doc]]]:
    """Documents with ids from ``low`` (to ``high``, else ``low`` + anything), a page at a
    time, each as its live leaves, CouchDB's winner first."""
    async for rows in _listed(client, couch_db, low, include_docs=True, high=high):
        docs = [row["doc"] for row in rows if row.get("doc")]
        yield await client.with_losers(couch_db, docs)


async def _listed(
    client: CouchClient, couch_db: str, low: str, *, include_docs: bool, high: str | None = None
) -> AsyncIterator[list[Doc]]:
    """The ``_all_docs`` rows from ``low`` (to ``high``, else ``low`` + anything), a page
    at a time (a winner's ``_conflicts`` with its document)."""
    end = high if high is not None else low + "\ufff0"
    after: str | None = None
    while True:
        params = {
            "startkey": _key(low if after is None else after),
            "endkey": _key(end),
            "limit": str(PAGE + (after is not None)),
            "include_docs": "true" if include_docs else "false",
            "conflicts": "true" if include_docs else "false",
        }
        try:
            answer = await client.json("GET", path(couch_db, "_all_docs"), params=params)
        except NotFound:  # a database not made yet: nothing in it
            return
        rows = [r for r in (answer or {}).get("rows", []) if r["id"] != after]
        if not rows:
            return
        after = str(rows[-1]["id"])
        yield rows


def _key(text: str) -> str:
    return orjson.dumps(text).decode()
