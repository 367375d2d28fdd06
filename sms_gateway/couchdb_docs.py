"""The documents of the CouchDB SMS adapter (sms_gateway.couchdb): their shapes, views,
and how they become the port's values and the listing's rows."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import orjson

from sms_gateway.listing import INCOMING_COLUMNS, OUTGOING_COLUMNS
from sms_gateway.outgoing import OutState
from sms_gateway.ports import Finished, Queue, Row, StoredIncoming, from_iso, iso
from sync.errors import StoreError

Doc = dict[str, Any]
VIEWS = {
    "todo": "if (doc.type === 'in' && doc.state === 'stored') emit(doc.due, doc.stored_at);",
    "by_num": "if (doc.type === 'in') emit(doc.id, null);",
    "due": "if (doc.type === 'out' && doc.state === 'pending') "
    "emit([doc.channel, doc.kind === 'reminder', doc.due_at], null);",
    "pending": "if (doc.type === 'out' && doc.state === 'pending') emit(doc.due_at, null);",
    "forwarded": "if (doc.type === 'out' && doc.state === 'forwarded') emit(doc.offered_at, null);",
    "provider": "if (doc.type === 'out' && doc.provider_id) emit(doc.provider_id, null);",
    "notices": "if (doc.type === 'out' && doc.kind === 'notice') emit([doc.phone, doc.created_at]"
    ", null);",
    "reminders": "if (doc.type === 'out' && doc.kind === 'reminder' && doc.state === 'pending') "
    "emit(doc.patient_id, null);",
    "caused": "if (doc.type === 'out' && doc.incoming_id !== null) "
    "emit([doc.incoming_id, doc.due_at, doc.id], null);",
    "out_seq": "if (doc.type === 'out') emit(doc.seq, null);",
}
COUNTS = (
    "if (doc.type === 'in') emit(['incoming', doc.state, doc.outcome || '-'], null); "
    "if (doc.type === 'out') emit(['outgoing', doc.kind, doc.state], null);"
)


def docs(rows: list[Doc]) -> list[Doc]:
    return [row["doc"] for row in rows if row.get("doc")]


def due(doc: Mapping[str, Any], channel: str, now: str, reminders: bool) -> bool:
    """Still pending and due (the view row that found it may be older than the document)."""
    return (
        doc.get("state") == OutState.PENDING.value
        and doc.get("channel") == channel
        and str(doc.get("due_at")) <= now
        and (reminders or doc.get("kind") != "reminder")
    )


def provider_doc_id(provider_id: str) -> str:
    """The pointer from a provider's message id to our message: read by id (a quorum read),
    so a delivery report through any instance finds a message sent a moment ago, which a
    view on a cluster may not list yet."""
    return "pid:" + hashlib.sha256(provider_id.encode()).hexdigest()[:40]


def reminders_doc_id(patient_id: str) -> str:
    """The pointer from a patient to their reminders (``{"type": "rem", "reminders": [id,
    ...]}``), read by id (a quorum read): a delivery reported through any instance a moment
    after the registration that made a reminder clears it, which the ``reminders`` view on
    a cluster may not list yet (that reminder would then go out)."""
    return "rem:" + hashlib.sha256(patient_id.encode()).hexdigest()[:40]


def reminder_ids(leaves: list[Doc]) -> set[str]:
    """The reminders a patient's pointer names, in every leaf (two instances adding at once
    on a cluster may each leave one)."""
    return {str(i) for leaf in leaves for i in leaf.get("reminders") or ()}


def incoming_doc_id(channel: str, external_id: str) -> str:
    """One id per (channel, gateway id): a repeat is the same document."""
    digest = hashlib.sha256(f"{channel}\x1f{external_id}".encode()).hexdigest()[:40]
    return f"in:{digest}"


def checked(result: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    """A ``_bulk_docs`` result: created, or a conflict (already there); anything else raises."""
    if "error" in result and result["error"] != "conflict":
        raise StoreError(
            f"CouchDB refused an SMS {what} ({result.get('id')}): "
            f"{result['error']}: {result.get('reason', '')}"
        )
    return result


def processed(doc: Doc, f: Finished, now: dt.datetime, by: str | None) -> Doc | None:
    if doc.get("state") != "stored":
        return None  # finished already (by whoever claimed it after a lease ran out)
    return {
        **doc,
        "state": "processed",
        "outcome": f.outcome,
        "form": f.form,
        "worker": f.worker,
        "device": f.device,
        "place": f.place,
        "patient_id": f.patient_id or doc.get("patient_id"),
        "problems": json.dumps(list(f.problems)),
        "details_ref": f.details_ref,
        "details": b64(f.details),
        "docs": json.dumps(list(f.docs)),
        "processed_at": iso(now),
        "processed_by": by,
        "retry_at": None,
        "lease": None,
    }


def stored(doc: Mapping[str, Any]) -> StoredIncoming:
    return StoredIncoming(
        int(doc["id"]),
        doc["key"],
        doc["channel"],
        doc["phone"],
        doc["key_ref"],
        unb64(doc["content"]),
        from_iso(doc["received_at"]),
        int(doc["attempts"]),
        doc.get("patient_id"),
    )


def incoming_row(doc: Mapping[str, Any]) -> Row:
    row = {name: doc.get(name) for name in INCOMING_COLUMNS}
    row["content"] = unb64(doc["content"])
    row["details"] = unb64(doc["details"]) if doc.get("details") else None
    row["seq"] = row["id"]
    return row


def outgoing_row(doc: Mapping[str, Any]) -> Row:
    row = {name: doc.get(name) for name in OUTGOING_COLUMNS}
    row["content"] = unb64(doc["content"])
    return row


def queue(name: str, moments: list[str]) -> Queue:
    times = sorted(m for m in moments if m)
    return Queue(name, len(moments), from_iso(times[0]) if times else None)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def key(value: object) -> str:
    return orjson.dumps(value).decode()
