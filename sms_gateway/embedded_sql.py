"""The embedded SMS adapter's SQL: plain functions over a connection (sms_gateway.embedded
runs them on the store's threads; no other module reads these tables).

    sms_incoming   every message received, stored before it is parsed; ``state`` is
                   ``stored`` until processed, then ``processed`` with its ``outcome``.
                   (channel, external_id) is unique: a gateway's repeats are ignored.
                   ``key`` names the documents the message creates, so processing it
                   again after a crash finds them instead of writing twice.
    sms_outgoing   replies and reminders; ``state`` follows sms_gateway.outgoing
    sms_workers    a worker's reply language

Patient IDs come from barcode's patient-ID port (barcode.ports); the service
records each on its message once allocated.

Message texts (which name patients) are sealed with the vault (``key_ref`` +
``content``/``details``); phone numbers, ids, places and outcomes stay in the
clear to route and filter.  Timestamps are UTC ISO strings (:func:`iso`), so
they compare as text.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from sms_gateway.listing import INCOMING_COLUMNS, OUTGOING_COLUMNS, Filters
from sms_gateway.outgoing import OutEvent, OutState, RetryPolicy, step
from sms_gateway.ports import (
    Finished,
    NewIncoming,
    NewOutgoing,
    Offered,
    Queue,
    StoredIncoming,
    from_iso,
    iso,
)

__all__ = ["Finished", "NewIncoming", "NewOutgoing", "Offered", "Queue", "StoredIncoming", "iso"]

TABLES = (
    """CREATE TABLE IF NOT EXISTS sms_incoming(
        id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, channel TEXT NOT NULL,
        external_id TEXT NOT NULL, phone TEXT NOT NULL, key_ref TEXT NOT NULL,
        content BLOB NOT NULL, sent_at TEXT, received_at TEXT NOT NULL, stored_at TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'stored', attempts INTEGER NOT NULL DEFAULT 0,
        retry_at TEXT, patient_id TEXT, outcome TEXT, form TEXT, worker TEXT, device TEXT,
        place TEXT, problems TEXT, details_ref TEXT, details BLOB, docs TEXT, processed_at TEXT,
        UNIQUE(channel, external_id))""",
    "CREATE INDEX IF NOT EXISTS sms_incoming_todo ON sms_incoming(state, id)",
    "CREATE INDEX IF NOT EXISTS sms_incoming_place ON sms_incoming(place, id)",
    "CREATE INDEX IF NOT EXISTS sms_incoming_worker ON sms_incoming(worker, id)",
    """CREATE TABLE IF NOT EXISTS sms_outgoing(
        id TEXT PRIMARY KEY, channel TEXT NOT NULL, phone TEXT NOT NULL, kind TEXT NOT NULL,
        key_ref TEXT NOT NULL, content BLOB NOT NULL, state TEXT NOT NULL, due_at TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 1, offers INTEGER NOT NULL DEFAULT 0,
        offered_at TEXT, provider_id TEXT, reason TEXT, incoming_id INTEGER, worker TEXT,
        place TEXT, patient_id TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS sms_outgoing_due ON sms_outgoing(channel, state, due_at)",
    "CREATE INDEX IF NOT EXISTS sms_outgoing_patient ON sms_outgoing(patient_id, state)",
    "CREATE INDEX IF NOT EXISTS sms_outgoing_place ON sms_outgoing(place, created_at)",
    "CREATE INDEX IF NOT EXISTS sms_outgoing_provider ON sms_outgoing(provider_id)",
    "CREATE INDEX IF NOT EXISTS sms_outgoing_phone ON sms_outgoing(phone, kind, created_at)",
    "CREATE INDEX IF NOT EXISTS sms_outgoing_incoming ON sms_outgoing(incoming_id)",
    "CREATE TABLE IF NOT EXISTS sms_workers(worker TEXT PRIMARY KEY, language TEXT NOT NULL)",
)


def create_tables(conn: sqlite3.Connection) -> None:
    for statement in TABLES:
        conn.execute(statement)


# -- incoming ---------------------------------------------------------------------------------
def insert_incoming(
    conn: sqlite3.Connection, messages: Sequence[NewIncoming], now: dt.datetime
) -> int:
    """Store messages not seen before (by channel and id); how many were new."""
    before = conn.total_changes
    conn.executemany(
        "INSERT OR IGNORE INTO sms_incoming(key, channel, external_id, phone, key_ref, content, "
        "sent_at, received_at, stored_at) VALUES(?,?,?,?,?,?,?,?,?)",
        [
            (
                m.key,
                m.channel,
                m.external_id,
                m.phone,
                m.key_ref,
                m.content,
                None if m.sent_at is None else iso(m.sent_at),
                iso(m.received_at),
                iso(now),
            )
            for m in messages
        ],
    )
    return conn.total_changes - before


