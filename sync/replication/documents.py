"""Documents as clients send and receive them, and as the store keeps them.

An incoming document is split into routing metadata (id, rev, history,
deleted, place) and a *body*: every other field, including ``_attachments``
as stubs (``content_type``, ``digest``, ``length``, ``revpos``).  The body is
what gets sealed.  See https://docs.couchdb.org/en/stable/api/document/common.html
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from sync.errors import BadRequest, FieldsyncError
from sync.replication import revtree

# Special members a client may send; anything else starting with "_" is refused.
ALLOWED_SPECIAL = frozenset(
    {
        "_id",
        "_rev",
        "_revisions",
        "_deleted",
        "_attachments",
        "_conflicts",
        "_deleted_conflicts",
        "_local_seq",
        "_revs_info",
    }
)
DROPPED_ON_WRITE = ALLOWED_SPECIAL - {"_attachments"}


class DocValidationError(FieldsyncError):
    status = 400
    error = "doc_validation"


class IllegalDocId(FieldsyncError):
    status = 400
    error = "illegal_docid"


@dataclass
class IncomingDoc:
    """A document to write, parsed and checked, attachments not yet resolved."""

    id: str
    rev: str | None
    path: list[str]
    deleted: bool
    place: str | None
    body: dict[str, Any]
    attachments: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_edits: bool = True


def check_doc_id(doc_id: object) -> str:
    if not isinstance(doc_id, str) or not doc_id:
        raise IllegalDocId("Document id must be a non-empty string.")
    if doc_id.startswith("_") and not doc_id.startswith(("_design/", "_local/")):
        raise IllegalDocId("Only reserved document ids may start with underscore.")
    return doc_id


def parse_incoming(raw: object, *, new_edits: bool, doc_id: str | None = None) -> IncomingDoc:
    """Validate one document of a ``_bulk_docs`` or ``PUT`` body."""
    if not isinstance(raw, dict):
        raise BadRequest("Document must be a JSON object")
    for key in raw:
        if key.startswith("_") and key not in ALLOWED_SPECIAL:
            raise DocValidationError(f"Bad special document member: {key}")
    ident = doc_id or raw.get("_id")
    if ident is None and new_edits:
        ident = uuid.uuid4().hex
    ident = check_doc_id(ident)
    rev = raw.get("_rev")
    if rev is not None:
        revtree.parse_rev(rev)
    deleted = raw.get("_deleted", False) is True
    place = raw.get("place")
    if place is not None and not isinstance(place, str):
        raise BadRequest("place must be a string (a place id)")
    path = _history(raw, rev, new_edits)
    attachments = raw.get("_attachments") or {}
    if not isinstance(attachments, dict):
        raise BadRequest("_attachments must be an object")
    body = {k: v for k, v in raw.items() if k not in DROPPED_ON_WRITE and k != "_attachments"}
    return IncomingDoc(ident, rev, path, deleted, place, body, attachments, new_edits)


def _history(raw: dict[str, Any], rev: str | None, new_edits: bool) -> list[str]:
    revisions = raw.get("_revisions")
    if new_edits:
        return [rev] if rev else []
    if rev is None:
        raise BadRequest("When new_edits is false every document needs a _rev.")
    if isinstance(revisions, dict):
        start, ids = revisions.get("start"), revisions.get("ids")
        if (
            not isinstance(start, int)
            or not isinstance(ids, list)
            or not all(isinstance(i, str) for i in ids)
        ):
            raise BadRequest("Invalid _revisions")
        path = revtree.path_from_revisions(start, ids)
        if path[0] != rev:
            raise BadRequest("_rev does not match the head of _revisions")
        return path
    return [rev]


def new_rev(parent: str | None, deleted: bool, body: dict[str, Any]) -> str:
    """A deterministic revision for an edit: the same edit of the same parent gives the same rev."""
    pos = revtree.rev_pos(parent) + 1 if parent else 1
    digest = hashlib.md5(
        orjson.dumps([parent, deleted, body], option=orjson.OPT_SORT_KEYS), usedforsecurity=False
    ).hexdigest()
    return f"{pos}-{digest}"


def render(
    doc_id: str,
    rev: str,
    deleted: bool,
    body: dict[str, Any],
) -> dict[str, Any]:
    """The client's view of a revision: ``_id``, ``_rev`` first, then the body."""
    doc: dict[str, Any] = {"_id": doc_id, "_rev": rev}
    doc.update(body)
    if deleted:
        doc["_deleted"] = True
    return doc
