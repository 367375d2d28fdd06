"""Random secrets a server keeps in its data dir's ``meta`` table, created on first use.

    meta(key, value)   cookie_secret, server_uuid, device_registry_secret: 32 random
                       bytes each, as hex

Several instances started from one copied data dir share them (the cookie of one
is good on another).
"""

from __future__ import annotations

import secrets
import sqlite3


def server_secret(conn: sqlite3.Connection, key: str) -> bytes:
    """The secret ``key`` (made now, if this data dir has none yet)."""
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    if row is None:
        conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES(?,?)", (key, secrets.token_hex(32))
        )
        row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return bytes.fromhex(row[0])


def server_identity(conn: sqlite3.Connection) -> tuple[bytes, str]:
    """The cookie secret and the server's uuid (32 hex digits)."""
    return server_secret(conn, "cookie_secret"), server_secret(conn, "server_uuid").hex()[:32]
