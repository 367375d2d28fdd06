"""The SQL of users, places and sessions: the data dir's tables, for the embedded adapter.

    users(name PRIMARY KEY, role, password_hash, places, read_places, status,
          language, created, updated)      places / read_places: JSON lists of ids
    places(id PRIMARY KEY, parent, name, created, retired)
    sessions(id_hash PRIMARY KEY, user, password_tag, created, last_seen)
    meta(key, value)                       places_version

Plain functions over a connection, inside the caller's transaction (the
embedded adapter's ``write_tx``); the rules they keep are the pure ones of
:mod:`sync.accounts` and :mod:`sync.people`, so every adapter refuses the same
changes with the same errors.  The embedded adapter
(:mod:`sync.people_store.embedded`) runs them; so do the other embedded
adapters that read users and places in their own transactions
(``device_registry.embedded_sql``), the migration, and the seeders of the
benches and tests that fill a data dir's file before a server opens it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
import sqlite3
from collections.abc import Sequence
from typing import Any

from sync import accounts, people, sessions
from sync.errors import Conflict, NotFound
from sync.people import Changed
from sync.scopes import Place, PlaceTree, Role, User, UserStatus, validate_place_id
from sync.sessions import Lifetime, Session


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


# -- places --------------------------------------------------------------------
def add_place(
    conn: sqlite3.Connection, place_id: str, parent: str | None, name: str | None
) -> Place:
    validate_place_id(place_id)
    if parent is not None:
        accounts.check_parent(parent, get_place(conn, parent))
    if get_place(conn, place_id) is not None:
        raise Conflict(f"place {place_id!r} already exists")
    conn.execute(
        "INSERT INTO places(id, parent, name, created) VALUES(?,?,?,?)",
        (place_id, parent, name or place_id, _now()),
    )
    bump_places(conn)
    return Place(place_id, parent, name or place_id)


def get_place(conn: sqlite3.Connection, place_id: str) -> Place | None:
    row = conn.execute(
        "SELECT id, parent, name, retired FROM places WHERE id=?", (place_id,)
    ).fetchone()
    return None if row is None else Place(row[0], row[1], row[2], row[3])


def list_places(conn: sqlite3.Connection) -> list[Place]:
    rows = conn.execute("SELECT id, parent, name, retired FROM places ORDER BY id").fetchall()
    return [Place(r[0], r[1], r[2], r[3]) for r in rows]


def place_tree(conn: sqlite3.Connection) -> PlaceTree:
    return PlaceTree(list_places(conn))


def bump_places(conn: sqlite3.Connection) -> None:
    """Say the tree changed: every server reloads it on its next request (``sync.auth``)."""
    conn.execute(
        "INSERT INTO meta(key, value) VALUES('places_version', '1') "
        "ON CONFLICT(key) DO UPDATE SET value=CAST(value AS INTEGER)+1"
    )


def places_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key='places_version'").fetchone()
    return 0 if row is None else int(row[0])


def _existing_place(conn: sqlite3.Connection, place_id: str) -> Place:
    return people.existing_place(place_id, get_place(conn, place_id))


def rename_place(conn: sqlite3.Connection, place_id: str, name: str) -> Changed[Place]:
    """A new display name; the id, which documents and scopes use, stays."""
    place = _existing_place(conn, place_id)
    new_name = people.check_rename(place, name)
    conn.execute("UPDATE places SET name=? WHERE id=?", (new_name, place_id))
    bump_places(conn)
    detail = f"place {place_id}: name {place.name!r} -> {new_name!r}"
    return Changed(dataclasses.replace(place, name=new_name), detail)


def move_place(conn: sqlite3.Connection, place_id: str, parent: str | None) -> Changed[Place]:
    """Put a place (and all below it) under ``parent``, or make it a root (None)."""
    place = _existing_place(conn, place_id)
    if parent is not None and parent != place.parent:
        accounts.check_parent(parent, get_place(conn, parent))
    people.check_move(place, parent, place_tree(conn))
    conn.execute("UPDATE places SET parent=? WHERE id=?", (parent, place_id))
    bump_places(conn)
    detail = f"place {place_id}: parent {place.parent or '-'} -> {parent or '-'}"
    return Changed(dataclasses.replace(place, parent=parent), detail)


def retire_place(conn: sqlite3.Connection, place_id: str) -> Changed[Place]:
    """Stop a place taking documents and people; refused while it is still in use."""
    place = _existing_place(conn, place_id)
    people.check_retire(place, place_tree(conn), list_users(conn))
    stamp = _now()
    conn.execute("UPDATE places SET retired=? WHERE id=?", (stamp, place_id))
    bump_places(conn)
    retired = dataclasses.replace(place, retired=stamp)
    return Changed(retired, f"place {place_id}: active -> retired")


# -- users ---------------------------------------------------------------------
_USER_COLUMNS = "SELECT name, role, places, read_places, password_hash, status FROM users"


def _user(row: tuple[Any, ...]) -> User:
    places, read_places = tuple(json.loads(row[2])), tuple(json.loads(row[3]))
    return User(row[0], Role(row[1]), places, read_places, row[4], UserStatus(row[5]))


def get_user(conn: sqlite3.Connection, name: str) -> User | None:
    """The user ``name``, whatever their status (a removed user is a kept row)."""
    row = conn.execute(f"{_USER_COLUMNS} WHERE name=?", (name,)).fetchone()
    return None if row is None else _user(row)


def list_users(conn: sqlite3.Connection) -> list[User]:
    """Every user, by name (one query: the console lists thousands)."""
    return [_user(r) for r in conn.execute(f"{_USER_COLUMNS} ORDER BY name").fetchall()]


def _existing_user(conn: sqlite3.Connection, name: str) -> User:
    return accounts.existing_user(name, get_user(conn, name))


def _check_places(conn: sqlite3.Connection, places: Sequence[str]) -> None:
    for place in places:
        accounts.check_assignable(place, get_place(conn, place))


def add_user(
    conn: sqlite3.Connection,
    name: str,
    role: Role,
    password: str,
    places: Sequence[str] = (),
    read_places: Sequence[str] = (),
) -> User:
    accounts.check_new_user(name, role, password, places, read_places)
    _check_places(conn, [*places, *read_places])
    existing = get_user(conn, name)
    if existing is not None:
        raise accounts.name_taken(name, existing)
    password_hash = accounts.hash_password(password)
    conn.execute(
        "INSERT INTO users(name, role, password_hash, places, read_places, created, updated) "
        "VALUES(?,?,?,?,?,?,?)",
        (
            name,
            role.value,
            password_hash,
            json.dumps(list(places)),
            json.dumps(list(read_places)),
            _now(),
            _now(),
        ),
    )
    return User(name, role, tuple(places), tuple(read_places), password_hash)


def set_places(
    conn: sqlite3.Connection, name: str, places: Sequence[str], read_places: Sequence[str]
) -> User:
    user = _existing_user(conn, name)
    _check_places(conn, [*places, *read_places])
    conn.execute(
        "UPDATE users SET places=?, read_places=?, updated=? WHERE name=?",
        (json.dumps(list(places)), json.dumps(list(read_places)), _now(), name),
    )
    return dataclasses.replace(user, places=tuple(places), read_places=tuple(read_places))


def set_password(conn: sqlite3.Connection, name: str, password: str) -> None:
    accounts.check_password(password)
    _existing_user(conn, name)
    conn.execute(
        "UPDATE users SET password_hash=?, updated=? WHERE name=?",
        (accounts.hash_password(password), _now(), name),
    )


def language(conn: sqlite3.Connection, name: str) -> str:
    """The language ``name`` reads the supervisor pages in (English for an unknown name)."""
    row = conn.execute("SELECT language FROM users WHERE name=?", (name,)).fetchone()
    return accounts.known_language(None if row is None else row[0])


def set_language(conn: sqlite3.Connection, name: str, language: str) -> None:
    """Choose the language of ``name``'s supervisor pages (``en`` or ``sw``)."""
    accounts.check_language(language)
    _existing_user(conn, name)
    conn.execute("UPDATE users SET language=?, updated=? WHERE name=?", (language, _now(), name))


