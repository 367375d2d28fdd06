"""The documents step: each fieldsync database into the CouchDB layout of ADR 0001.

For every document (the embedded store's order, by its latest sequence):

- each stored revision's sealed body as ``r:REV:ID`` in ``$data`` (still sealed:
  nothing is opened or sealed again, the associated data binds id and revision);
- its meta ``d:ID`` at version 1: the whole revision tree (so PouchDB's
  ``_revs_diff`` and ``new_edits=false`` writes see every branch), the places of
  the bodies, the winner's body inline;
- one log entry in its place, ``PLACE!N``, N counting that place's documents in
  the embedded order, holding ``embedded_seq``: the document's embedded sequence.
  That is what lets a phone's old since-token resume (ADR 0001, *Moving from
  the embedded store*).

Then the attachments (``a:DIGEST:PLACE``, sealed as they were), the ``_local``
checkpoints (``l:...``, kept if CouchDB already has a newer one), and the
database's settings with the embedded database's ``uuid`` and ``revs_limit``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sync.migrate import source
from sync.migrate.couch import Doc, Mismatch, always, ensure_db, fields, put_missing
from sync.migrate.progress import Progress
from sync.migrate.source import Database, DocRow
from sync.migrate.steps import Context, Target
from sync.replication import revtree
from sync.store.base import AttachmentBlob, StoredRevision
from sync.store.couchdb import layout, metas
from sync.store.couchdb.client import path
from sync.store.couchdb.store import attachment_doc

BATCH = 100  # documents a round (their bodies go in one request)
_ATTACHMENT_BYTES = 8 * 1024 * 1024  # sealed attachment bytes a request
MARKER = "migrated"  # in $data: which embedded database this one was copied from


async def copy(ctx: Context) -> None:
    if not source.databases(ctx.conn):
        ctx.out.write("documents: none (the server has not made its database yet)\n")
    for db in source.databases(ctx.conn):
        await _prepare(ctx, db)
        await _copy_docs(ctx, db)
        await _copy_attachments(ctx, db)
        await _copy_locals(ctx, db)


async def targets(ctx: Context) -> list[Target]:
    found: list[Target] = []
    for db in source.databases(ctx.conn):
        meta, data, log = _names(ctx, db)
        docs = [d for batch in source.docs_by_seq(ctx.conn, db.row_id, 1000) for d in batch]
        revs = source.rows(ctx.conn, "SELECT doc_id, rev FROM revs WHERE db=?", db.row_id)
        atts = source.rows(ctx.conn, "SELECT digest, place FROM attachments WHERE db=?", db.row_id)
        locals_ = source.rows(ctx.conn, "SELECT owner, id FROM local_docs WHERE db=?", db.row_id)
        found += [
            Target(f"{db.name}: documents", meta, [layout.meta_id(d.id) for d in docs]),
            Target(f"{db.name}: revision bodies", data, [layout.body_id(r[0], r[1]) for r in revs]),
            Target(f"{db.name}: log entries", log, [e["_id"] for e in _entries(docs, {})]),
            Target(
                f"{db.name}: attachments", data, [layout.attachment_id(a[0], a[1]) for a in atts]
            ),
            Target(
                f"{db.name}: _local checkpoints",
                data,
                [layout.local_id(o, i) for o, i in locals_],
            ),
        ]
    return found


def _names(ctx: Context, db: Database) -> tuple[str, str, str]:
    return (
        layout.meta_db(ctx.prefix, db.name),
        layout.data_db(ctx.prefix, db.name),
        layout.log_db(ctx.prefix, db.name),
    )


async def _prepare(ctx: Context, db: Database) -> None:
    """The three databases, the design document, the marker and the settings.

    A database that a CouchDB-backed server already filled is refused: its logs
    would not start with the migrated entries that old since-tokens are read against.
    """
    meta, data, log = _names(ctx, db)
    for name in (meta, data, log):
        await ensure_db(ctx.client, name)
    marker = {"_id": MARKER, "embedded_uuid": db.uuid}
    if await _has_entries(ctx, log) and not await _marked(ctx, data):
        raise Mismatch(
            f"CouchDB database {log} already holds changes written through a fieldsync "
            "server, not by migrate: migrate into an empty CouchDB (another "
            "FIELDSYNC_COUCHDB_PREFIX, or delete those databases), then run again"
        )
    await put_missing(ctx.client, data, [marker], fields("embedded_uuid"))
    design = dict(layout.DESIGN_DOC)
    await put_missing(ctx.client, meta, [design], always)
    settings = {
        "_id": layout.SETTINGS,
        "revs_limit": db.revs_limit,
        "uuid": db.uuid,
        "created": time.time(),
    }
    await put_missing(ctx.client, data, [settings], always)


async def _has_entries(ctx: Context, log: str) -> bool:
    answer = await ctx.client.json("GET", path(log, "_all_docs"), params={"limit": "1"})
    return bool(answer.get("rows"))


async def _marked(ctx: Context, data: str) -> bool:
    return bool(await ctx.client.leaves_by_id(data, [MARKER]))


async def _copy_docs(ctx: Context, db: Database) -> None:
    meta, data, log = _names(ctx, db)
    total = source.count(ctx.conn, "SELECT count(*) FROM docs WHERE db=?", db.row_id)
    progress = Progress(f"documents ({db.name})", total, ctx.out)
    tails: dict[str, int] = {}
    for batch in source.docs_by_seq(ctx.conn, db.row_id, BATCH):
        stored = _stored(source.revisions(ctx.conn, db.row_id, [d.id for d in batch]))
        bodies = [_body_doc(s) for d in batch for s in stored.get(d.id, {}).values()]
        await put_missing(ctx.client, data, bodies, fields("place", "deleted", "key_ref", "body"))
        await put_missing(
            ctx.client, meta, [_meta_doc(d, stored.get(d.id, {})) for d in batch], _tree_held
        )
        await put_missing(ctx.client, log, _entries(batch, tails), fields("ids", "embedded_seq"))
        progress.advance(len(batch))
    progress.finish()


def _stored(found: Sequence[Any]) -> dict[str, dict[str, StoredRevision]]:
    by_doc: dict[str, dict[str, StoredRevision]] = {}
    for doc_id, rev, place, deleted, key_ref, body in found:
        revision = StoredRevision(doc_id, rev, place, bool(deleted), key_ref, bytes(body))
        by_doc.setdefault(doc_id, {})[rev] = revision
    return by_doc


def _body_doc(s: StoredRevision) -> Doc:
    return {
        "_id": layout.body_id(s.doc_id, s.rev),
        "place": s.place,
        "deleted": s.deleted,
        "key_ref": s.key_ref,
        "body": layout.b64(s.body),
    }


def _meta_doc(doc: DocRow, stored: Mapping[str, StoredRevision]) -> Doc:
    tree = revtree.from_json(json.loads(doc.tree))
    places = {rev: s.place for rev, s in stored.items()}
    return metas.body(doc.id, doc.place, 1, tree, places, stored.get(revtree.winner(tree)))


def _tree_held(held: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """CouchDB's meta holds every revision of ours (it may have grown since, not shrunk)."""
    return set(new["tree"]) <= set(held.get("tree", {}))