def unprocessed(conn: sqlite3.Connection, now: dt.datetime, limit: int) -> list[StoredIncoming]:
    rows = conn.execute(
        "SELECT id, key, channel, phone, key_ref, content, received_at, attempts, patient_id "
        "FROM sms_incoming WHERE state='stored' AND (retry_at IS NULL OR retry_at<=?) "
        "ORDER BY id LIMIT ?",
        (iso(now), limit),
    ).fetchall()
    return [
        StoredIncoming(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), from_iso(r[6]), r[7], r[8])
        for r in rows
    ]


def count_unprocessed(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM sms_incoming WHERE state='stored'").fetchone()[0])


def assign_patient_ids(conn: sqlite3.Connection, assigned: dict[int, str]) -> dict[int, str]:
    """Record each ID on its message unless it has one; the ID each message now carries."""
    conn.executemany(
        "UPDATE sms_incoming SET patient_id=? WHERE id=? AND patient_id IS NULL",
        [(pid, incoming_id) for incoming_id, pid in assigned.items()],
    )
    carried = {}
    for incoming_id in assigned:
        row = conn.execute("SELECT patient_id FROM sms_incoming WHERE id=?", (incoming_id,))
        found = row.fetchone()
        if found is not None and found[0] is not None:
            carried[incoming_id] = str(found[0])
    return carried


def finish(
    conn: sqlite3.Connection,
    done: Sequence[Finished],
    outgoing: Sequence[NewOutgoing],
    clear_reminders_of: Iterable[str],
    now: dt.datetime,
) -> None:
    conn.executemany(
        "UPDATE sms_incoming SET state='processed', outcome=?, form=?, worker=?, device=?, "
        "place=?, patient_id=coalesce(?, patient_id), problems=?, details_ref=?, details=?, "
        "docs=?, processed_at=?, retry_at=NULL WHERE id=? AND state='stored'",
        [
            (
                d.outcome,
                d.form,
                d.worker,
                d.device,
                d.place,
                d.patient_id,
                json.dumps(list(d.problems)),
                d.details_ref,
                d.details,
                json.dumps(list(d.docs)),
                iso(now),
                d.incoming_id,
            )
            for d in done
        ],
    )
    insert_outgoing(conn, outgoing, now)
    for patient_id in clear_reminders_of:
        clear_reminders(conn, patient_id, now)


def postpone(conn: sqlite3.Connection, incoming_id: int, retry_at: dt.datetime) -> int:
    """Count a failed processing attempt; the message is tried again at ``retry_at``."""
    conn.execute(
        "UPDATE sms_incoming SET attempts=attempts+1, retry_at=? WHERE id=?",
        (iso(retry_at), incoming_id),
    )
    row = conn.execute("SELECT attempts FROM sms_incoming WHERE id=?", (incoming_id,)).fetchone()
    return int(row[0]) if row else 0


# -- outgoing ---------------------------------------------------------------------------------
def insert_outgoing(
    conn: sqlite3.Connection, messages: Sequence[NewOutgoing], now: dt.datetime
) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO sms_outgoing(id, channel, phone, kind, key_ref, content, state, "
        "due_at, incoming_id, worker, place, patient_id, created_at, updated_at) "
        "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            (
                m.id,
                m.channel,
                m.phone,
                m.kind,
                m.key_ref,
                m.content,
                OutState.PENDING.value,
                iso(m.due_at),
                m.incoming_id,
                m.worker,
                m.place,
                m.patient_id,
                iso(now),
                iso(now),
            )
            for m in messages
        ],
    )


