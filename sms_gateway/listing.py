"""What supervisors see: incoming messages with their outcome, outgoing ones with their state.

A supervisor sees the messages of the places in their read scope, and the
messages nobody could place (unknown senders: someone has to register those
phones); an admin sees everything.  Filters: ``worker``, ``place`` (with the
places below it), ``form``, ``outcome``, ``state``, ``kind`` (outgoing),
``since``/``until`` (UTC ISO times: received, or queued); newest first,
``limit`` rows, ``before`` a row's ``seq`` to page back, ``after`` one to page
forward (``seq`` is the incoming id; for outgoing messages, their row number).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sms_gateway.sealing import Sealer
from sync.errors import BadRequest

MAX_LIMIT = 500
MAX_ID = 2**63 - 1
OUTCOMES = (
    "registered",
    "recorded",
    "invalid",
    "unknown_sender",
    "lost_phone",
    "unknown_patient",
    "no_place",
    "failed",
)
STATES = ("pending", "forwarded", "sent", "delivered", "failed", "cleared")
KINDS = ("reply", "reminder", "notice")
INCOMING_COLUMNS = (
    "id",
    "key",
    "channel",
    "external_id",
    "phone",
    "key_ref",
    "content",
    "received_at",
    "state",
    "outcome",
    "form",
    "worker",
    "device",
    "place",
    "patient_id",
    "problems",
    "details_ref",
    "details",
    "docs",
    "processed_at",
)
OUTGOING_COLUMNS = (
    "id",
    "channel",
    "phone",
    "kind",
    "key_ref",
    "content",
    "state",
    "due_at",
    "attempt",
    "offers",
    "reason",
    "worker",
    "place",
    "patient_id",
    "created_at",
    "updated_at",
)


@dataclass(frozen=True)
class Filters:
    worker: str | None = None
    place: str | None = None
    form: str | None = None
    outcome: str | None = None
    state: str | None = None
    limit: int = 100
    before: int | None = None
    after: int | None = None
    kind: str | None = None
    since: str | None = None
    until: str | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        def text(name: str) -> str | None:
            value = query.get(name, "").strip()
            return value or None

        try:
            limit = int(query.get("limit") or 100)
            before = int(query["before"]) if query.get("before") else None
            after = int(query["after"]) if query.get("after") else None
        except ValueError as exc:
            raise BadRequest("limit, before and after must be integers") from exc
        for name, cursor in (("before", before), ("after", after)):
            if cursor is not None and not 1 <= cursor <= MAX_ID:  # SQLite's integers end there
                raise BadRequest(f"{name} must be a message id: a whole number from 1 to {MAX_ID}")
        outcome, state, kind = text("outcome"), text("state"), text("kind")
        if kind is not None and kind not in KINDS:
            raise BadRequest(f"kind must be one of {', '.join(KINDS)}")
        if outcome is not None and outcome not in OUTCOMES:
            raise BadRequest(f"outcome must be one of {', '.join(OUTCOMES)}")
        if state is not None and state not in STATES:
            raise BadRequest(f"state must be one of {', '.join(STATES)}")
        form = text("form")
        return cls(
            text("worker"),
            text("place"),
            form.upper() if form else None,
            outcome,
            state,
            max(1, min(limit, MAX_LIMIT)),
            before,
            after,
            kind,
        )


def open_incoming(row: dict[str, Any], sealer: Sealer) -> dict[str, Any]:
    """A row as JSON for supervisors, its sealed texts opened."""
    key = row.pop("key")
    content = sealer.open(f"in:{key}", row.pop("key_ref"), bytes(row["content"]))
    row["content"] = content["content"]
    details, details_ref = row.pop("details"), row.pop("details_ref")
    opened = sealer.open(f"details:{key}", details_ref, bytes(details)) if details else {}
    row["reply"] = opened.get("reply")
    row["detail"] = opened.get("detail")
    row["problems"] = json.loads(row["problems"]) if row["problems"] else []
    row["docs"] = json.loads(row["docs"]) if row["docs"] else []
    return row


def open_outgoing(row: dict[str, Any], sealer: Sealer) -> dict[str, Any]:
    key_ref = row.pop("key_ref")
    row["content"] = sealer.open(f"out:{row['id']}", key_ref, bytes(row["content"]))["content"]
    return row


def matches(
    row: Mapping[str, Any], filters: Filters, places: frozenset[str] | None, incoming: bool
) -> bool:
    """Whether a row passes ``filters`` and ``places``: the embedded adapter's WHERE clause
    (sms_gateway.embedded_sql), for adapters that filter rows themselves (``seq`` bounds
    included)."""
    place = row.get("place")
    if places is not None:
        unplaced = incoming and filters.place is None  # unknown senders, unless a place is asked
        if not (place in places or (unplaced and place is None)):
            return False
    wanted = [("worker", filters.worker)]
    wanted += [("form", filters.form), ("outcome", filters.outcome)] if incoming else []
    wanted += [] if incoming else [("state", filters.state), ("kind", filters.kind)]
    if any(value and row.get(name) != value for name, value in wanted):
        return False
    stamp = str(row.get("received_at" if incoming else "created_at") or "")
    if (filters.since and stamp < filters.since) or (filters.until and stamp >= filters.until):
        return False
    seq = int(row.get("seq") or 0)
    if filters.before is not None and seq >= filters.before:
        return False
    return filters.after is None or seq > filters.after
