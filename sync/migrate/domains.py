"""The steps of the domains other than documents, each through its CouchDB adapter's layout.

accounts     users and places through ``CouchAccounts.adopt`` (never overwrites),
             their languages, and the sessions (a phone logged in stays logged in)
data keys    through ``CouchDataKeys.add_async``: still wrapped by the master key;
             CouchDB holding *another* key for a place and version stops the run
patient IDs  every ID (issued, reserved, retired), the device blocks, and the
             counters moved at least as far as the embedded ones
SMS          incoming and outgoing messages with their states, workers' languages
devices      nothing yet: the devices port is being built (branch ``devices``)
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence
from typing import Any

from barcode.couchdb import BLOCKS_COUNTER, block_doc_id
from barcode.couchdb import DB_NAME as PATIENT_IDS
from sms_gateway import couchdb_docs as sms_docs
from sms_gateway.couchdb import DB_NAME as SMS
from sms_gateway.couchdb import CouchSms
from sync.datakeys.couchdb import DB_NAME as KEYS
from sync.datakeys.couchdb import CouchDataKeys
from sync.datakeys.couchdb import doc_id as key_doc_id
from sync.errors import Conflict, StoreUnavailable
from sync.migrate import source
from sync.migrate.couch import Doc, Mismatch, always, ensure_db, put_missing
from sync.migrate.progress import Progress
from sync.migrate.steps import Context, Target
from sync.people_store import embedded_tables
from sync.people_store.couchdb import DB_NAME as ACCOUNTS
from sync.people_store.couchdb import CouchAccounts
from sync.people_store.couchdocs import place_doc_id, session_doc_id_of_hash, user_doc_id
from sync.store.couchdb.client import path

_BATCH = 200


# -- accounts ------------------------------------------------------------------------------
async def copy_accounts(ctx: Context) -> None:
    users = embedded_tables.list_users(ctx.conn)
    places = embedded_tables.list_places(ctx.conn)
    sessions = _sessions(ctx.conn)
    progress = Progress("accounts", len(users) + len(places) + len(sessions), ctx.out)
    store = CouchAccounts.for_prefix(ctx.client, ctx.prefix)
    await store.adopt(users, places)  # creates what CouchDB lacks, overwrites nothing
    progress.advance(len(users) + len(places))
    languages = {
        str(r[0]): str(r[1]) for r in source.rows(ctx.conn, "SELECT name, language FROM users")
    }
    for user in users:
        wanted = str(languages.get(user.name, "en"))
        if wanted != "en" and await store.language(user.name) == "en":
            await store.set_language(user.name, wanted, None)
    for start in range(0, len(sessions), _BATCH):
        batch = sessions[start : start + _BATCH]
        await put_missing(ctx.client, ctx.prefix + ACCOUNTS, batch, always)
        progress.advance(len(batch))
    progress.finish()


def _sessions(conn: sqlite3.Connection) -> list[Doc]:
    query = "SELECT id_hash, user, password_tag, created, last_seen FROM sessions ORDER BY id_hash"
    return [
        {
            "_id": session_doc_id_of_hash(str(id_hash)),
            "type": "session",
            "user": user,
            "password_tag": tag,
            "created": float(created),
            "last_seen": float(seen),
        }
        for id_hash, user, tag, created, seen in source.rows(conn, query)
    ]


async def accounts_targets(ctx: Context) -> list[Target]:
    db = ctx.prefix + ACCOUNTS
    users = embedded_tables.list_users(ctx.conn)
    places = embedded_tables.list_places(ctx.conn)
    return [
        Target("users", db, [user_doc_id(u.name) for u in users]),
        Target("places", db, [place_doc_id(p.id) for p in places]),
        Target("sessions", db, [s["_id"] for s in _sessions(ctx.conn)]),
    ]


# -- data keys -----------------------------------------------------------------------------
async def copy_keys(ctx: Context) -> None:
    found = source.rows(
        ctx.conn, "SELECT place, version, wrapped, created FROM data_keys ORDER BY place, version"
    )
    progress = Progress("data keys", len(found), ctx.out)
    keys = CouchDataKeys(ctx.client, ctx.prefix + KEYS, asyncio.get_running_loop())
    for place, version, wrapped, created in found:
        stored = await keys.add_async(place, int(version), bytes(wrapped), str(created))
        if stored != bytes(wrapped):
            raise Mismatch(
                f"CouchDB database {ctx.prefix}{KEYS} holds another data key for place "
                f"{place or '(shared)'} version {version} than the embedded store: the "
                "documents sealed under the embedded one could not be opened there. Migrate "
                "into an empty CouchDB (another FIELDSYNC_COUCHDB_PREFIX)."
            )
        progress.advance(1)
    progress.finish("(still wrapped by the master key)")


async def keys_targets(ctx: Context) -> list[Target]:
    found = source.rows(ctx.conn, "SELECT place, version FROM data_keys")
    return [Target("data keys", ctx.prefix + KEYS, [key_doc_id(p, int(v)) for p, v in found])]


# -- patient IDs ---------------------------------------------------------------------------
async def copy_patient_ids(ctx: Context) -> None:
    db = ctx.prefix + PATIENT_IDS
    await ensure_db(ctx.client, db)
    ids, blocks = _patient_ids(ctx.conn), _blocks(ctx.conn)
    progress = Progress("patient IDs", len(ids) + len(blocks), ctx.out)
    for docs in (ids, blocks):
        for start in range(0, len(docs), _BATCH):
            # CouchDB's copy wins: an ID retired there since stays retired.
            await put_missing(ctx.client, db, docs[start : start + _BATCH], always)
            progress.advance(len(docs[start : start + _BATCH]))
    for counter, number in _counters(ctx.conn, blocks):
        await _at_least(ctx, db, counter, number)
    progress.finish()


def _patient_ids(conn: sqlite3.Connection) -> list[Doc]:
    query = (
        "SELECT id, status, block, allocated_by, allocated_at, retired_at, retired_reason "
        "FROM patient_ids ORDER BY id"
    )
    docs = []
    for pid, status, block, by, at, retired_at, reason in source.rows(conn, query):
        doc: Doc = {
            "_id": pid,
            "status": status,
            "block": block,
            "allocated_by": by,
            "allocated_at": at,
        }
        if retired_at is not None:
            doc.update(retired_by=by, retired_at=retired_at, retired_reason=reason)
        docs.append(doc)
    return docs


def _blocks(conn: sqlite3.Connection) -> list[Doc]:
    members: dict[int, list[str]] = {}
    for pid, block in source.rows(
        conn, "SELECT id, block FROM patient_ids WHERE block IS NOT NULL ORDER BY rowid"
    ):
        members.setdefault(int(block), []).append(str(pid))
    query = "SELECT id, device, requested_by, created FROM patient_id_blocks ORDER BY id"
    return [
        {
            "_id": block_doc_id(device, int(block)),
            "block": int(block),
            "device": device,
            "requested_by": by,
            "created": created,
            "ids": members.get(int(block), []),
        }
        for block, device, by, created in source.rows(conn, query)
    ]


def _counters(conn: sqlite3.Connection, blocks: Sequence[Doc]) -> list[tuple[str, int]]:
    found = [
        (f"counter:{scheme}", int(number))
        for scheme, number in source.rows(conn, "SELECT scheme, next FROM patient_id_counter")
    ]
    if blocks:
        found.append((BLOCKS_COUNTER, max(int(b["block"]) for b in blocks) + 1))
    return found


async def _at_least(ctx: Context, db: str, counter: str, number: int) -> None:
    """Move ``counter`` on to ``number`` unless it is there already (never back): numbers
    below it were handed out by the embedded store."""
    for _ in range(20):
        leaves = (await ctx.client.leaves_by_id(db, [counter])).get(counter, [])
        if max([0] + [int(leaf.get("next", 0)) for leaf in leaves]) >= number:
            return
        body: dict[str, Any] = {"next": number, "claim": "migrate"}
        if leaves:
            body["_rev"] = leaves[0]["_rev"]
        with contextlib.suppress(Conflict):  # an instance claimed meanwhile: read again
            await ctx.client.put_status(path(db, counter), body)
    raise StoreUnavailable(
        f"could not move the patient-ID counter {counter} on in {db} (instances kept "
        "claiming numbers meanwhile); run migrate again"
    )


async def patient_id_targets(ctx: Context) -> list[Target]:
    db = ctx.prefix + PATIENT_IDS
    return [
        Target("patient IDs", db, [d["_id"] for d in _patient_ids(ctx.conn)]),
        Target("patient-ID blocks", db, [d["_id"] for d in _blocks(ctx.conn)]),
    ]


# -- SMS -----------------------------------------------------------------------------------
async def copy_sms(ctx: Context) -> None:
    db = ctx.prefix + SMS
    await CouchSms(ctx.client, db).open()  # the database and its views
    every = _incoming(ctx.conn) + _outgoing(ctx.conn) + _workers(ctx.conn)
    progress = Progress("SMS", len(every), ctx.out)
    for start in range(0, len(every), _BATCH):
        # CouchDB's copy wins: a message an instance has handled since stays handled.
        await put_missing(ctx.client, db, every[start : start + _BATCH], always)
        progress.advance(len(every[start : start + _BATCH]))
    progress.finish()


def _table(conn: sqlite3.Connection, sql: str) -> list[dict[str, Any]]:
    try:
        cursor = conn.execute(sql)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]


def _b64(value: bytes | None) -> str | None:
    return None if value is None else sms_docs.b64(bytes(value))


def _incoming(conn: sqlite3.Connection) -> list[Doc]:
    docs = []
    for row in _table(conn, "SELECT * FROM sms_incoming ORDER BY id"):
        doc: Doc = {**row, "type": "in", "lease": None}
        doc["_id"] = sms_docs.incoming_doc_id(row["channel"], row["external_id"])
        doc["content"], doc["details"] = _b64(row["content"]), _b64(row.get("details"))
        doc["due"] = row.get("retry_at") or row["stored_at"]
        docs.append(doc)
    return docs


def _outgoing(conn: sqlite3.Connection) -> list[Doc]:
    docs = []
    for row in _table(conn, "SELECT rowid AS seq, * FROM sms_outgoing ORDER BY rowid"):
        doc: Doc = {**row, "_id": f"out:{row['id']}", "type": "out"}
        doc["content"] = _b64(row["content"])
        docs.append(doc)
    return docs


def _workers(conn: sqlite3.Connection) -> list[Doc]:
    return [
        {"_id": f"worker:{row['worker']}", "type": "worker", "language": row["language"]}
        for row in _table(conn, "SELECT worker, language FROM sms_workers ORDER BY worker")
    ]


async def sms_targets(ctx: Context) -> list[Target]:
    db = ctx.prefix + SMS
    return [
        Target("SMS received", db, [d["_id"] for d in _incoming(ctx.conn)]),
        Target("SMS to send or sent", db, [d["_id"] for d in _outgoing(ctx.conn)]),
        Target("SMS workers' languages", db, [d["_id"] for d in _workers(ctx.conn)]),
    ]
