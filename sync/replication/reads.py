"""Reading documents: GET doc, ``open_revs``, ``_bulk_get``, ``_revs_diff``, ``_all_docs``.

Every step goes through :meth:`Parts.visible_metas`, so a document outside the
caller's set is answered exactly like a missing one, and a revision that lies
only on a branch of a place they may not read, like a revision that does not exist.
https://docs.couchdb.org/en/stable/api/document/common.html
https://docs.couchdb.org/en/stable/api/database/bulk-api.html
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from sync.errors import BadRequest, NotFound
from sync.replication import revtree
from sync.replication.context import Caller, Parts
from sync.replication.documents import render
from sync.store.base import AllDocsQuery, DocMeta, StoredRevision

Opened = dict[tuple[str, str], tuple[StoredRevision, dict[str, Any]]]
log = structlog.get_logger()


@dataclass(frozen=True)
class ReadOptions:
    revs: bool = False
    revs_info: bool = False
    conflicts: bool = False
    deleted_conflicts: bool = False
    attachments: bool = False
    latest: bool = False
    local_seq: bool = False


class Reader:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    # -- one document -------------------------------------------------------
    async def get_doc(
        self, db: str, caller: Caller, doc_id: str, rev: str | None, opts: ReadOptions
    ) -> dict[str, Any]:
        meta = (await self.parts.visible_metas(db, caller, [doc_id])).get(doc_id)
        if meta is None:
            raise NotFound("missing")
        if rev is None:
            if meta.deleted:
                raise NotFound("deleted")
            rev = meta.winner
        elif rev not in meta.tree:
            raise NotFound("missing")
        elif opts.latest:
            rev = revtree.leaves_under(meta.tree, rev)[0]
        docs = await self._render(db, caller, meta, [rev], opts)
        if rev not in docs:
            raise NotFound("missing")
        return docs[rev]

    async def open_revs(
        self, db: str, caller: Caller, doc_id: str, revs: Sequence[str] | None, opts: ReadOptions
    ) -> list[dict[str, Any]]:
        """``GET /db/doc?open_revs=...``: ``[{"ok": doc} | {"missing": rev}]``."""
        meta = (await self.parts.visible_metas(db, caller, [doc_id])).get(doc_id)
        if meta is None:
            if revs is None:
                raise NotFound("missing")
            return [{"missing": r} for r in revs]
        return await self._entries(db, caller, meta, revs, opts, lambda r: {"missing": r})

    async def bulk_get(
        self, db: str, caller: Caller, requests: Sequence[Any], opts: ReadOptions
    ) -> dict[str, Any]:
        """``POST /db/_bulk_get``: every body of the batch is fetched in one store call."""
        wanted = [_bulk_get_request(item) for item in requests]
        # PouchDB asks for the revisions the changes feed just named: metas read for
        # that feed a moment ago will do (Parts.visible_metas, ``recent``).
        ids = [doc_id for doc_id, _ in wanted]
        metas = await self.parts.visible_metas(db, caller, ids, recent=True)
        behind = [i for i, r in wanted if i in metas and r and r not in metas[i].tree]
        if behind:  # written since: read those again
            fresh = await self.parts.visible_metas(db, caller, behind)
            for doc_id in behind:  # what either read knew (a replica may answer from behind)
                if doc_id in fresh:
                    metas[doc_id] = metas[doc_id].merged(fresh[doc_id])
                else:
                    del metas[doc_id]
        plans = {
            (doc_id, rev): _wanted(metas[doc_id], None if rev is None else [rev], opts, rev is None)
            for doc_id, rev in wanted
            if doc_id in metas
        }
        pairs = [
            (doc_id, r)
            for (doc_id, _), revs in plans.items()
            for r in revs
            if r in metas[doc_id].tree
        ]
        opened = await self.parts.open_revisions(db, caller, pairs)
        results = []
        for doc_id, rev in wanted:
            meta = metas.get(doc_id)
            if meta is None:
                docs = [_bulk_error(doc_id, rev or "undefined")]
            else:
                docs = await self._entries(
                    db,
                    caller,
                    meta,
                    None if rev is None else [rev],
                    opts,
                    lambda r, d=doc_id: _bulk_error(d, r),
                    winner_only=rev is None,
                    opened=opened,
                )
            results.append({"id": doc_id, "docs": docs})
        _log_missing(db, metas, opened, results)
        return {"results": results}

    async def _entries(
        self,
        db: str,
        caller: Caller,
        meta: DocMeta,
        revs: Sequence[str] | None,
        opts: ReadOptions,
        missing: Any,
        winner_only: bool = False,
        opened: Opened | None = None,
    ) -> list[dict[str, Any]]:
        wanted = _wanted(meta, revs, opts, winner_only)
        present = [r for r in wanted if r in meta.tree]
        docs = await self._render(db, caller, meta, present, opts, opened)
        # Leaves found by "all" or "latest" that lie outside the caller's set do not
        # exist for them (PouchDB fails a whole batch on one error entry).
        asked = set(wanted if winner_only else revs or ())
        shown = [r for r in wanted if r in docs or r in asked or r not in meta.tree]
        return [{"ok": docs[r]} if r in docs else missing(r) for r in shown]

    async def _render(
        self,
        db: str,
        caller: Caller,
        meta: DocMeta,
        revs: Sequence[str],
        opts: ReadOptions,
        opened: Opened | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Render revisions of one document; ``opened`` holds bodies fetched for a batch."""
        pairs = [(meta.id, r) for r in revs]
        if opened is None:
            opened = await self.parts.open_revisions(db, caller, pairs)
        docs = {}
        for key in pairs:
            if key not in opened:
                continue
            rev = key[1]
            stored, body = opened[key]
            doc = render(meta.id, rev, stored.deleted, dict(body))
            await self._decorate(db, caller, meta, rev, doc, opts)
            docs[rev] = doc
        return docs

    async def _decorate(
        self,
        db: str,
        caller: Caller,
        meta: DocMeta,
        rev: str,
        doc: dict[str, Any],
        opts: ReadOptions,
    ) -> None:
        if opts.revs:
            doc["_revisions"] = revtree.revisions_field(meta.tree, rev)
        if opts.revs_info:
            doc["_revs_info"] = [
                {"rev": r, "status": "deleted" if meta.tree[r].deleted else "available"}
                for r in revtree.history(meta.tree, rev)
            ]
        # ``meta.tree`` holds only the branches the caller may know of (Parts.branches).
        if opts.conflicts and (shown := revtree.conflicts(meta.tree)):
            doc["_conflicts"] = shown
        if opts.deleted_conflicts and (shown := revtree.deleted_conflicts(meta.tree)):
            doc["_deleted_conflicts"] = shown
        if opts.local_seq:
            doc["_local_seq"] = meta.seq
        if "_attachments" in doc:
            doc["_attachments"] = await self._attachments(db, caller, doc["_attachments"], opts)

    async def _attachments(
        self, db: str, caller: Caller, stubs: dict[str, Any], opts: ReadOptions
    ) -> dict[str, Any]:
        """Stubs, or the data inline: CouchDB's ``couch_att:to_json``.

        A stub carries ``length`` and ``stub``; inline data carries neither
        (``{content_type, revpos, digest, data}``), and PouchDB checks that.
        """
        out = {}
        for name, stub in stubs.items():
            att = {k: stub[k] for k in ("content_type", "revpos", "digest") if k in stub}
            if opts.attachments:
                data = await self.attachment_bytes(db, caller, stub["digest"])
                att["data"] = base64.b64encode(data).decode()
            else:
                att["length"] = stub.get("length", 0)
                att["stub"] = True
            out[name] = att
        return out

    async def attachment_bytes(self, db: str, caller: Caller, digest: str) -> bytes:
        blob = await self.parts.store.get_attachment(db, digest, caller.scope.read)
        if blob is None:
            raise NotFound("Document is missing attachment")
        await self.parts.vault.warm_refs({blob.key_ref})
        return self.parts.vault.open_attachment(db, blob)

    # -- revs_diff ---------------------------------------------------------
    async def revs_diff(
        self, db: str, caller: Caller, request: dict[str, Any]
    ) -> dict[str, dict[str, list[str]]]:
        """``POST /db/_revs_diff``: which of these revisions does the server lack?

        A revision that lies only on a branch of a place the caller may not read is
        "missing", like one the server lacks (anything else would confirm that it
        exists); ``possible_ancestors`` name only leaves of their own branches.  The
        replicator then uploads it, and that write changes nothing (see writes).
        """
        for doc_id, revs in request.items():
            if not isinstance(revs, list) or not all(isinstance(r, str) for r in revs):
                raise BadRequest(f"_revs_diff: revisions of {doc_id!r} must be a list of strings")
        metas = await self.parts.visible_metas(db, caller, request)
        answer: dict[str, dict[str, list[str]]] = {}
        for doc_id, revs in request.items():
            meta = metas.get(doc_id)
            tree = meta.tree if meta else {}
            missing = revtree.missing_revs(tree, revs)
            if not missing:
                continue
            entry: dict[str, list[str]] = {"missing": missing}
            ancestors = sorted({a for r in missing for a in _ancestors(tree, r)})
            if ancestors:
                entry["possible_ancestors"] = ancestors
            answer[doc_id] = entry
        return answer

    # -- all_docs ----------------------------------------------------------
    async def all_docs(
        self,
        db: str,
        caller: Caller,
        query: AllDocsQuery,
        keys: list[Any] | None,
        include_docs: bool,
        opts: ReadOptions,
    ) -> dict[str, Any]:
        places = caller.scope.read
        total, page = await self.parts.store.all_docs(
            db, places, query if keys is None else AllDocsQuery(limit=0)
        )
        if keys is not None:
            rows = await self._rows_for_keys(db, caller, keys, query)
        else:
            metas = await self.parts.visible_metas(db, caller, [c.id for c in page])
            rows = [_row(metas[c.id]) for c in page if c.id in metas]
        if include_docs:
            await self._attach_docs(db, caller, rows, opts)
        return {"total_rows": total, "offset": query.skip, "rows": rows}

    async def _rows_for_keys(
        self, db: str, caller: Caller, keys: list[Any], query: AllDocsQuery
    ) -> list[dict[str, Any]]:
        ids = [k for k in keys if isinstance(k, str)]
        metas = await self.parts.visible_metas(db, caller, ids)
        ordered = list(reversed(keys)) if query.descending else list(keys)
        rows = [
            _row(metas[k])
            if isinstance(k, str) and k in metas
            else {"key": k, "error": "not_found"}
            for k in ordered
        ]
        end = None if query.limit is None else query.skip + query.limit
        return rows[query.skip : end]

    async def _attach_docs(
        self, db: str, caller: Caller, rows: list[dict[str, Any]], opts: ReadOptions
    ) -> None:
        live = [r for r in rows if "value" in r and not r["value"].get("deleted")]
        metas = await self.parts.visible_metas(db, caller, [r["id"] for r in live])
        pairs = [(m.id, m.winner) for m in metas.values()]
        opened = await self.parts.open_revisions(db, caller, pairs)
        for row in rows:
            if "value" not in row:
                continue
            meta = metas.get(row["id"])
            if meta is None:
                row["doc"] = None
                continue
            docs = await self._render(db, caller, meta, [meta.winner], opts, opened)
            row["doc"] = docs.get(meta.winner)


