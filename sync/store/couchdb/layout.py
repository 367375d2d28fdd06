"""Where each piece of a fieldsync database lives in CouchDB (docs/adr/0001-couchdb-layout.md).

One fieldsync database ``D`` is three CouchDB databases, named with the
configured prefix ``P`` (default ``fieldsync_``)::

    P D          one *meta* document per fieldsync document, id "d:" + doc id:
                   {place, v, winner, deleted, leaves, tree, rp, pending?, at}
                 v       the document's version: +1 on every accepted write
                 rp      {rev: place} for every revision whose body is stored
                 pending set while the write's log entry is not yet appended
                 plus the design document ``_design/fieldsync`` (counts, id
                 listings in raw order, the pending sweep)
    P D $data    sealed revision bodies   "r:" rev ":" doc id  {place, deleted, key_ref, body}
                 sealed attachments       "a:" digest ":" place {key_ref, length} + one
                                          CouchDB attachment "blob"
                 checkpoints (_local)     "l:" sha256(owner NUL id)  {owner, id, rev, body}
                 settings                 "settings"  {revs_limit, uuid, created}
    P D $log     the per-place change log: place "!" position (12 digits), created
                 once, never changed:  {ids: [[doc id, v], ...], at}

Bodies are base64 of the sealed bytes (AES-GCM, sealed by :mod:`sync.vault`
before they reach the store): CouchDB never sees plaintext.  Ids, revisions,
places and versions stay in the clear: they are what the layout indexes.
Place ids never contain ``!`` (:data:`sync.scopes.PLACE_ID_RE`), so one place's
entries form one contiguous id range.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

META_PREFIX = "d:"
DESIGN = "_design/fieldsync"
POSITION_DIGITS = 12
SETTINGS = "settings"


def meta_db(prefix: str, db: str) -> str:
    return f"{prefix}{db}"


def data_db(prefix: str, db: str) -> str:
    return f"{prefix}{db}$data"


def log_db(prefix: str, db: str) -> str:
    return f"{prefix}{db}$log"


def meta_id(doc_id: str) -> str:
    return META_PREFIX + doc_id


def body_id(doc_id: str, rev: str) -> str:
    return f"r:{rev}:{doc_id}"


def attachment_id(digest: str, place: str) -> str:
    return f"a:{digest}:{place}"


def local_id(owner: str, doc_id: str) -> str:
    return "l:" + hashlib.sha256(f"{owner}\x00{doc_id}".encode()).hexdigest()


def entry_id(place: str, position: int) -> str:
    return f"{place}!{position:0{POSITION_DIGITS}d}"


def entry_range(place: str) -> tuple[str, str]:
    """The first and last possible entry ids of ``place`` (inclusive)."""
    return entry_id(place, 0), entry_id(place, 10**POSITION_DIGITS - 1)


def entry_position(entry: str) -> int:
    return int(entry.rsplit("!", 1)[1])


def entry_place(entry: str) -> str:
    return entry.rsplit("!", 1)[0]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def live_key(place: str, doc_id: str) -> str:
    """A live document's key in the ``live_by_place`` view: one place's keys form one range."""
    return f"{place}!{doc_id}"


def live_range(place: str) -> tuple[str, str]:
    """Bounds of ``place``'s keys in ``live_by_place``, both outside it (``"`` follows ``!``)."""
    return f"{place}!", f'{place}"'


# The design document of every meta database.  Views are plain JavaScript that
# CouchDB (QuickJS or SpiderMonkey), Cloudant and pouchdb-server all run.  The id
# listings collate raw (code point order, as ``_all_docs`` does), not by Unicode
# collation, so that ``_all_docs`` pages come in the order CouchDB's own would;
# string keys, because raw collation puts objects (a ``{}`` end key) below strings.
# https://docs.couchdb.org/en/stable/ddocs/views/collation.html#raw-collation
_RAW = {"collation": "raw"}
# Raised whenever a view below changes: an instance that finds an older design document
# replaces it; one that finds a newer one (written by a newer fieldsync) leaves it alone.
DESIGN_VERSION = 2
DESIGN_DOC: dict[str, Any] = {
    "_id": DESIGN,
    "language": "javascript",
    "fieldsync_version": DESIGN_VERSION,
    "views": {
        # (deleted, place) -> count: the doc counts of some places, or (group_level 1) of all.
        "counts": {
            "map": "function (doc) { if (doc.tree) {"
            " emit([doc.deleted ? 1 : 0, doc.place], null); } }",
            "reduce": "_count",
        },
        # place "!" doc id of live documents: _all_docs for a worker.
        "live_by_place": {
            "map": "function (doc) { if (doc.tree && !doc.deleted) {"
            " emit(doc.place + '!' + doc._id.substring(2), null); } }",
            "options": _RAW,
        },
        # doc id of live documents: _all_docs for an admin.
        "live": {
            "map": "function (doc) { if (doc.tree && !doc.deleted) {"
            " emit(doc._id.substring(2), null); } }",
            "options": _RAW,
        },
        # Writes whose log entry may be missing, and metas the cluster forked.
        "unsettled": {
            "map": "function (doc) { if (doc.tree && (doc.pending || doc._conflicts)) {"
            " emit(doc.pending || 0, null); } }",
        },
    },
}
