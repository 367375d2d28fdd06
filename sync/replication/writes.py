"""Writing documents: ``_bulk_docs`` (``new_edits`` true and false), PUT, DELETE.

Each document goes through named steps: parse → place and access → attachments
→ revision → seal → store.  A failure in any step is that document's entry in
the answer (``{"id", "error", "reason"}``); it never fails the batch.  (What
CouchDB refuses while reading the request, :class:`~sync.replication.documents.
RefusedDocument`, is checked by the HTTP handler before anything is written.)
https://docs.couchdb.org/en/stable/api/database/bulk-api.html#db-bulk-docs

A caller writes only on the branches they may know of (:meth:`Parts.branches`):
an edit of a leaf that lies only on another place's branch is a 409 conflict,
like an edit of a rev that does not exist; an attachment stub resolves only from
a revision or place they may read.  A replicated path (``new_edits: false``) is
cut at its first revision hidden from them, as if the history had been stemmed
there: their revision is stored without grafting onto (and so closing) the
other place's branch, and the answer is the usual success.  A path whose newest
revision is hidden is, like any revision the server holds, written no more.
Writes refused because the document lives in another place are audited
(``write_refused``) and counted (:attr:`Parts.refused_writes`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sync.errors import BadRequest, Conflict, FieldsyncError, PreconditionFailed
from sync.extensions import Validator
from sync.replication import revtree
from sync.replication.context import Caller, Parts, WriteRefused, require_write
from sync.replication.documents import IncomingDoc, new_rev, parse_incoming
from sync.store.base import SHARED, AttachmentBlob, DocMeta, RevisionWrite, WriteResult
from sync.store.rules import DocumentElsewhere


class MissingStub(PreconditionFailed):
    error = "missing_stub"


@dataclass(frozen=True)
class _Parent:
    """The revision an edit extends: its place and its attachment stubs."""

    place: str
    attachments: dict[str, Any]


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
        readable = {i: m for i, m in metas.items() if caller.scope.can_read(m.place)}
        views = await self.parts.branches(db, caller, readable)
        plans: list[_Plan | WriteResult] = []
        for raw, item in zip(raw_docs, parsed, strict=True):
            if isinstance(item, WriteResult):
                plans.append(item)
                continue
            meta, view = metas.get(item.id), views.get(item.id)
            plans.append(await self._plan(db, caller, raw, item, meta, view))
        return await self._store(db, caller, plans, metas, new_edits)

    def _parse(self, raw: Any, new_edits: bool) -> IncomingDoc | WriteResult:
        try:
            return parse_incoming(raw, new_edits=new_edits)
        except FieldsyncError as exc:
            doc_id = raw.get("_id", "") if isinstance(raw, dict) else ""
            return WriteResult(str(doc_id), "", exc)

    async def _plan(
        self,
        db: str,
        caller: Caller,
        raw: dict[str, Any],
        doc: IncomingDoc,
        meta: DocMeta | None,
        view: DocMeta | None,
    ) -> _Plan | WriteResult:
        """``meta`` is the document as stored; ``view``, the branches the caller may know of."""
        try:
            place = self._place(caller, doc, meta)
            require_write(caller, place)
            if meta is not None and not caller.scope.can_write(meta.place):
                raise DocumentElsewhere()
            if meta is not None and doc.new_edits and doc.rev is not None:
                _require_known_leaf(doc.rev, meta, view)
            for validate in self.parts.validators:
                if (reason := validate(db, raw)) is not None:
                    raise validator_refusal(validate, db, raw, reason)
            blobs = await self._attachments(db, caller, doc, place, view)
        except FieldsyncError as exc:
            return WriteResult(doc.id, doc.rev or "", exc)
        if not doc.new_edits and meta is not None:
            doc.path = _cut_at_hidden(doc.path, meta, view)
            if not doc.path:  # its newest revision is held already: nothing to write
                return WriteResult(doc.id, doc.rev or "")
        return _Plan(doc, place, blobs)

    def _place(self, caller: Caller, doc: IncomingDoc, meta: DocMeta | None) -> str:
        """The place a revision belongs to; tombstones inherit the document's place."""
        if doc.place is not None:
            return doc.place
        if doc.deleted and meta is not None:
            return meta.place
        if meta is not None and not meta.deleted and meta.place != SHARED:
            # Dropping the field would share a worker's record with every worker.
            raise WriteRefused(
                f'This document belongs to place {meta.place!r}: keep its "place" '
                "(or name another); only new documents without one are shared.",
                code="no_place",
            )
        if caller.is_admin:
            return SHARED
        if doc.deleted and caller.user.places:
            # A document created and removed offline arrives as a bare tombstone.
            return caller.user.places[0]
        raise WriteRefused(
            'Documents need a "place"; only admins write shared documents.', code="no_place"
        )

    async def _attachments(
        self, db: str, caller: Caller, doc: IncomingDoc, place: str, meta: DocMeta | None
    ) -> list[AttachmentBlob]:
        """Turn inline attachments into sealed blobs and every attachment into a stub."""
        if not doc.attachments:
            return []
        await self.parts.vault.warm({place})  # sealed below, on the event loop
        pos = _new_pos(doc, meta)
        stubs: dict[str, Any] = {}
        inline: list[AttachmentBlob] = []
        stubbed: dict[str, dict[str, Any]] = {}
        for name, att in doc.attachments.items():
            if not isinstance(att, dict):
                raise BadRequest(f"attachment {name!r} must be an object")
            if "data" in att:
                stubs[name], blob = self._inline(db, name, att, place, pos, doc.new_edits)
                inline.append(blob)
            elif att.get("stub"):
                stubs[name] = stubbed[name] = att
            elif att.get("follows"):
                raise BadRequest("multipart attachments are not supported; send them inline")
            else:
                raise BadRequest(f"attachment {name!r} needs data or stub")
        if stubbed:
            resolved, copies = await self._stubs(db, caller, doc, meta, place, stubbed)
            stubs.update(resolved)
            inline.extend(copies)
        doc.body["_attachments"] = stubs
        return inline

    def _inline(
        self, db: str, name: str, att: dict[str, Any], place: str, pos: int, new_edits: bool
    ) -> tuple[dict[str, Any], AttachmentBlob]:
        """An attachment sent as base64 data.

        An edit gives it the new revision's position (couch_db's
        ``set_new_att_revpos``); a replicated revision keeps the ``revpos`` it carries.
        """
        try:
            data = base64.b64decode(att["data"], validate=True)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise BadRequest(f"attachment {name!r}: data is not valid base64") from exc
        digest = md5_digest(data)
        sent = att.get("revpos")
        stub = {
            "content_type": att.get("content_type") or "application/octet-stream",
            "digest": digest,
            "length": len(data),
            "revpos": sent if not new_edits and isinstance(sent, int) else pos,
        }
        return stub, self.parts.vault.seal_attachment(db, place, digest, data)

    async def _stubs(
        self,
        db: str,
        caller: Caller,
        doc: IncomingDoc,
        meta: DocMeta | None,
        place: str,
        stubbed: dict[str, dict[str, Any]],
    ) -> tuple[dict[str, dict[str, Any]], list[AttachmentBlob]]:
        """Resolve attachment stubs to stored attachments (and copies sealed for ``place``).

        An edit's stubs name attachments of the revision it edits (CouchDB's
        ``merge_stubs``: by name, or here also by digest); a replicated revision's
        stubs name any attachment the caller may read.
        """
        parent: _Parent | None = None
        if doc.new_edits:
            parent = await self._parent(db, doc, meta)
        resolved: dict[str, dict[str, Any]] = {}
        copies: list[AttachmentBlob] = []
        for name, att in stubbed.items():
            if parent is not None:
                att = _stub_in_parent(doc.id, name, att, parent.attachments)
            resolved[name] = await self._stub(db, caller, name, att, place, parent, copies)
        return resolved, copies

    async def _parent(self, db: str, doc: IncomingDoc, meta: DocMeta | None) -> _Parent:
        """The revision an edit with stubs extends; an edit of no leaf is a conflict first.

        ``meta`` holds only the branches the caller may know of, so the parent is a
        revision they may read.
        """
        parent = doc.rev or (meta.winner if meta is not None and meta.deleted else None)
        if parent is None and meta is None:
            raise MissingStub(f"Previous revision missing for document {doc.id}")
        if parent is None or meta is None or parent not in revtree.leaves(meta.tree):
            raise Conflict()
        found = (await self.parts.store.get_revisions(db, [(doc.id, parent)])).get((doc.id, parent))
        if found is None:
            raise MissingStub(f"Previous revision missing for document {doc.id}")
        await self.parts.vault.warm_refs({found.key_ref})
        atts = self.parts.vault.open_body(db, found).get("_attachments")
        return _Parent(found.place, atts if isinstance(atts, dict) else {})

    async def _stub(
        self,
        db: str,
        caller: Caller,
        name: str,
        att: dict[str, Any],
        place: str,
        parent: _Parent | None,
        copies: list[AttachmentBlob],
    ) -> dict[str, Any]:
        digest = att.get("digest")
        if not isinstance(digest, str):
            raise MissingStub(f"attachment {name!r} is a stub without a digest")
        blob = await self.parts.store.get_attachment(db, digest, frozenset({place}))
        if blob is None:
            blob = await self._copy(db, caller, digest, place, parent, copies)
        return {
            "content_type": att.get("content_type") or "application/octet-stream",
            "digest": digest,
            "length": blob.length,
            "revpos": att.get("revpos", 1),
        }

    async def _copy(
        self,
        db: str,
        caller: Caller,
        digest: str,
        place: str,
        parent: _Parent | None,
        copies: list[AttachmentBlob],
    ) -> AttachmentBlob:
        """An attachment kept in another place the caller may read, sealed again for ``place``."""
        other = None
        if parent is not None and caller.scope.can_read(parent.place):
            other = await self.parts.store.get_attachment(db, digest, frozenset({parent.place}))
        if other is None:
            other = await self.parts.store.get_attachment(db, digest, caller.scope.read)
        if other is None:
            raise MissingStub(f"Invalid attachment stub for digest {digest}")
        await self.parts.vault.warm_refs({other.key_ref})
        await self.parts.vault.warm({place})
        data = self.parts.vault.open_attachment(db, other)
        copies.append(self.parts.vault.seal_attachment(db, place, digest, data))
        return other

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
        stamp = self.parts.stamp(caller)  # the audit entry commits with the writes
        stored = iter(await self.parts.store.write(db, writes, stamp) if writes else [])
        results = [next(stored) if isinstance(p, _Plan) else p for p in plans]
        changed = {r.place for r in results if r.error is None and r.place is not None}
        if changed:  # the long polls of those places wake, no others
            self.parts.notifier.notify(db, changed)
        elsewhere = [r.doc_id for r in results if isinstance(r.error, DocumentElsewhere)]
        if elsewhere:
            self.parts.refused(caller, db, elsewhere)
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
            doc.id,
            path,
            doc.deleted,
            plan.place,
            key_ref,
            sealed,
            new_edits,
            allowed,
            tuple(plan.blobs),
        )


