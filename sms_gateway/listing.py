"""What supervisors see: incoming messages with their outcome, outgoing ones with their state.

A supervisor sees the messages of the places in their read scope, and the
messages nobody could place (unknown senders: someone has to register those
phones); an admin sees everything.  Filters: ``worker``, ``place`` (with the
places below it), ``form``, ``outcome``, ``state``; newest first, ``limit``
rows, ``before`` an id to page back.
"""

from __future__ import annotations

import json
import sqlite3
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
    "unknown_patient",
    "no_place",
    "failed",
)
STATES = ("pending", "forwarded", "sent", "delivered", "failed", "cleared")
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

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        def text(name: str) -> str | None:
            value = query.get(name, "").strip()
            return value or None

        try:
            limit = int(query.get("limit") or 100)
            before = int(query["before"]) if query.get("before") else None
        except ValueError as exc:
            raise BadRequest("limit and before must be integers") from exc
        if before is not None and not 1 <= before <= MAX_ID:  # SQLite's integers end there
            raise BadRequest(f"before must be a message id: a whole number from 1 to {MAX_ID}")
        outcome, state = text("outcome"), text("state")
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
        )


def _where(
    filters: Filters, places: frozenset[str] | None, incoming: bool
) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if places is not None:
        marks = ",".join("?" * len(places))
        unplaced = incoming and filters.place is None  # unknown senders, unless a place is asked
        clause = f"place IN ({marks})"
        clauses.append(f"(place IS NULL OR {clause})" if unplaced else clause)
        params += sorted(places)
    if filters.worker:
        clauses.append("worker=?")
        params.append(filters.worker)
    if incoming and filters.form:
        clauses.append("form=?")
        params.append(filters.form)
    if incoming and filters.outcome:
        clauses.append("outcome=?")
        params.append(filters.outcome)
    if not incoming and filters.state:
        clauses.append("state=?")
        params.append(filters.state)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def incoming_rows(
    conn: sqlite3.Connection, filters: Filters, places: frozenset[str] | None
) -> list[dict[str, Any]]:
    where, params = _where(filters, places, incoming=True)
    if filters.before is not None:
        where += (" AND " if where else " WHERE ") + "id<?"
        params.append(filters.before)
    rows = conn.execute(
        f"SELECT {', '.join(INCOMING_COLUMNS)} FROM sms_incoming{where} ORDER BY id DESC LIMIT ?",
        [*params, filters.limit],
    ).fetchall()
    return [dict(zip(INCOMING_COLUMNS, row, strict=True)) for row in rows]


def outgoing_rows(
    conn: sqlite3.Connection, filters: Filters, places: frozenset[str] | None
) -> list[dict[str, Any]]:
    where, params = _where(filters, places, incoming=False)
    rows = conn.execute(
        f"SELECT {', '.join(OUTGOING_COLUMNS)} FROM sms_outgoing{where} "
        "ORDER BY created_at DESC, id LIMIT ?",
        [*params, filters.limit],
    ).fetchall()
    return [dict(zip(OUTGOING_COLUMNS, row, strict=True)) for row in rows]


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
