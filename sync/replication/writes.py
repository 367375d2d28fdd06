"""Writing documents: ``_bulk_docs`` (``new_edits`` true and false), PUT, DELETE.

Each document goes through named steps: parse → place and access → attachments
→ revision → seal → store.  A failure in any step is that document's entry in
the answer (``{"id", "error", "reason"}``); it never fails the batch.
https://docs.couchdb.org/en/stable/api/database/bulk-api.html#db-bulk-docs
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sync.errors import BadRequest, FieldsyncError, Forbidden, PreconditionFailed
from sync.replication import revtree
from sync.replication.context import Caller, Parts, require_write
from sync.replication.documents import IncomingDoc, new_rev, parse_incoming
from sync.store.base import SHARED, AttachmentBlob, DocMeta, RevisionWrite, WriteResult


class MissingStub(PreconditionFailed):
    error = "missing_stub"


@dataclass
class _Plan:
    doc: IncomingDoc
    place: str
    blobs: list[AttachmentBlob]


def md5_digest(data: bytes) -> str:
    return "md5-" + base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class Writer:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    async def bulk_docs(
        self, db: str, caller: Caller, raw_docs: Sequence[Any], new_edits: bool
    ) -> list[WriteResult]:
        parsed = [self._parse(raw, new_edits) for raw in raw_docs]
        ids = [p.id for p in parsed if isinstance(p, IncomingDoc)]
        metas = await self.parts.store.get_metas(db, ids)
        plans: list[_Plan | WriteResult] = []
        for raw, item in zip(raw_docs, parsed, strict=True):
            if isinstance(item, WriteResult):
                plans.append(item)
                continue
            plans.append(await self._plan(db, caller, raw, item, metas.get(item.id)))
        return await self._store(db, caller, plans, metas, new_edits)

    def _parse(self, raw: Any, new_edits: bool) -> IncomingDoc | WriteResult:
        try:
            return parse_incoming(raw, new_edits=new_edits)
        except FieldsyncError as exc:
            doc_id = raw.get("_id", "") if isinstance(raw, dict) else ""
            return WriteResult(str(doc_id), "", exc)

    async def _plan(
        self, db: str, caller: Caller, raw: dict[str, Any], doc: IncomingDoc, meta: DocMeta | None
    ) -> _Plan | WriteResult:
        try:
            place = self._place(caller, doc, meta)
            require_write(caller, place)
            if meta is not None and not caller.scope.can_write(meta.place):
                raise Forbidden("You may not write this document.")
            for validate in self.parts.validators:
                if (reason := validate(db, raw)) is not None:
                    raise Forbidden(reason)
            blobs = await self._attachments(db, caller, doc, place, meta)
        except FieldsyncError as exc:
            return WriteResult(doc.id, doc.rev or "", exc)
        return _Plan(doc, place, blobs)

    def _place(self, caller: Caller, doc: IncomingDoc, meta: DocMeta | None) -> str:
        """The place a revision belongs to; tombstones inherit the document's place."""
        if doc.place is not None:
            return doc.place
        if doc.deleted and meta is not None:
            return meta.place
        if caller.is_admin:
            return SHARED
        if doc.deleted and caller.user.places:
            # A document created and removed offline arrives as a bare tombstone.
            return caller.user.places[0]
        raise Forbidden('Documents need a "place"; only admins write shared documents.')

    async def _attachments(
        self, db: str, caller: Caller, doc: IncomingDoc, place: str, meta: DocMeta | None
    ) -> list[AttachmentBlob]:
        """Turn inline attachments into sealed blobs and every attachment into a stub."""
        if not doc.attachments:
            return []
        pos = _new_pos(doc, meta)
        blobs: list[AttachmentBlob] = []
        stubs: dict[str, Any] = {}
        for name, att in doc.attachments.items():
            if not isinstance(att, dict):
                raise BadRequest(f"attachment {name!r} must be an object")
            if "data" in att:
                stubs[name], blob = self._inline(db, name, att, place, pos)
                blobs.append(blob)
            elif att.get("stub"):
                stubs[name] = await self._stub(db, caller, name, att, place, blobs)
            elif att.get("follows"):
                raise BadRequest("multipart attachments are not supported; send them inline")
            else:
                raise BadRequest(f"attachment {name!r} needs data or stub")
        doc.body["_attachments"] = stubs
        return blobs

    def _inline(
        self, db: str, name: str, att: dict[str, Any], place: str, pos: int
    ) -> tuple[dict[str, Any], AttachmentBlob]:
        try:
            data = base64.b64decode(att["data"], validate=True)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise BadRequest(f"attachment {name!r}: data is not valid base64") from exc
        digest = md5_digest(data)
        stub = {
            "content_type": att.get("content_type") or "application/octet-stream",
            "digest": digest,
            "length": len(data),
            "revpos": att.get("revpos") if isinstance(att.get("revpos"), int) else pos,
        }
        return stub, self.parts.vault.seal_attachment(db, place, digest, data)

    async def _stub(
        self,
        db: str,
        caller: Caller,
        name: str,
        att: dict[str, Any],
        place: str,
        blobs: list[AttachmentBlob],
    ) -> dict[str, Any]:
        digest = att.get("digest")
        if not isinstance(digest, str):
            raise MissingStub(f"attachment {name!r} is a stub without a digest")
        blob = await self.parts.store.get_attachment(db, digest, frozenset({place}))
        if blob is None:
            other = await self.parts.store.get_attachment(db, digest, caller.scope.read)
            if other is None:
                raise MissingStub(f"Invalid attachment stub in {name!r} for digest {digest}")
            await self.parts.vault.warm_refs({other.key_ref})
            data = self.parts.vault.open_attachment(db, other)
            blobs.append(self.parts.vault.seal_attachment(db, place, digest, data))
            blob = other
        return {
            "content_type": att.get("content_type") or "application/octet-stream",
            "digest": digest,
            "length": blob.length,
            "revpos": att.get("revpos", 1),
        }

    async def _store(
        self,
        db: str,
        caller: Caller,
        plans: list[_Plan | WriteResult],
        metas: dict[str, DocMeta],
        new_edits: bool,
    ) -> list[WriteResult]:
        ready = [p for p in plans if isinstance(p, _Plan)]
        await self.parts.vault.warm({p.place for p in ready})
        writes = [self._revision(db, caller, p, metas.get(p.doc.id), new_edits) for p in ready]
        blobs = [b for p in ready for b in p.blobs]
        if blobs:
            await self.parts.store.put_attachments(db, blobs)
        stored = iter(await self.parts.store.write(db, writes) if writes else [])
        results = [next(stored) if isinstance(p, _Plan) else p for p in plans]
        if any(r.error is None for r in results):
            self.parts.notifier.notify(db)
        self.parts.record(caller, "write", db, (r.doc_id for r in results if r.error is None))
        return results

    def _revision(
        self, db: str, caller: Caller, plan: _Plan, meta: DocMeta | None, new_edits: bool
    ) -> RevisionWrite:
        doc = plan.doc
        path: tuple[str, ...]
        if new_edits:
            parent = doc.rev or (meta.winner if meta is not None and meta.deleted else None)
            rev = new_rev(parent, doc.deleted, doc.body)
            path = (rev, parent) if parent else (rev,)
        else:
            path = tuple(doc.path)
            rev = path[0]
        key_ref, sealed = self.parts.vault.seal_body(db, doc.id, rev, plan.place, doc.body)
        allowed = None if caller.is_admin else caller.scope.capture
        return RevisionWrite(
            doc.id, path, doc.deleted, plan.place, key_ref, sealed, new_edits, allowed
        )


def _new_pos(doc: IncomingDoc, meta: DocMeta | None) -> int:
    if doc.path:
        return revtree.rev_pos(doc.path[0]) + (1 if doc.new_edits else 0)
    if meta is not None and meta.deleted:
        return revtree.rev_pos(meta.winner) + 1
    return 1
