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
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, replace
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


def _where(
    filters: Filters, places: frozenset[str] | None, incoming: bool
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
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
    if not incoming and filters.kind:
        clauses.append("kind=?")
        params.append(filters.kind)
    stamp = "received_at" if incoming else "created_at"
    if filters.since:
        clauses.append(f"{stamp}>=?")
        params.append(filters.since)
    if filters.until:
        clauses.append(f"{stamp}<?")
        params.append(filters.until)
    seq = "id" if incoming else "rowid"  # outgoing: only when paged by it (outgoing_rows)
    if filters.before is not None:
        clauses.append(f"{seq}<?")
        params.append(filters.before)
    if filters.after is not None:
        clauses.append(f"{seq}>?")
        params.append(filters.after)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def incoming_rows(
    conn: sqlite3.Connection, filters: Filters, places: frozenset[str] | None
) -> list[dict[str, Any]]:
    where, params = _where(filters, places, incoming=True)
    order = "ASC" if filters.after is not None else "DESC"  # paging forward: nearest first
    rows = conn.execute(
        f"SELECT {', '.join(INCOMING_COLUMNS)} FROM sms_incoming{where} "
        f"ORDER BY id {order} LIMIT ?",
        [*params, filters.limit],
    ).fetchall()
    found = [dict(zip(INCOMING_COLUMNS, row, strict=True)) for row in rows]
    for row in found:
        row["seq"] = row["id"]
    return found if order == "DESC" else found[::-1]


def outgoing_rows(
    conn: sqlite3.Connection,
    filters: Filters,
    places: frozenset[str] | None,
    by_seq: bool = False,
) -> list[dict[str, Any]]:
    """Outgoing messages, newest first: by time queued (the JSON API, whose ``before`` and
    ``after`` name incoming messages), or by row number, paged by it (``by_seq``: the page)."""
    if not by_seq:
        filters = replace(filters, before=None, after=None)
    where, params = _where(filters, places, incoming=False)
    if not by_seq:
        order = "created_at DESC, id"
    else:
        order = "rowid ASC" if filters.after is not None else "rowid DESC"
    rows = conn.execute(
        f"SELECT rowid, {', '.join(OUTGOING_COLUMNS)} FROM sms_outgoing{where} "
        f"ORDER BY {order} LIMIT ?",
        [*params, filters.limit],
    ).fetchall()
    found = [{"seq": row[0], **dict(zip(OUTGOING_COLUMNS, row[1:], strict=True))} for row in rows]
    return found[::-1] if filters.after is not None else found


def incoming_one(
    conn: sqlite3.Connection, message_id: int, places: frozenset[str] | None
) -> dict[str, Any] | None:
    """One incoming message, if ``places`` (None: all) may see it (unplaced ones: any staff)."""
    where, params = _where(Filters(), places, incoming=True)
    where += (" AND " if where else " WHERE ") + "id=?"
    row = conn.execute(
        f"SELECT {', '.join(INCOMING_COLUMNS)} FROM sms_incoming{where}", [*params, message_id]
    ).fetchone()
    return None if row is None else dict(zip(INCOMING_COLUMNS, row, strict=True))


def caused_by(conn: sqlite3.Connection, message_id: int) -> list[dict[str, Any]]:
    """The replies and reminders an incoming message caused, in the order they are due."""
    rows = conn.execute(
        f"SELECT {', '.join(OUTGOING_COLUMNS)} FROM sms_outgoing WHERE incoming_id=? "
        "ORDER BY due_at, id",
        (message_id,),
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
