"""Writing into CouchDB so that a second run finishes the first: create what is missing,
compare what is there.

Every document migrate writes has a known id.  One that CouchDB already holds
(an earlier run, stopped half-way) is read and compared: equal (by the step's
own rule) is skipped; different means the CouchDB database holds something
else under that id, and the run stops, naming it, rather than overwrite it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sync.errors import FieldsyncError, PreconditionFailed, StoreError
from sync.store.couchdb.client import KEYS_PER_REQUEST, CouchClient, path

Doc = dict[str, Any]
# Whether the document CouchDB holds (first) is the one migrate would write (second).
Same = Callable[[Mapping[str, Any], Mapping[str, Any]], bool]


class Mismatch(FieldsyncError):
    """CouchDB holds another document under an id that migrate writes."""

    status = 409
    error = "migrate_mismatch"
    default_reason = "The CouchDB database holds other data than the embedded store."


def always(held: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whatever CouchDB holds is kept (it may be newer: written since, through a server)."""
    return True


def fields(*names: str) -> Same:
    """Equal when these fields are."""
    return lambda held, new: all(held.get(n) == new.get(n) for n in names)


async def ensure_db(client: CouchClient, couch_db: str) -> None:
    with contextlib.suppress(PreconditionFailed):  # there already (an earlier run, a server)
        await client.json("PUT", path(couch_db))


async def present(client: CouchClient, couch_db: str, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` CouchDB holds (live): keyed ``_all_docs``, no bodies read."""
    found: set[str] = set()
    for start in range(0, len(ids), KEYS_PER_REQUEST * 5):
        keys = list(ids[start : start + KEYS_PER_REQUEST * 5])
        answer = await client.json("POST", path(couch_db, "_all_docs"), body={"keys": keys})
        for row in answer.get("rows", []):
            value = row.get("value") or {}
            if "error" not in row and not value.get("deleted"):
                found.add(str(row["id"]))
    return found


async def put_missing(client: CouchClient, couch_db: str, docs: Sequence[Doc], same: Same) -> int:
    """Create the ``docs`` CouchDB lacks, compare the others with ``same``; how many were
    created.  :class:`Mismatch` names the first that differs."""
    if not docs:
        return 0
    held = await present(client, couch_db, [d["_id"] for d in docs])
    new = [d for d in docs if d["_id"] not in held]
    created, raced = 0, set()
    if new:
        answer = await client.json("POST", path(couch_db, "_bulk_docs"), body={"docs": new})
        for result in answer:
            if "error" not in result:
                created += 1
            elif result["error"] == "conflict":  # made meanwhile: compared below
                raced.add(str(result["id"]))
            else:
                raise StoreError(
                    f"CouchDB refused {result.get('id')} in {couch_db}: "
                    f"{result['error']}: {result.get('reason', '')}"
                )
    await _compare(client, couch_db, [d for d in docs if d["_id"] in held | raced], same)
    return created


async def _compare(client: CouchClient, couch_db: str, docs: Sequence[Doc], same: Same) -> None:
    if not docs or same is always:
        return
    found = await client.leaves_by_id(couch_db, [d["_id"] for d in docs])
    for doc in docs:
        leaves = found.get(doc["_id"], [])
        if not leaves or not same(leaves[0], doc):
            raise Mismatch(
                f"CouchDB database {couch_db} already holds {doc['_id']!r} with other "
                "contents than the embedded store's: it holds another deployment's data, "
                "or the embedded store changed since the first run. Migrate into an empty "
                "CouchDB (another FIELDSYNC_COUCHDB_PREFIX, or delete the half-migrated "
                "databases), then run again."
            )
