"""The audit step: the embedded chain, copied into CouchDB as a chain of its own.

The embedded chain is checked first (every MAC and link, the keyed head): a
broken one is refused, since copying it would give tampered entries fresh,
valid MACs.  Its entries then become the chain ``embedded-<id>`` in
``<prefix>audit`` (:mod:`sync.couchaudit`): same sequence numbers, times, actors,
actions, documents and details, linked and MACed under the key every instance
shares, with its head; ``fieldsync audit verify`` checks it with the others.
The data dir keeps its own chain, which ``audit verify`` also checks.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sync.audit_store.couchdb import (
    DB_NAME,
    KEY_DOC,
    CouchAudit,
    entry_doc,
    entry_doc_id,
    head_doc_id,
)
from sync.audit_store.embedded import open_chain
from sync.audit_store.embedded import rows as chain_rows
from sync.audit_store.embedded_verify import verify
from sync.audit_store.links import ChainKey, Linked, genesis
from sync.errors import Conflict, FieldsyncError
from sync.keys import KeyError_
from sync.migrate.couch import ensure_db, fields, put_missing
from sync.migrate.progress import Progress
from sync.migrate.steps import Context, Target
from sync.store.couchdb.client import path

_PAGE = 500


class AuditBroken(FieldsyncError):
    status = 409
    error = "audit_broken"
    default_reason = "The embedded audit chain is broken."


def instance(ctx: Context) -> str:
    """The copied chain's name, the same on every run: from its first entry's MAC."""
    first = ctx.conn.execute("SELECT hash FROM audit WHERE id=1").fetchone()
    return "embedded-" + hashlib.sha256(str(first[0] if first else "").encode()).hexdigest()[:16]


def _embedded_chain(ctx: Context) -> ChainKey | None:
    try:
        return open_chain(ctx.conn, ctx.master, create=False)
    except KeyError_:
        return None  # never started: nothing recorded


async def copy(ctx: Context) -> None:
    total = int(ctx.conn.execute("SELECT count(*) FROM audit").fetchone()[0])
    progress = Progress("audit", total, ctx.out)
    local = _embedded_chain(ctx)
    if local is None or total == 0:
        progress.finish("(nothing recorded)")
        return
    report = verify(ctx.conn, local)
    if not report.ok:
        raise AuditBroken(
            f"not copying the audit trail: the embedded {report.summary()}. Run "
            "`fieldsync audit verify` and keep this data dir as evidence; nothing was "
            "copied for the audit step"
        )
    db = ctx.prefix + DB_NAME
    await ensure_db(ctx.client, db)
    chain = await CouchAudit(ctx.client, db).chain_key(ctx.master, create=True)
    assert chain is not None
    name = instance(ctx)
    previous, seq = genesis(chain, name), 0
    docs: list[dict[str, Any]] = []
    for one in chain_rows(ctx.conn):
        seq = one.seq
        digest = chain.entry_mac(previous, seq, one.entry)
        docs.append(entry_doc(name, Linked(seq, one.entry, previous, digest)))
        previous = digest
        if len(docs) >= _PAGE:
            await put_missing(ctx.client, db, docs, fields("hash"))
            progress.advance(len(docs))
            docs = []
    if docs:
        await put_missing(ctx.client, db, docs, fields("hash"))
        progress.advance(len(docs))
    await _head(ctx, db, name, {"seq": seq, "hash": previous, "mac": chain.head_mac(seq, previous)})
    progress.finish(f"(as chain {name})")


async def _head(ctx: Context, db: str, name: str, body: dict[str, Any]) -> None:
    """The head at the last entry (it only ever moves forward)."""
    where = path(db, head_doc_id(name))
    for _ in range(5):
        leaves = (await ctx.client.leaves_by_id(db, [head_doc_id(name)])).get(head_doc_id(name))
        held = leaves[0] if leaves else None
        if held is not None and int(held.get("seq", 0)) >= int(body["seq"]):
            return
        update = dict(body) if held is None else {**body, "_rev": held["_rev"]}
        try:
            await ctx.client.json("PUT", where, body=update)
            return
        except Conflict:
            continue


async def targets(ctx: Context) -> list[Target]:
    total = int(ctx.conn.execute("SELECT count(*) FROM audit").fetchone()[0])
    if _embedded_chain(ctx) is None or total == 0:
        return []
    name = instance(ctx)
    ids = [entry_doc_id(name, int(r[0])) for r in ctx.conn.execute("SELECT id FROM audit")]
    db = ctx.prefix + DB_NAME
    return [Target("audit entries", db, ids), Target("audit chain key", db, [KEY_DOC])]