def validator_refusal(
    validate: Validator, db: str, doc: dict[str, Any], reason: str
) -> WriteRefused:
    """A validator's refusal, with its refused-records code and supervisor words.

    A validator may say what kind of refusal it makes (``refusal_code``, e.g.
    ``form_schema``; else ``validator``) and explain it for a supervisor
    (``explain(db, doc) -> str``, asked only once it refused); see
    :class:`sync.extensions.Validator`.
    """
    code = getattr(validate, "refusal_code", None)
    explain = getattr(validate, "explain", None)
    detail = explain(db, doc) if callable(explain) else None
    return WriteRefused(
        reason,
        code=code if isinstance(code, str) else "validator",
        detail=detail if isinstance(detail, str) else None,
    )


def _stub_in_parent(
    doc_id: str, name: str, att: dict[str, Any], parent: dict[str, Any]
) -> dict[str, Any]:
    """The parent's attachment a stub stands for: same name (and digest, if the stub
    gives one), else one with the stub's digest; neither is a 412 ``missing_stub``."""
    digest = att.get("digest")
    same = parent.get(name)
    if isinstance(same, dict) and digest in (None, same.get("digest")):
        return same
    for other in parent.values():
        if isinstance(other, dict) and digest is not None and other.get("digest") == digest:
            return {**other, "content_type": att.get("content_type") or other.get("content_type")}
    raise MissingStub(f"Invalid attachment stub in {doc_id} for {name}")


def _require_known_leaf(rev: str, meta: DocMeta, view: DocMeta | None) -> None:
    """An edit of a stored rev extends a leaf the caller may know of, or is a plain conflict.

    (A rev the store does not hold yet is the store's to judge: an earlier
    document of the same batch may have written it.)
    """
    if rev in meta.tree and (view is None or rev not in revtree.leaves(view.tree)):
        raise Conflict()


def _cut_at_hidden(path: list[str], meta: DocMeta, view: DocMeta | None) -> list[str]:
    """A replicated path up to its first revision that lies only on a hidden branch."""
    known = view.tree if view is not None else {}
    for i, rev in enumerate(path):
        if rev in meta.tree and rev not in known:
            return path[:i]
    return path


def _new_pos(doc: IncomingDoc, meta: DocMeta | None) -> int:
    if doc.path:
        return revtree.rev_pos(doc.path[0]) + (1 if doc.new_edits else 0)
    if meta is not None and meta.deleted:
        return revtree.rev_pos(meta.winner) + 1
    return 1
