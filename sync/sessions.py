"""Server-side sessions: the ``AuthSession`` cookie names a stored session, so it can be ended.

    sessions(id_hash PRIMARY KEY, user, password_tag, created, last_seen)
    (the embedded table, sync.people_store.embedded_tables; CouchDB: ``session:<id_hash>``)

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
from dataclasses import dataclass

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