def take_due(
    conn: sqlite3.Connection, channel: str, now: dt.datetime, limit: int, reminders: bool
) -> list[Offered]:
    """Pending messages due by ``now`` (reminders only when ``reminders``), now forwarded."""
    rows = conn.execute(
        "SELECT id, attempt, phone, key_ref, content FROM sms_outgoing "
        "WHERE channel=? AND state='pending' AND due_at<=? "
        + ("" if reminders else "AND kind!='reminder' ")
        + "ORDER BY due_at, id LIMIT ?",
        (channel, iso(now), limit),
    ).fetchall()
    conn.executemany(
        "UPDATE sms_outgoing SET state='forwarded', offers=offers+1, offered_at=?, updated_at=? "
        "WHERE id=?",
        [(iso(now), iso(now), r[0]) for r in rows],
    )
    return [Offered(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]


def apply_event(
    conn: sqlite3.Connection,
    message_id: str,
    attempt: int | None,
    event: OutEvent,
    policy: RetryPolicy,
    now: dt.datetime,
    reason: str | None = None,
) -> OutState | None:
    """Move one message on ``event``; None when it is unknown, stale or unchanged."""
    row = conn.execute(
        "SELECT state, attempt, offers FROM sms_outgoing WHERE id=?", (message_id,)
    ).fetchone()
    if row is None or (attempt is not None and attempt != row[1]):
        return None  # another message, or an update about an attempt already retried
    moved = step(OutState(row[0]), event, row[1], row[2], policy)
    if moved is None:
        return None
    conn.execute(
        "UPDATE sms_outgoing SET state=?, attempt=attempt+?, offers=CASE WHEN ? THEN 0 "
        "ELSE offers END, reason=coalesce(?, reason), updated_at=? WHERE id=?",
        (
            moved.state.value,
            1 if moved.new_attempt else 0,
            moved.new_attempt,
            f"{moved.reason} (last: {reason})"
            if moved.reason and reason
            else moved.reason or reason,
            iso(now),
            message_id,
        ),
    )
    return moved.state


def silent_since(conn: sqlite3.Connection, cutoff: dt.datetime) -> list[str]:
    """Forwarded messages with no status since ``cutoff`` (due to be offered again)."""
    rows = conn.execute(
        "SELECT id FROM sms_outgoing WHERE state='forwarded' AND offered_at<=?", (iso(cutoff),)
    ).fetchall()
    return [r[0] for r in rows]


def set_provider_id(conn: sqlite3.Connection, message_id: str, provider_id: str) -> None:
    conn.execute("UPDATE sms_outgoing SET provider_id=? WHERE id=?", (provider_id, message_id))


def by_provider_id(conn: sqlite3.Connection, provider_id: str) -> tuple[str, int] | None:
    row = conn.execute(
        "SELECT id, attempt FROM sms_outgoing WHERE provider_id=?", (provider_id,)
    ).fetchone()
    return None if row is None else (row[0], row[1])


def noticed(conn: sqlite3.Connection, phones: Iterable[str], since: dt.datetime) -> set[str]:
    """Which of ``phones`` were sent a notice (kind ``notice``) since ``since``."""
    found = set()
    for phone in set(phones):
        row = conn.execute(
            "SELECT 1 FROM sms_outgoing WHERE phone=? AND kind='notice' AND created_at>=? LIMIT 1",
            (phone, iso(since)),
        ).fetchone()
        if row is not None:
            found.add(phone)
    return found


def clear_reminders(conn: sqlite3.Connection, patient_id: str, now: dt.datetime) -> int:
    cursor = conn.execute(
        "UPDATE sms_outgoing SET state='cleared', updated_at=? "
        "WHERE patient_id=? AND kind='reminder' AND state='pending'",
        (iso(now), patient_id),
    )
    return cursor.rowcount


# -- workers ----------------------------------------------------------------------------------
def set_language(conn: sqlite3.Connection, worker: str, language: str) -> None:
    conn.execute(
        "INSERT INTO sms_workers(worker, language) VALUES(?,?) "
        "ON CONFLICT(worker) DO UPDATE SET language=excluded.language",
        (worker, language),
    )


def languages(conn: sqlite3.Connection, workers: Iterable[str]) -> dict[str, str]:
    names = sorted(set(workers))
    if not names:
        return {}
    marks = ",".join("?" * len(names))
    rows = conn.execute(
        f"SELECT worker, language FROM sms_workers WHERE worker IN ({marks})", names
    ).fetchall()
    return {r[0]: r[1] for r in rows}


# -- listing (supervisors) ----------------------------------------------------------------------
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


# -- queues (metrics) -------------------------------------------------------------------------
_QUEUES = (
    ("incoming", "SELECT count(*), min(stored_at) FROM sms_incoming WHERE state='stored'", False),
    ("outgoing_due", "SELECT count(*), min(due_at) FROM sms_outgoing "
     "WHERE state='pending' AND due_at<=?", True),
    ("outgoing_forwarded", "SELECT count(*), min(offered_at) FROM sms_outgoing "
     "WHERE state='forwarded'", False),
)  # fmt: skip


def queues(conn: sqlite3.Connection, moment: dt.datetime) -> list[Queue]:
    """Messages waiting: received but not processed, replies and reminders due but not handed
    to a gateway, and handed to one but not confirmed (no content, no phone number)."""
    found = []
    for name, sql, timed in _QUEUES:
        depth, oldest = conn.execute(sql, (iso(moment),) if timed else ()).fetchone()
        found.append(Queue(name, int(depth), None if oldest is None else from_iso(oldest)))
    return found


def counts(conn: sqlite3.Connection) -> dict[str, list[tuple[str, str, int]]]:
    """Incoming by (state, outcome), outgoing by (kind, state): ``fieldsync sms status``."""
    incoming = conn.execute(
        "SELECT state, coalesce(outcome, '-'), count(*) FROM sms_incoming GROUP BY 1, 2 "
        "ORDER BY 1, 2"
    ).fetchall()
    outgoing = conn.execute(
        "SELECT kind, state, count(*) FROM sms_outgoing GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    return {
        "incoming": [(str(a), str(b), int(n)) for a, b, n in incoming],
        "outgoing": [(str(a), str(b), int(n)) for a, b, n in outgoing],
    }
