"""Users and places in the system tables, as plain functions over a connection.

The CLI calls these directly (while the server may be running: WAL), the
server calls them on the store's threads.  Passwords are stored as scrypt
hashes (``scrypt$n$r$p$salt$hash``, RFC 7914).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import secrets
import sqlite3
from collections.abc import Sequence
from typing import Any

from sync.errors import BadRequest, Conflict, NotFound
from sync.scopes import Place, PlaceTree, Role, User, UserStatus, validate_place_id
from sync.unsafe_text import first_unsafe

# The languages the supervisor pages speak (a user's own choice, ``users.language``).
LANGUAGES = ("en", "sw")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
USER_NAME_MAX = 64


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    parts = (str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest))
    return "scrypt$" + "$".join(parts)


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, _unb64(digest))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


# -- places --------------------------------------------------------------------
def add_place(
    conn: sqlite3.Connection, place_id: str, parent: str | None, name: str | None
) -> Place:
    validate_place_id(place_id)
    if parent is not None:
        check_parent(conn, parent)
    if _place_row(conn, place_id) is not None:
        raise Conflict(f"place {place_id!r} already exists")
    conn.execute(
        "INSERT INTO places(id, parent, name, created) VALUES(?,?,?,?)",
        (place_id, parent, name or place_id, _now()),
    )
    bump_places(conn)
    return Place(place_id, parent, name or place_id)


def _place_row(conn: sqlite3.Connection, place_id: str) -> tuple[str, str | None, str] | None:
    row = conn.execute("SELECT id, parent, name FROM places WHERE id=?", (place_id,)).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def get_place(conn: sqlite3.Connection, place_id: str) -> Place | None:
    row = conn.execute(
        "SELECT id, parent, name, retired FROM places WHERE id=?", (place_id,)
    ).fetchone()
    return None if row is None else Place(row[0], row[1], row[2], row[3])


def check_parent(conn: sqlite3.Connection, parent: str) -> Place:
    """A place that may take a new child: it exists (404) and is not retired (409)."""
    found = get_place(conn, parent)
    if found is None:
        raise NotFound(f"parent place {parent!r} does not exist")
    if found.retired is not None:
        raise Conflict(f"parent place {parent!r} is retired: it takes no new places")
    return found


def list_places(conn: sqlite3.Connection) -> list[Place]:
    rows = conn.execute("SELECT id, parent, name, retired FROM places ORDER BY id").fetchall()
    return [Place(r[0], r[1], r[2], r[3]) for r in rows]


def place_tree(conn: sqlite3.Connection) -> PlaceTree:
    return PlaceTree(list_places(conn))


def bump_places(conn: sqlite3.Connection) -> None:
    """Say the tree changed: every server reloads it on its next request (``sync.auth``)."""
    _bump(conn, "places_version")


def version(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return 0 if row is None else int(row[0])


def _bump(conn: sqlite3.Connection, key: str) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES(?, '1') "
        "ON CONFLICT(key) DO UPDATE SET value=CAST(value AS INTEGER)+1",
        (key,),
    )


# -- users ---------------------------------------------------------------------
def validate_user_name(name: str) -> str:
    bad = name.startswith("_") or ":" in name or first_unsafe(name) is not None
    if not name or len(name) > USER_NAME_MAX or bad:
        raise BadRequest(
            f"invalid user name {name!r}: 1-{USER_NAME_MAX} characters, "
            "no ':', no control characters and not starting with '_'"
        )
    return name


def parse_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError as exc:
        choices = ", ".join(r.value for r in Role)
        raise BadRequest(f"unknown role {role!r}: use one of {choices}") from exc


def _check_places(conn: sqlite3.Connection, places: Sequence[str]) -> None:
    """Places a user may be given: they exist (404) and are not retired (409)."""
    for place in places:
        found = get_place(conn, place)
        if found is None:
            raise NotFound(f"place {place!r} does not exist")
        if found.retired is not None:
            raise Conflict(f"place {place!r} is retired: nobody can be assigned to it")


def add_user(
    conn: sqlite3.Connection,
    name: str,
    role: Role,
    password: str,
    places: Sequence[str] = (),
    read_places: Sequence[str] = (),
) -> User:
    validate_user_name(name)
    if len(password) < 8:
        raise BadRequest("password must be at least 8 characters")
    _check_places(conn, [*places, *read_places])
    if role in (Role.CHW, Role.SUPERVISOR) and not places and not read_places:
        raise BadRequest(f"a {role.value} needs at least one --place or --read-place")
    existing = get_user(conn, name)
    if existing is not None and existing.status is UserStatus.REMOVED:
        raise Conflict(
            f"user {name!r} was removed, and a removed name is never given out again (the "
            "audit trail and the device history must keep naming one person); choose another"
        )
    if existing is not None:
        raise Conflict(f"user {name!r} already exists")
    password_hash = hash_password(password)
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
    user = existing_user(conn, name)
    _check_places(conn, [*places, *read_places])
    conn.execute(
        "UPDATE users SET places=?, read_places=?, updated=? WHERE name=?",
        (json.dumps(list(places)), json.dumps(list(read_places)), _now(), name),
    )
    return dataclasses.replace(user, places=tuple(places), read_places=tuple(read_places))


def set_password(conn: sqlite3.Connection, name: str, password: str) -> None:
    if len(password) < 8:
        raise BadRequest("password must be at least 8 characters")
    existing_user(conn, name)
    conn.execute(
        "UPDATE users SET password_hash=?, updated=? WHERE name=?",
        (hash_password(password), _now(), name),
    )


def existing_user(conn: sqlite3.Connection, name: str) -> User:
    """A user who has not been removed: 404 for an unknown name, 409 for a removed one."""
    user = get_user(conn, name)
    if user is None:
        raise NotFound(f"user {name!r} does not exist")
    if user.status is UserStatus.REMOVED:
        raise Conflict(f"user {name!r} was removed; a removed user cannot be changed")
    return user


def language(conn: sqlite3.Connection, name: str) -> str:
    """The language ``name`` reads the supervisor pages in (English for an unknown name)."""
    row = conn.execute("SELECT language FROM users WHERE name=?", (name,)).fetchone()
    return row[0] if row is not None and row[0] in LANGUAGES else LANGUAGES[0]


def set_language(conn: sqlite3.Connection, name: str, language: str) -> None:
    """Choose the language of ``name``'s supervisor pages (``en`` or ``sw``)."""
    if language not in LANGUAGES:
        raise BadRequest(f"language must be one of {', '.join(LANGUAGES)} (e.g. sw for Swahili)")
    existing_user(conn, name)
    conn.execute("UPDATE users SET language=?, updated=? WHERE name=?", (language, _now(), name))


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


def server_secret(conn: sqlite3.Connection, key: str) -> bytes:
    """A random secret kept in ``meta`` (created on first use): cookie signing, server uuid."""
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    if row is None:
        conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES(?,?)", (key, secrets.token_hex(32))
        )
        row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return bytes.fromhex(row[0])


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