def _entries(docs: Sequence[DocRow], tails: dict[str, int]) -> list[Doc]:
    """One log entry per document at the end of its place (``tails``: entries so far)."""
    entries = []
    for d in docs:
        tails[d.place] = tails.get(d.place, 0) + 1
        entries.append(
            {
                "_id": layout.entry_id(d.place, tails[d.place]),
                "ids": [[d.id, 1]],
                "at": time.time(),
                "embedded_seq": d.seq,
            }
        )
    return entries


async def _copy_attachments(ctx: Context, db: Database) -> None:
    _, data, _ = _names(ctx, db)
    sql = "SELECT count(*) FROM attachments WHERE db=?"
    progress = Progress(f"attachments ({db.name})", source.count(ctx.conn, sql, db.row_id), ctx.out)
    batch: list[Doc] = []
    size = 0
    query = "SELECT digest, place, key_ref, length, data FROM attachments WHERE db=?"
    for digest, place, key_ref, length, blob in ctx.conn.execute(query, (db.row_id,)):
        batch.append(attachment_doc(AttachmentBlob(digest, place, key_ref, length, bytes(blob))))
        size += len(blob)
        if size >= _ATTACHMENT_BYTES:
            await put_missing(ctx.client, data, batch, fields("key_ref", "length"))
            progress.advance(len(batch))
            batch, size = [], 0
    await put_missing(ctx.client, data, batch, fields("key_ref", "length"))
    progress.advance(len(batch))
    progress.finish()


async def _copy_locals(ctx: Context, db: Database) -> None:
    """Checkpoints: a phone compares its own with the server's to resume, so they go as they
    are (the since-token inside is read by the CouchDB backend, ADR 0001)."""
    _, data, _ = _names(ctx, db)
    found = source.rows(
        ctx.conn, "SELECT owner, id, rev, body FROM local_docs WHERE db=?", db.row_id
    )
    progress = Progress(f"checkpoints ({db.name})", len(found), ctx.out)
    for start in range(0, len(found), BATCH):
        docs = [
            {
                "_id": layout.local_id(owner, doc_id),
                "owner": owner,
                "id": doc_id,
                "rev": rev,
                "body": layout.b64(bytes(body)),
            }
            for owner, doc_id, rev, body in found[start : start + BATCH]
        ]
        await put_missing(ctx.client, data, docs, always)  # a newer one saved since is kept
        progress.advance(len(docs))
    progress.finish()
