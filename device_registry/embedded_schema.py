"""The registry's tables, in the server's SQLite file next to ``users`` and ``places``.

``ensure`` is idempotent: the app runs it at start-up and every CLI command runs it
before touching the tables, so either may come first on a fresh data dir.
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices(
    id INTEGER PRIMARY KEY,
    serial TEXT NOT NULL UNIQUE,
    imei TEXT NOT NULL UNIQUE,
    imei2 TEXT UNIQUE,
    model TEXT NOT NULL DEFAULT '',
    os_version TEXT NOT NULL DEFAULT '',
    app_version TEXT NOT NULL DEFAULT '',
    phone TEXT,
    worker TEXT,
    place TEXT,
    issued TEXT,
    status TEXT NOT NULL,
    last_sync TEXT,
    notes TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL,
    updated TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS devices_active_phone ON devices(phone)
    WHERE phone IS NOT NULL AND status IN ('in_stock', 'assigned', 'in_repair');
CREATE INDEX IF NOT EXISTS devices_by_phone ON devices(phone, status);
CREATE INDEX IF NOT EXISTS devices_by_worker ON devices(worker);
CREATE TABLE IF NOT EXISTS device_history(
    id INTEGER PRIMARY KEY,
    device INTEGER NOT NULL REFERENCES devices(id),
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    from_worker TEXT,
    to_worker TEXT,
    reason TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS device_history_by_device ON device_history(device, id);
CREATE TABLE IF NOT EXISTS enrolment_codes(
    code_hash TEXT PRIMARY KEY,
    device INTEGER NOT NULL REFERENCES devices(id),
    worker TEXT NOT NULL,
    issued_by TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT NOT NULL,
    used TEXT,
    superseded INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS enrolment_codes_by_device ON enrolment_codes(device);
CREATE TABLE IF NOT EXISTS device_tokens(
    token_hash TEXT PRIMARY KEY,
    device INTEGER NOT NULL REFERENCES devices(id),
    worker TEXT NOT NULL,
    created TEXT NOT NULL,
    revoked TEXT,
    revoked_reason TEXT);
CREATE INDEX IF NOT EXISTS device_tokens_live ON device_tokens(device) WHERE revoked IS NULL;
CREATE TABLE IF NOT EXISTS device_refusals(
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    ip TEXT,
    user TEXT,
    serial TEXT,
    kind TEXT NOT NULL,
    status INTEGER NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS device_refusals_by_serial ON device_refusals(serial, id);
"""


def ensure(conn: sqlite3.Connection) -> None:
    """Create the tables if they are missing (inside the caller's transaction)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
