"""The embedded adapter of the accounts port (sync.people_store.ports): the data dir's SQLite.

The SQL itself lives in :mod:`sync.people_store.embedded_tables` (plain functions over a
connection, keeping the pure rules of :mod:`sync.accounts` and :mod:`sync.people`);
this adapter runs them on the server's store: reads on its reader threads,
changes in one transaction of its single writer, each change with its audit
entry in that same transaction.

The server's adapter answers a caller's lookup (an active user, or a live session's)
again for ``recent_seconds`` (``FIELDSYNC_ACCOUNTS_CACHE_SECONDS``, counted from when
its read was sent), and forgets what it keeps after every change made through it:
the console's and the API's changes count from the very next request.  A management
command's adapter (``beside_server``) keeps nothing; each of its changes that can refuse
a caller (scope, password, disable, remove, logout, a place moved or retired) returns
only once ``recent_seconds`` have passed since it was written, so every answer the
running server still keeps was read after it: ``fieldsync user disable`` says "done"
only when the next request is refused (docs/adr/0005).  Unknown, disabled and removed
callers are read every time, so a name just added, or enabled, is never refused from
memory, and the changes that only grant do not wait.

With CouchDB, the same tables keep a copy of users and places (:func:`mirror_into`,
:func:`copy_all`) for the code that still reads them there.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog

from sync.audit import AuditLog
from sync.audit_store import embedded as embedded_audit
from sync.errors import BadRequest, FieldsyncError
from sync.people import Changed
from sync.people_store import embedded_tables
from sync.people_store.ports import Actor, Lookup, Opened, details_of_scope
from sync.recent import OnOneFile
from sync.scopes import Place, PlaceTree, Role, User, UserStatus
from sync.sessions import Lifetime
from sync.store.sqlite import SqliteStore

T = TypeVar("T")
log = structlog.get_logger("fieldsync.accounts")


class EmbeddedAccounts:
    def __init__(
        self,
        store: SqliteStore,
        audit: AuditLog | None = None,
        recent_seconds: float = 0.0,
        *,
        beside_server: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._audit = audit
        # The server's: callers read a moment ago (module docstring).  A command's keeps
        # nothing, and waits the server's bound out after a change that can refuse.
        self._kept: OnOneFile[Lookup] = OnOneFile(
            recent_seconds, beside_server=beside_server, clock=clock, sleep=sleep
        )

    # -- reading ---------------------------------------------------------------------------
    async def lookup(self, name: str | None, session_id: str | None = None) -> Lookup:
        """The version, and the user or the session's user: one read, unless the same
        active caller was read less than ``recent_seconds`` ago and nothing changed here."""
        return await self._kept.kept.read_once(
            (name, session_id), lambda: self._lookup(name, session_id), _active
        )

    async def _lookup(self, name: str | None, session_id: str | None) -> Lookup:
        def run(conn: sqlite3.Connection) -> Lookup:
            version = embedded_tables.places_version(conn)  # one snapshot: all agree
            session = None if session_id is None else embedded_tables.find_session(conn, session_id)
            who = name if session_id is None else (session.user if session else None)
            user = None if who is None else embedded_tables.get_user(conn, who)
            return Lookup(user, session, str(version))

        return await self._store.read(run)

    async def places_version(self) -> str:
        return str(await self._store.read(embedded_tables.places_version))

    async def place_tree(self) -> PlaceTree:
        return await self._store.read(embedded_tables.place_tree)

    async def get_user(self, name: str) -> User | None:
        return await self._store.read(lambda c: embedded_tables.get_user(c, name))

    async def list_users(self) -> list[User]:
        return await self._store.read(embedded_tables.list_users)

    async def get_place(self, place_id: str) -> Place | None:
        return await self._store.read(lambda c: embedded_tables.get_place(c, place_id))

    async def list_places(self) -> list[Place]:
        return await self._store.read(embedded_tables.list_places)

    async def language(self, name: str) -> str:
        return await self._store.read(lambda c: embedded_tables.language(c, name))

    # -- changing users ----------------------------------------------------------------------
    async def add_user(
        self,
        name: str,
        role: Role,
        password: str,
        places: Sequence[str],
        read_places: Sequence[str],
        by: Actor | None,
    ) -> User:
        detail = f"user {name}: role {role.value}, {details_of_scope(places, read_places)}"
        return await self._write(
            by,
            "user_add",
            lambda c: embedded_tables.add_user(c, name, role, password, places, read_places),
            detail,
        )

    async def set_places(
        self, name: str, places: Sequence[str], read_places: Sequence[str], by: Actor | None
    ) -> User:
        return await self._write(
            by,
            "user_places",
            lambda c: embedded_tables.set_places(c, name, places, read_places),
            f"user {name}: {details_of_scope(places, read_places)}",
        )

    async def set_password(self, name: str, password: str, by: Actor | None) -> None:
        await self._write(
            by,
            "user_password",
            lambda c: embedded_tables.set_password(c, name, password),
            f"user {name}: password set",
        )

    async def set_language(self, name: str, language: str, by: Actor | None) -> None:
        await self._write(
            by,
            "user_language",
            lambda c: embedded_tables.set_language(c, name, language),
            f"user {name}: console language {language}",
        )

    async def disable_user(self, name: str, by: Actor | None) -> User:
        return await self._change(
            by, "user_disable", lambda c: embedded_tables.disable_user(c, name)
        )

    async def enable_user(self, name: str, by: Actor | None) -> User:
        return await self._change(by, "user_enable", lambda c: embedded_tables.enable_user(c, name))

    async def remove_user(self, name: str, by: Actor | None) -> User:
        return await self._change(by, "user_remove", lambda c: embedded_tables.remove_user(c, name))

    # -- changing places ---------------------------------------------------------------------
    async def add_place(
        self, place_id: str, parent: str | None, name: str | None, by: Actor | None
    ) -> Place:
        return await self._write(
            by,
            "place_add",
            lambda c: embedded_tables.add_place(c, place_id, parent, name),
            f"place {place_id}, parent {parent or '-'}",
        )

    async def edit_place(
        self, place_id: str, name: str | None, move: bool, parent: str | None, by: Actor | None
    ) -> Place:
        """Rename and/or move in one transaction, one audit entry per change."""

        def run(conn: sqlite3.Connection) -> Place:
            place = None
            if name is not None:
                renamed = embedded_tables.rename_place(conn, place_id, name)
                place = self._noted(conn, by, "place_rename", renamed)
            if move:
                moved = embedded_tables.move_place(conn, place_id, parent)
                place = self._noted(conn, by, "place_move", moved)
            if place is None:
                raise BadRequest('give "name" (a new name) and/or "parent" (a place id, or null)')
            return place

        return await self._tx(run, refusing=move)

    async def retire_place(self, place_id: str, by: Actor | None) -> Place:
        return await self._change(
            by, "place_retire", lambda c: embedded_tables.retire_place(c, place_id)
        )

    # -- sessions ------------------------------------------------------------------------------
    async def start_session(self, user: User, now: float, lifetime: Lifetime) -> Opened:
        def run(conn: sqlite3.Connection) -> Opened:
            # Read again in the session's own transaction: a user disabled or removed
            # while their password was being checked gets no session.
            current = embedded_tables.get_user(conn, user.name)
            if current is None or current.status is UserStatus.REMOVED:
                return Opened(None, None)
            if current.status is not UserStatus.ACTIVE:
                return Opened(current, None)
            embedded_tables.purge_sessions(conn, lifetime, now)
            return Opened(
                current, embedded_tables.start_session(conn, user.name, user.password_hash, now)
            )

        return await self._tx(run, refusing=False)

    async def touch_session(self, session_id: str, now: float) -> None:
        await self._tx(lambda c: embedded_tables.touch_session(c, session_id, now), False)

    async def end_session(self, session_id: str) -> str | None:
        return await self._tx(lambda c: embedded_tables.end_session(c, session_id), True)

    async def logout_user(self, name: str, by: Actor | None) -> int:
        return await self._write(
            by,
            "user_logout",
            lambda c: embedded_tables.logout_user(c, name),
            f"user {name}: every session ended",
        )

    # -- transactions with their audit entry ---------------------------------------------------
    async def _tx(self, fn: Callable[[sqlite3.Connection], T], refusing: bool) -> T:
        """Every change: what is kept here is forgotten, whatever the outcome.  A command's
        change that can refuse a caller returns, once written, only when no answer read
        before it can still be kept (one that only grants needs no wait: unknown and
        disabled callers are never kept)."""
        return await self._kept.change(self._store.write_tx(fn), refusing)

    async def _write(
        self, by: Actor | None, action: str, fn: Callable[[sqlite3.Connection], T], detail: str
    ) -> T:
        def run(conn: sqlite3.Connection) -> T:
            result = fn(conn)
            self._note(conn, by, action, detail)
            return result

        return await self._tx(run, action in _REFUSING)

    async def _change(
        self, by: Actor | None, action: str, fn: Callable[[sqlite3.Connection], Changed[T]]
    ) -> T:
        return await self._tx(lambda c: self._noted(c, by, action, fn(c)), action in _REFUSING)

    def _noted(
        self, conn: sqlite3.Connection, by: Actor | None, action: str, done: Changed[T]
    ) -> T:
        self._note(conn, by, action, done.detail)
        return done.value

    def _note(self, conn: sqlite3.Connection, by: Actor | None, action: str, detail: str) -> None:
        if self._audit is not None and by is not None:
            embedded_audit.note(conn, self._audit.chain, by.name, action, detail, by.device)


# The changes after which a caller kept a moment ago may have to be refused (a command
# waits them out); the others only grant (a user or place added, an account enabled)
# or touch nothing a request is checked against (a language, a place's name).
_REFUSING = frozenset(
    {
        "user_places",
        "user_password",
        "user_disable",
        "user_remove",
        "user_logout",
        "place_move",
        "place_retire",
    }
)


def _active(found: Lookup) -> bool:
    """An answer worth keeping: an active user (by cookie: a session found, and its user)."""
    return found.user is not None and found.user.status is UserStatus.ACTIVE


# -- the copy kept beside CouchDB -----------------------------------------------------------
def mirror_into(sqlite: SqliteStore) -> Callable[[User | Place], Awaitable[None]]:
    """Keep the data dir's tables a copy of what changes through this process.

    The devices, SMS and console code still read users and places from those
    tables (until they use this port); with one instance the copy is whole, with
    several it holds what changed through this instance and what CouchDB held at
    its start.  A copy that fails is logged, never the change's failure: CouchDB
    holds the change already.
    """

    async def mirror(value: User | Place) -> None:
        def write(conn: sqlite3.Connection) -> None:
            if isinstance(value, User):
                embedded_tables.mirror_user(conn, value)
            else:
                embedded_tables.mirror_places(conn, [value])

        try:
            await sqlite.write_tx(write)
        except (FieldsyncError, sqlite3.Error) as exc:
            log.warning("accounts_copy_failed", what=repr(value)[:80], error=str(exc))

    return mirror


async def copy_all(sqlite: SqliteStore, users: Sequence[User], places: Sequence[Place]) -> None:
    """Refresh the data dir's copy with every user and place CouchDB holds (at start)."""

    def write(conn: sqlite3.Connection) -> None:
        embedded_tables.mirror_places(conn, places)
        for user in users:
            embedded_tables.mirror_user(conn, user)

    await sqlite.write_tx(write)