def _set_status(conn: sqlite3.Connection, user: User, status: UserStatus) -> User:
    conn.execute(
        "UPDATE users SET status=?, updated=? WHERE name=?", (status.value, _now(), user.name)
    )
    return dataclasses.replace(user, status=status)


def disable_user(conn: sqlite3.Connection, name: str) -> Changed[User]:
    """Refuse the user's password, sessions and devices until :func:`enable_user`."""
    user = _existing_user(conn, name)
    people.check_disable(user)
    people.keep_an_admin(user, list_users(conn), "disable")
    return Changed(_set_status(conn, user, UserStatus.DISABLED), f"user {name}: active -> disabled")


def enable_user(conn: sqlite3.Connection, name: str) -> Changed[User]:
    """Let a disabled user work again: same password, sessions and enrolled phones."""
    user = people.check_enable(name, get_user(conn, name))
    return Changed(_set_status(conn, user, UserStatus.ACTIVE), f"user {name}: disabled -> active")


def remove_user(conn: sqlite3.Connection, name: str) -> Changed[User]:
    """Remove for good: password erased, sessions ended, the row (and the name) kept."""
    user = _existing_user(conn, name)
    people.keep_an_admin(user, list_users(conn), "remove")
    ended = end_all_sessions(conn, name)
    conn.execute("UPDATE users SET password_hash=? WHERE name=?", (people.REMOVED_HASH, name))
    removed = _set_status(conn, user, UserStatus.REMOVED)
    detail = f"user {name}: {user.status.value} -> removed, {ended} session(s) ended"
    return Changed(dataclasses.replace(removed, password_hash=people.REMOVED_HASH), detail)


