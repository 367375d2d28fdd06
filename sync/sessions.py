"""Server-side sessions: the ``AuthSession`` cookie names a row here, so it can be ended.

    sessions(id_hash PRIMARY KEY, user, password_tag, created, last_seen)

The cookie holds a random id; only its SHA-256 is stored, so a copy of the
database opens no session.  A session ends when its row is gone (log out, the
admin ends a user's sessions, the password changes) or when it is older than the
absolute lifetime or idle for longer than the idle limit.  ``password_tag``
ties a session to the password it was opened with: any change of the stored
hash ends it, whichever way the password was changed.

The server reads the row on every cookie request (one primary-key read) and
never caches it, so a ``fieldsync user logout`` run by the CLI against the same
file (WAL) takes effect on the next request.  ``last_seen`` is written at most
once per :data:`TOUCH_EVERY` seconds per session, so syncing does not write on
every request.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass

from sync import accounts
from sync.errors import NotFound

TOUCH_EVERY = 60.0


@dataclass(frozen=True)
class Session:
    user: str
    password_tag: str
    created: float
    last_seen: float


@dataclass(frozen=True)
class Lifetime:
    absolute: float  # seconds from creation
    idle: float  # seconds since the last request

    def alive(self, session: Session, now: float) -> bool:
        return now - session.created < self.absolute and now - session.last_seen < self.idle


def id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def password_tag(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:32]


def start(conn: sqlite3.Connection, user: str, password_hash: str, now: float) -> str:
    """Open a session for ``user``; the raw id (the cookie value), never stored."""
    session_id = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO sessions(id_hash, user, password_tag, created, last_seen) VALUES(?,?,?,?,?)",
        (id_hash(session_id), user, password_tag(password_hash), now, now),
    )
    return session_id


def find(conn: sqlite3.Connection, session_id: str) -> Session | None:
    row = conn.execute(
        "SELECT user, password_tag, created, last_seen FROM sessions WHERE id_hash=?",
        (id_hash(session_id),),
    ).fetchone()
    return None if row is None else Session(row[0], row[1], float(row[2]), float(row[3]))


def touch(conn: sqlite3.Connection, session_id: str, now: float) -> None:
    conn.execute("UPDATE sessions SET last_seen=? WHERE id_hash=?", (now, id_hash(session_id)))


def end(conn: sqlite3.Connection, session_id: str) -> str | None:
    """End one session; the user it belonged to (None when there was none)."""
    digest = id_hash(session_id)
    row = conn.execute("SELECT user FROM sessions WHERE id_hash=?", (digest,)).fetchone()
    conn.execute("DELETE FROM sessions WHERE id_hash=?", (digest,))
    return None if row is None else str(row[0])


def end_all(conn: sqlite3.Connection, user: str) -> int:
    """End every session of ``user``; how many there were."""
    return conn.execute("DELETE FROM sessions WHERE user=?", (user,)).rowcount


def logout_user(conn: sqlite3.Connection, name: str) -> int:
    """End every session of the user ``name`` (404 for an unknown user); how many."""
    if accounts.get_user(conn, name) is None:
        raise NotFound(f"user {name!r} does not exist")
    return end_all(conn, name)


def purge(conn: sqlite3.Connection, lifetime: Lifetime, now: float) -> int:
    """Forget sessions that can no longer be used (they would be refused anyway)."""
    return conn.execute(
        "DELETE FROM sessions WHERE created <= ? OR last_seen <= ?",
        (now - lifetime.absolute, now - lifetime.idle),
    ).rowcount