def _row(meta: DocMeta) -> dict[str, Any]:
    value: dict[str, Any] = {"rev": meta.winner}
    if meta.deleted:
        value["deleted"] = True
    return {"id": meta.id, "key": meta.id, "value": value}


def _wanted(
    meta: DocMeta, revs: Sequence[str] | None, opts: ReadOptions, winner_only: bool
) -> list[str]:
    """The revisions a read names: the winner, every leaf, the ``latest`` leaves, or as given."""
    if winner_only:
        return [meta.winner]
    if revs is None:
        return revtree.sorted_leaves(meta.tree)
    if opts.latest:
        return _latest(meta, revs)
    return list(revs)


def _latest(meta: DocMeta, revs: Sequence[str]) -> list[str]:
    found: list[str] = []
    for rev in revs:
        targets = revtree.leaves_under(meta.tree, rev) if rev in meta.tree else [rev]
        found.extend(t for t in targets if t not in found)
    return found


def _ancestors(tree: revtree.RevTree, rev: str) -> list[str]:
    try:
        return revtree.possible_ancestors(tree, rev)
    except BadRequest:
        return []


def _bulk_get_request(item: Any) -> tuple[str, str | None]:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise BadRequest('_bulk_get: every entry needs an "id"')
    rev = item.get("rev")
    if rev is not None and not isinstance(rev, str):
        raise BadRequest("_bulk_get: rev must be a string")
    return item["id"], rev


def _bulk_error(doc_id: str, rev: str) -> dict[str, Any]:
    return {"error": {"id": doc_id, "rev": rev, "error": "not_found", "reason": "missing"}}


def _log_missing(
    db: str, metas: dict[str, DocMeta], opened: Opened, results: list[dict[str, Any]]
) -> None:
    """Name each revision a ``_bulk_get`` answered as missing, and what was missing: PouchDB
    fails the whole batch on one, so on a cluster this is what to look at first."""
    for entry in results:
        for doc in entry["docs"]:
            if "error" not in doc:
                continue
            doc_id, rev = entry["id"], doc["error"]["rev"]
            meta = metas.get(doc_id)
            if meta is None:
                lacking = "document"
            elif rev not in meta.tree:
                lacking = "revision"
            else:
                lacking = "body" if (doc_id, rev) not in opened else "access"
            log.warning("bulk_get_missing", db=db, doc_id=doc_id, rev=rev, lacking=lacking)
