"""Where sealed blobs live in CouchDB, for data-key rotation (:mod:`sync.couchrotation`).

The CouchDB counterpart of :data:`sync.datakeys.embedded_rotation.CORE`: each :class:`SealedDocs`
names a range of document ids in a CouchDB database, and how to find the sealed
blobs (key ref, blob, associated data) in one of those documents and put
re-sealed ones back.  The core's (docs/adr/0001-couchdb-layout.md)::

    P D $data   r:REV:ID        {key_ref, body}                     document bodies
                a:DIGEST:PLACE  {key_ref} + attachment "blob"       attachments
                l:HASH          {owner, id, body: LOCAL_SEALED ref NUL blob}   checkpoints
    P D         d:ID            {wb: {rev, key_ref, body}}          winners' bodies held inline

A package whose CouchDB adapter keeps sealed blobs of its own (SMS texts in
``<prefix>sms``) registers a :class:`SealedDocs` as ``couch_sealed_blobs``
(:mod:`sync.extensions`), beside its SQLite columns (``sealed_blobs``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sync.replication.context import LOCAL_SEALED, local_name
from sync.store.couchdb import layout
from sync.vault import attachment_aad, body_aad

Doc = dict[str, Any]
HIGH = "\ufff0"


@dataclass(frozen=True)
class Slot:
    """One sealed blob in a document: ``name`` says where it goes back."""

    name: str
    key_ref: str
    blob: bytes
    aad: bytes


@dataclass(frozen=True)
class SealedDocs:
    """Documents ``low`` to ``high`` (ids) of one CouchDB database that hold sealed blobs.

    ``databases(prefix, dbs)``: the CouchDB databases, each with the fieldsync
    database name its associated data uses ("" when none); ``slots(db, doc)``:
    the doc's sealed blobs; ``replaced(doc, new)``: the document to write back,
    ``new`` giving each slot's new ``(key_ref, blob)``.  ``page``: documents read
    at a time; ``attachments``: read them with their attachments inline.
    """

    name: str
    databases: Callable[[str, Sequence[str]], list[tuple[str, str]]]
    low: str
    high: str
    slots: Callable[[str, Doc], list[Slot]]
    replaced: Callable[[Doc, Mapping[str, tuple[str, bytes]]], Doc]
    page: int = 200
    attachments: bool = False


def _data_dbs(prefix: str, dbs: Sequence[str]) -> list[tuple[str, str]]:
    return [(layout.data_db(prefix, db), db) for db in dbs]


def _meta_dbs(prefix: str, dbs: Sequence[str]) -> list[tuple[str, str]]:
    return [(layout.meta_db(prefix, db), db) for db in dbs]


# -- document bodies ---------------------------------------------------------------------
def _body_slots(db: str, doc: Doc) -> list[Slot]:
    _, rev, doc_id = str(doc["_id"]).split(":", 2)
    blob = layout.unb64(doc["body"])
    return [Slot("body", str(doc["key_ref"]), blob, body_aad(db, doc_id, rev))]


def _body_replaced(doc: Doc, new: Mapping[str, tuple[str, bytes]]) -> Doc:
    ref, blob = new["body"]
    return {**doc, "key_ref": ref, "body": layout.b64(blob)}


# -- attachments -------------------------------------------------------------------------
def _attachment_slots(db: str, doc: Doc) -> list[Slot]:
    _, digest, place = str(doc["_id"]).split(":", 2)
    blob = layout.unb64(doc["_attachments"]["blob"]["data"])
    return [Slot("blob", str(doc["key_ref"]), blob, attachment_aad(db, place, digest))]


def _attachment_replaced(doc: Doc, new: Mapping[str, tuple[str, bytes]]) -> Doc:
    ref, blob = new["blob"]
    old = doc["_attachments"]["blob"]
    content_type = old.get("content_type", "application/octet-stream")
    attachment = {"content_type": content_type, "data": layout.b64(blob)}
    return {**doc, "key_ref": ref, "_attachments": {"blob": attachment}}


# -- checkpoints -------------------------------------------------------------------------
def _local_slots(db: str, doc: Doc) -> list[Slot]:
    raw = layout.unb64(doc["body"])
    if not raw.startswith(LOCAL_SEALED):
        return []  # an old plain-JSON checkpoint: nothing sealed
    ref, _, sealed = raw[len(LOCAL_SEALED) :].partition(b"\x00")
    aad = body_aad(db, local_name(str(doc["owner"]), str(doc["id"])), "")
    return [Slot("body", ref.decode(), sealed, aad)]


def _local_replaced(doc: Doc, new: Mapping[str, tuple[str, bytes]]) -> Doc:
    ref, blob = new["body"]
    raw = LOCAL_SEALED + ref.encode() + b"\x00" + blob
    return {**doc, "body": layout.b64(raw)}


# -- winners' bodies held in the metas ----------------------------------------------------
def _held_slots(db: str, doc: Doc) -> list[Slot]:
    held = doc.get("wb")
    if not isinstance(held, dict):
        return []
    doc_id = str(doc["_id"])[len(layout.META_PREFIX) :]
    aad = body_aad(db, doc_id, str(held["rev"]))
    return [Slot("wb", str(held["key_ref"]), layout.unb64(held["body"]), aad)]


def _held_replaced(doc: Doc, new: Mapping[str, tuple[str, bytes]]) -> Doc:
    ref, blob = new["wb"]
    return {**doc, "wb": {**doc["wb"], "key_ref": ref, "body": layout.b64(blob)}}


CORE: tuple[SealedDocs, ...] = (
    SealedDocs("document bodies", _data_dbs, "r:", "r:" + HIGH, _body_slots, _body_replaced),
    SealedDocs(
        "attachments",
        _data_dbs,
        "a:",
        "a:" + HIGH,
        _attachment_slots,
        _attachment_replaced,
        page=10,
        attachments=True,
    ),
    SealedDocs("checkpoints", _data_dbs, "l:", "l:" + HIGH, _local_slots, _local_replaced),
    SealedDocs(
        "bodies held by metas",
        _meta_dbs,
        layout.META_PREFIX,
        layout.META_PREFIX + HIGH,
        _held_slots,
        _held_replaced,
    ),
)


def sealed_docs(packages: Sequence[SealedDocs]) -> tuple[SealedDocs, ...]:
    """The core's sealed documents, then the packages'."""
    return (*CORE, *packages)
