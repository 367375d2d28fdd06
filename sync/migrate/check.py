"""The end of a run: every copied item is in CouchDB, and a sample of bodies opens the same.

- **Counts.**  For each kind of item, the embedded count against how many of the
  CouchDB documents it became CouchDB holds (keyed ``_all_docs``: by id, every one).
- **Bodies.**  A random sample of documents' winning revisions is opened on both
  sides: the embedded body with the embedded data keys, the CouchDB body (read by
  the CouchDB document store, as a server would) with the data keys in CouchDB.
  Both must decrypt, and to the same JSON.
"""

from __future__ import annotations

import asyncio
import random
from contextlib import nullcontext
from dataclasses import dataclass

from sync.datakeys.couchdb import DB_NAME as KEYS
from sync.datakeys.couchdb import CouchDataKeys
from sync.datakeys.embedded import EmbeddedDataKeys
from sync.datakeys.memory import MemoryDataKeys
from sync.errors import FieldsyncError
from sync.keys import KeyRing
from sync.migrate import source
from sync.migrate.couch import present
from sync.migrate.steps import Context, Count, Target
from sync.store.base import StoredRevision
from sync.store.couchdb.store import CouchStore
from sync.vault import Vault


@dataclass(frozen=True)
class Sampled:
    compared: int
    problems: list[str]


async def count(ctx: Context, target: Target) -> Count:
    held = await present(ctx.client, target.couch_db, list(target.ids))
    return Count(target.what, len(set(target.ids)), len(held))


async def sample_bodies(ctx: Context, size: int) -> Sampled:
    """Open ``size`` random documents' winning bodies on both sides and compare them."""
    embedded = Vault(KeyRing(ctx.master, EmbeddedDataKeys(lambda: nullcontext(ctx.conn))))
    couch_keys = MemoryDataKeys()
    stored_keys = CouchDataKeys(ctx.client, ctx.prefix + KEYS, asyncio.get_running_loop())
    for key in await stored_keys.all_async():
        couch_keys.add(key.place, key.version, key.wrapped, key.created)
    couch = Vault(KeyRing(ctx.master, couch_keys))
    store = CouchStore(ctx.client, ctx.prefix)
    problems: list[str] = []
    compared = 0
    for db in source.databases(ctx.conn):
        chosen = _choose(ctx, db.row_id, size)
        mine = {(r.doc_id, r.rev): r for r in _bodies(ctx, db.row_id, chosen)}
        theirs = await store.get_revisions(db.name, list(mine))
        for wanted, revision in mine.items():
            compared += 1
            problem = _compare(db.name, embedded, couch, revision, theirs.get(wanted))
            if problem:
                problems.append(problem)
    return Sampled(compared, problems)


def _choose(ctx: Context, db: int, size: int) -> list[tuple[str, str]]:
    found = source.rows(ctx.conn, "SELECT id, winner FROM docs WHERE db=?", db)
    picked = random.sample(found, min(size, len(found)))
    return [(str(r[0]), str(r[1])) for r in picked]


def _bodies(ctx: Context, db: int, wanted: list[tuple[str, str]]) -> list[StoredRevision]:
    found = []
    for doc_id, rev in wanted:
        row = ctx.conn.execute(
            "SELECT doc_id, rev, place, deleted, key_ref, body FROM revs "
            "WHERE db=? AND doc_id=? AND rev=?",
            (db, doc_id, rev),
        ).fetchone()
        if row is not None:
            doc_id, rev, place, deleted, key_ref, body = row
            found.append(StoredRevision(doc_id, rev, place, bool(deleted), key_ref, bytes(body)))
    return found


def _compare(
    db: str, embedded: Vault, couch: Vault, mine: StoredRevision, theirs: StoredRevision | None
) -> str | None:
    where = f"{db}/{mine.doc_id} rev {mine.rev}"
    if theirs is None:
        return f"{where}: missing in CouchDB"
    try:
        expected = embedded.open_body(db, mine)
    except FieldsyncError as exc:
        return f"{where}: the embedded body does not open ({exc.reason})"
    try:
        got = couch.open_body(db, theirs)
    except FieldsyncError as exc:
        return f"{where}: the CouchDB body does not open ({exc.reason})"
    return None if got == expected else f"{where}: the bodies differ once opened"
