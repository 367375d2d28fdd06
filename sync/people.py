"""People and places change: disable, enable and remove users; rename, move and retire places.

Plain functions over a connection, inside the caller's transaction (the CLI's
``with_file``, the server's ``write_tx``), like :mod:`sync.accounts`.  Each
returns a :class:`Changed`: the new state and a one-line ``detail`` saying what
it was before and what it is now, for the audit entry written in the same
transaction.  Nothing here is cached by the server: a user's status is read on
every request (``sync.auth``), and every change to the tree bumps
``places_version``, which every server checks on every request, so each change
counts from the next request of every user it touches, server running or not.

The rules, as the help texts say them:

- *disable*: the user's password, cookie sessions and device tokens are refused
  until they are enabled again; nothing is deleted.  Sessions still expire on
  their usual clock meanwhile.
- *enable*: a disabled user works again, with the same password, sessions and
  enrolled phones.
- *remove*: for good.  The password is erased and every session ended; the row
  stays, with its places, so their documents, audit history and devices (flagged
  "collect this phone" on the supervisor pages) keep naming them.  A removed
  name cannot log in, cannot be enabled, and is never given to a new user.
- The last active admin can be neither disabled nor removed.
- *rename*: the id stays (documents, scopes and keys refer to it); the name changes.
- *move*: a place (and everything below it) goes under another parent, or
  becomes a root; a move that would make a loop, or goes under a retired place,
  is refused.  Whoever works above the new parent reads and writes it from then on;
  whoever worked only above the old one no longer does.
- *retire*: a place with no active places below it and nobody assigned to it
  (removed users aside) stops taking documents: no new document and no edit is
  written into it, by anyone (a document may still be moved out of it), nobody
  can be assigned to it, and no new place goes under it.  Its documents stay
  readable, and its phones managed, by whoever reaches it through a place above.
  Retiring is not undone by a command (it is rare, and audited).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from dataclasses import dataclass
from typing import Generic, TypeVar

from sync import accounts, sessions
from sync.errors import BadRequest, Conflict, NotFound
from sync.scopes import Place, Role, User, UserStatus
from sync.unsafe_text import first_unsafe

T = TypeVar("T")
PLACE_NAME_MAX = 200
REMOVED_HASH = "!removed"  # no scrypt hash: no password matches it
_SHOWN = 5  # names listed in a refusal before "and N more"


@dataclass(frozen=True)
class Changed(Generic[T]):
    """The state after a change, and what changed (before -> after) for the audit trail."""

    value: T
    detail: str


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


# -- users -----------------------------------------------------------------------------
def _set_status(conn: sqlite3.Connection, user: User, status: UserStatus) -> User:
    conn.execute(
        "UPDATE users SET status=?, updated=? WHERE name=?", (status.value, _now(), user.name)
    )
    return dataclasses.replace(user, status=status)


def _keep_an_admin(conn: sqlite3.Connection, user: User, verb: str) -> None:
    if user.role is not Role.ADMIN or user.status is not UserStatus.ACTIVE:
        return
    others = conn.execute(
        "SELECT COUNT(*) FROM users WHERE role=? AND status=? AND name<>?",
        (Role.ADMIN.value, UserStatus.ACTIVE.value, user.name),
    ).fetchone()[0]
    if not others:
        raise Conflict(
            f"cannot {verb} {user.name!r}: it is the last active admin; add or enable "
            "another admin first"
        )


def disable_user(conn: sqlite3.Connection, name: str) -> Changed[User]:
    """Refuse the user's password, sessions and devices until :func:`enable_user`."""
    user = accounts.existing_user(conn, name)
    if user.status is UserStatus.DISABLED:
        raise Conflict(f"user {name!r} is already disabled")
    _keep_an_admin(conn, user, "disable")
    return Changed(_set_status(conn, user, UserStatus.DISABLED), f"user {name}: active -> disabled")


def enable_user(conn: sqlite3.Connection, name: str) -> Changed[User]:
    """Let a disabled user work again: same password, sessions and enrolled phones."""
    user = accounts.get_user(conn, name)
    if user is None:
        raise NotFound(f"user {name!r} does not exist")
    if user.status is UserStatus.REMOVED:
        raise Conflict(f"user {name!r} was removed; a removed user cannot be enabled again")
    if user.status is UserStatus.ACTIVE:
        raise Conflict(f"user {name!r} is not disabled")
    return Changed(_set_status(conn, user, UserStatus.ACTIVE), f"user {name}: disabled -> active")


