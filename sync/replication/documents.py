"""Documents as clients send and receive them, and as the store keeps them.

An incoming document is split into routing metadata (id, rev, history,
deleted, place) and a *body*: every other field, including ``_attachments``
as stubs (``content_type``, ``digest``, ``length``, ``revpos``).  The body is
what gets sealed.  See https://docs.couchdb.org/en/stable/api/document/common.html
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from sync.errors import BadRequest, FieldsyncError
from sync.replication import depth, revtree
from sync.unsafe_text import first_unsafe

# Levels of objects and arrays a document may nest, counting the document itself.
# Reads wrap a document in a few more levels (``_bulk_get``: results, docs, ok), and
# orjson writes at most 254; this leaves ample room on both sides.
MAX_DOCUMENT_DEPTH = 64

# Special members a client may send; anything else starting with "_" is refused.
# The replicator's own members stay in the body (couch_doc:transfer_fields keeps them).
REPLICATION_MEMBERS = frozenset(
    {
        "_replication_id",
        "_replication_state",
        "_replication_state_time",
        "_replication_state_reason",
        "_replication_stats",
    }
)
ALLOWED_SPECIAL = (
    frozenset(
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
    | REPLICATION_MEMBERS
)
DROPPED_ON_WRITE = ALLOWED_SPECIAL - {"_attachments"} - REPLICATION_MEMBERS
# An attachment's content type becomes a response header when it is downloaded.
_MEDIA_TYPE = re.compile(r"[\x20-\x7e]{0,255}")


class RefusedDocument(FieldsyncError):
    """A document CouchDB refuses while reading the request, before any write.

    chttpd_db's ``_bulk_docs`` parses every document first
    (``doc_from_json_obj_validate``, ``validate_revs``, ``validate_attachment_names``)
    and answers the first such error for the whole request; only what happens
    while writing (forbidden, conflict, missing_stub...) is a per-document entry.
    """

    status = 400
    error = "bad_request"


class DocValidationError(RefusedDocument):
    error = "doc_validation"


class IllegalDocId(RefusedDocument):
    error = "illegal_docid"


class DocumentTooDeep(RefusedDocument):
    default_reason = f"Document nesting depth exceeds the limit of {MAX_DOCUMENT_DEPTH} levels."


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
    """CouchDB's ``couch_doc:validate_docid`` (its reasons, word for word)."""
    if not isinstance(doc_id, str):
        raise IllegalDocId("Document id must be a string")
    if not doc_id:
        raise IllegalDocId("Document id must not be empty")
    if doc_id in ("_design/", "_local/"):
        raise IllegalDocId(f"Illegal document id `{doc_id}`")
    if doc_id.startswith("_") and not doc_id.startswith(("_design/", "_local/")):
        raise IllegalDocId("Only reserved document ids may start with underscore.")
    if (char := first_unsafe(doc_id)) is not None:
        raise IllegalDocId(f"Document id must not contain control characters ({char}).")
    return doc_id


def check_depth(raw: object, limit: int = MAX_DOCUMENT_DEPTH, what: str = "Document") -> None:
    """Refuse a document (or other value sent back) nested deeper than ``limit`` levels.

    A document that can be stored must be servable: one nested nearly as deep as
    orjson's limit is written fine and then fails every read that wraps it, which
    stops every phone of its place from syncing.
    """
    if not depth.fits(raw, limit):
        raise DocumentTooDeep(f"{what} nesting depth exceeds the limit of {limit} levels.")


def check_shape(raw: object, *, new_edits: bool) -> dict[str, Any]:
    """The checks CouchDB makes of each document before writing any (:class:`RefusedDocument`).

    ``couch_doc:transfer_fields`` and chttpd_db's ``validate_revs`` and
    ``validate_attachment_names``, with their reasons; see
    https://docs.couchdb.org/en/stable/api/database/bulk-api.html#db-bulk-docs
    """
    if not isinstance(raw, dict):
        raise RefusedDocument("Document must be a JSON object")
    check_depth(raw)
    for key, value in raw.items():
        if key.startswith("_") and (key not in ALLOWED_SPECIAL or not _special_fits(key, value)):
            raise DocValidationError(f"Bad special document member: {key}")
    if "_id" in raw:
        check_doc_id(raw["_id"])
    if "_revisions" in raw:
        _check_revisions(raw["_revisions"])
    if not new_edits and raw.get("_rev") is None and "_revisions" not in raw:
        raise RefusedDocument(
            "When `new_edits: false`, the document needs `_rev` or `_revisions` specified"
        )
    for name, att in (raw.get("_attachments") or {}).items():
        _check_attachment(name, att)
    return raw