# -- sessions ------------------------------------------------------------------
def start_session(conn: sqlite3.Connection, user: str, password_hash: str, now: float) -> str:
    """Open a session for ``user``; the raw id (the cookie value), never stored."""
    session_id = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO sessions(id_hash, user, password_tag, created, last_seen) VALUES(?,?,?,?,?)",
        (sessions.id_hash(session_id), user, sessions.password_tag(password_hash), now, now),
    )
    return session_id


def find_session(conn: sqlite3.Connection, session_id: str) -> Session | None:
    row = conn.execute(
        "SELECT user, password_tag, created, last_seen FROM sessions WHERE id_hash=?",
        (sessions.id_hash(session_id),),
    ).fetchone()
    return None if row is None else Session(row[0], row[1], float(row[2]), float(row[3]))


def touch_session(conn: sqlite3.Connection, session_id: str, now: float) -> None:
    conn.execute(
        "UPDATE sessions SET last_seen=? WHERE id_hash=?", (now, sessions.id_hash(session_id))
    )


def end_session(conn: sqlite3.Connection, session_id: str) -> str | None:
    """End one session; the user it belonged to (None when there was none)."""
    digest = sessions.id_hash(session_id)
    row = conn.execute("SELECT user FROM sessions WHERE id_hash=?", (digest,)).fetchone()
    conn.execute("DELETE FROM sessions WHERE id_hash=?", (digest,))
    return None if row is None else str(row[0])


def end_all_sessions(conn: sqlite3.Connection, user: str) -> int:
    """End every session of ``user``; how many there were."""
    return conn.execute("DELETE FROM sessions WHERE user=?", (user,)).rowcount


def logout_user(conn: sqlite3.Connection, name: str) -> int:
    """End every session of the user ``name`` (404 for an unknown user); how many."""
    if get_user(conn, name) is None:
        raise NotFound(f"user {name!r} does not exist")
    return end_all_sessions(conn, name)


def purge_sessions(conn: sqlite3.Connection, lifetime: Lifetime, now: float) -> int:
    """Forget sessions that can no longer be used (they would be refused anyway)."""
    return conn.execute(
        "DELETE FROM sessions WHERE created <= ? OR last_seen <= ?",
        (now - lifetime.absolute, now - lifetime.idle),
    ).rowcount


# -- the local copy kept beside CouchDB (sync.people_store.backends) ------------------------
def mirror_user(conn: sqlite3.Connection, user: User) -> None:
    """Write ``user`` as CouchDB has it into this data dir's table (insert or replace)."""
    conn.execute(
        "INSERT INTO users(name, role, password_hash, places, read_places, status, created, "
        "updated) VALUES(?,?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET role=excluded.role, "
        "password_hash=excluded.password_hash, places=excluded.places, "
        "read_places=excluded.read_places, status=excluded.status, updated=excluded.updated",
        (
            user.name,
            user.role.value,
            user.password_hash,
            json.dumps(list(user.places)),
            json.dumps(list(user.read_places)),
            user.status.value,
            _now(),
            _now(),
        ),
    )


def mirror_places(conn: sqlite3.Connection, places: Sequence[Place]) -> None:
    """Write ``places`` as CouchDB has them into this data dir's table, parents first."""
    known = {p.id for p in list_places(conn)}
    pending = list(places)
    while pending:
        ready = [p for p in pending if p.parent is None or p.parent in known]
        if not ready:  # a parent this copy has never seen: leave the rest for the next copy
            break
        for place in ready:
            conn.execute(
                "INSERT INTO places(id, parent, name, created, retired) VALUES(?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET parent=excluded.parent, name=excluded.name, "
                "retired=excluded.retired",
                (place.id, place.parent, place.name, _now(), place.retired),
            )
            known.add(place.id)
        pending = [p for p in pending if p not in ready]
    bump_places(conn)