def remove_user(conn: sqlite3.Connection, name: str) -> Changed[User]:
    """Remove for good: password erased, sessions ended, the row (and the name) kept."""
    user = accounts.existing_user(conn, name)
    _keep_an_admin(conn, user, "remove")
    ended = sessions.end_all(conn, name)
    conn.execute("UPDATE users SET password_hash=? WHERE name=?", (REMOVED_HASH, name))
    removed = _set_status(conn, user, UserStatus.REMOVED)
    detail = f"user {name}: {user.status.value} -> removed, {ended} session(s) ended"
    return Changed(dataclasses.replace(removed, password_hash=REMOVED_HASH), detail)


# -- places ----------------------------------------------------------------------------
def _existing_place(conn: sqlite3.Connection, place_id: str) -> Place:
    place = accounts.get_place(conn, place_id)
    if place is None:
        raise NotFound(f"place {place_id!r} does not exist")
    return place


def validate_place_name(name: str) -> str:
    text = name.strip()
    if not text or len(text) > PLACE_NAME_MAX or first_unsafe(text) is not None:
        raise BadRequest(
            f"invalid place name {name!r}: 1-{PLACE_NAME_MAX} characters, no control characters"
        )
    return text


def rename_place(conn: sqlite3.Connection, place_id: str, name: str) -> Changed[Place]:
    """A new display name; the id, which documents and scopes use, stays."""
    place = _existing_place(conn, place_id)
    new_name = validate_place_name(name)
    if new_name == place.name:
        raise Conflict(f"place {place_id!r} is already named {new_name!r}")
    conn.execute("UPDATE places SET name=? WHERE id=?", (new_name, place_id))
    accounts.bump_places(conn)
    detail = f"place {place_id}: name {place.name!r} -> {new_name!r}"
    return Changed(dataclasses.replace(place, name=new_name), detail)


def move_place(conn: sqlite3.Connection, place_id: str, parent: str | None) -> Changed[Place]:
    """Put a place (and all below it) under ``parent``, or make it a root (None)."""
    place = _existing_place(conn, place_id)
    if parent == place.parent:
        raise Conflict(f"place {place_id!r} is already under {parent or 'no parent (a root)'}")
    if parent is not None:
        accounts.check_parent(conn, parent)
        tree = accounts.place_tree(conn)
        if parent == place_id or place_id in tree.ancestors(parent):
            raise BadRequest(
                f"cannot move place {place_id!r} under {parent!r}: {parent!r} lies inside "
                f"{place_id!r}, so the tree would loop; pick a parent outside it"
            )
    conn.execute("UPDATE places SET parent=? WHERE id=?", (parent, place_id))
    accounts.bump_places(conn)
    detail = f"place {place_id}: parent {place.parent or '-'} -> {parent or '-'}"
    return Changed(dataclasses.replace(place, parent=parent), detail)


def retire_place(conn: sqlite3.Connection, place_id: str) -> Changed[Place]:
    """Stop a place taking documents and people; refused while it is still in use."""
    place = _existing_place(conn, place_id)
    if place.retired is not None:
        raise Conflict(f"place {place_id!r} was already retired on {place.retired[:10]}")
    tree = accounts.place_tree(conn)
    active = [c for c in tree.children(place_id) if c not in tree.retired]
    if active:
        raise Conflict(
            f"place {place_id!r} still has active places below it ({few(active)}); "
            "retire or move them first"
        )
    assigned = assigned_users(conn, place_id)
    if assigned:
        raise Conflict(
            f"place {place_id!r} still has users assigned ({few(assigned)}); give them other "
            "places first (fieldsync user set-places, or PUT /api/v1/users/NAME/places)"
        )
    stamp = _now()
    conn.execute("UPDATE places SET retired=? WHERE id=?", (stamp, place_id))
    accounts.bump_places(conn)
    retired = dataclasses.replace(place, retired=stamp)
    return Changed(retired, f"place {place_id}: active -> retired")


def assigned_users(conn: sqlite3.Connection, place_id: str) -> list[str]:
    """Users (removed ones aside) who have ``place_id`` itself among their places."""
    return [
        u.name
        for u in accounts.list_users(conn)
        if u.status is not UserStatus.REMOVED and place_id in (*u.places, *u.read_places)
    ]


def few(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown if len(names) <= _SHOWN else f"{shown} and {len(names) - _SHOWN} more"