def _check_attachment(name: str, att: object) -> None:
    """What serving an attachment needs: an object whose ``content_type`` can be a header.

    A content type holding a line break (or not a string at all) was stored, and
    then every download of the attachment failed.
    """
    _check_attachment_name(name)
    if not isinstance(att, dict):
        raise RefusedDocument(f"Attachment '{name}' must be a JSON object")
    content_type = att.get("content_type")
    if content_type is not None and not (
        isinstance(content_type, str) and _MEDIA_TYPE.fullmatch(content_type)
    ):
        raise RefusedDocument(
            f"Attachment '{name}' content_type must be a media type such as image/jpeg "
            "(printable ASCII, at most 255 characters)"
        )


def _check_attachment_name(name: str) -> None:
    """chttpd_db's ``validate_attachment_name``, and no control characters."""
    if name.startswith("_"):
        raise RefusedDocument(f"Attachment name '{name}' starts with prohibited character '_'")
    if (char := first_unsafe(name)) is not None:
        raise RefusedDocument(f"Attachment name must not contain control characters ({char}).")


def _special_fits(key: str, value: Any) -> bool:
    """CouchDB reads these members only with the right type; otherwise they are "bad"."""
    if key in ("_revisions", "_attachments"):
        return isinstance(value, dict)
    if key == "_deleted":
        return isinstance(value, bool)
    return True


def _check_revisions(revisions: dict[str, Any]) -> None:
    start, ids = revisions.get("start"), revisions.get("ids")
    if not isinstance(start, int) or isinstance(start, bool):
        raise DocValidationError("_revisions.start isn't an integer.")
    if not isinstance(ids, list):
        raise DocValidationError("_revisions.ids isn't a array.")
    if not all(isinstance(i, str) for i in ids):
        raise DocValidationError("RevId isn't a string")


def parse_incoming(raw: object, *, new_edits: bool, doc_id: str | None = None) -> IncomingDoc:
    """Validate one document of a ``_bulk_docs`` or ``PUT`` body."""
    raw = check_shape(raw, new_edits=new_edits)
    ident = doc_id or raw.get("_id")
    if ident is None and new_edits:
        ident = uuid.uuid4().hex
    ident = check_doc_id(ident)
    if ident.startswith("_design/") and "validate_doc_update" in raw and not raw.get("_deleted"):
        raise BadRequest(
            "validate_doc_update is not supported: this server does not run JavaScript "
            "validation functions, so the design document would not protect anything. "
            "Who may write what is decided by each worker's places."
        )
    path = _history(raw, new_edits)
    rev = raw.get("_rev") if new_edits else path[0]
    if rev is not None:
        revtree.parse_rev(rev)
    deleted = raw.get("_deleted", False) is True
    place = raw.get("place")
    if place is not None and not isinstance(place, str):
        raise BadRequest("place must be a string (a place id)")
    attachments = raw.get("_attachments") or {}
    body = {k: v for k, v in raw.items() if k not in DROPPED_ON_WRITE and k != "_attachments"}
    return IncomingDoc(ident, rev, path, deleted, place, body, attachments, new_edits)


def _history(raw: dict[str, Any], new_edits: bool) -> list[str]:
    """The revision path of a replicated write, newest first; ``[_rev]`` or ``[]`` for an edit.

    ``_revisions`` wins over ``_rev`` when both are sent, whatever their order
    (``couch_doc:transfer_fields`` ignores a ``_rev`` once the history is known).
    """
    rev = raw.get("_rev")
    if new_edits:
        return [rev] if isinstance(rev, str) else []
    revisions = raw.get("_revisions")
    if revisions is not None:
        return revtree.path_from_revisions(revisions["start"], revisions["ids"])
    if not isinstance(rev, str):
        raise BadRequest("Invalid rev format")
    revtree.parse_rev(rev)
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
