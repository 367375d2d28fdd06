"""People and places change: disable, enable and remove users; rename, move and retire places.

The rules themselves, as pure functions over values (users, places, the tree):
every adapter of the accounts port (:mod:`sync.people_store`) checks them with the
same errors.  A change returns a :class:`Changed`: the new state and a one-line
``detail`` saying what it was before and what it is now, for its audit entry.
Nothing is cached by the server: a user's status is read on every request
(``sync.auth``), and every change to the tree moves its version, which every
server checks on every request, so each change counts from the next request of
every user it touches, server running or not.

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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sync.errors import BadRequest, Conflict, NotFound
from sync.scopes import Place, PlaceTree, Role, User, UserStatus
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


# -- users -----------------------------------------------------------------------------
def keep_an_admin(user: User, users: Iterable[User], verb: str) -> None:
    """Refuse to disable or remove the last active admin (``users``: everyone stored)."""
    if user.role is not Role.ADMIN or user.status is not UserStatus.ACTIVE:
        return
    others = [
        u
        for u in users
        if u.role is Role.ADMIN and u.status is UserStatus.ACTIVE and u.name != user.name
    ]
    if not others:
        raise Conflict(
            f"cannot {verb} {user.name!r}: it is the last active admin; add or enable "
            "another admin first"
        )


def check_disable(user: User) -> None:
    if user.status is UserStatus.DISABLED:
        raise Conflict(f"user {user.name!r} is already disabled")


def check_enable(name: str, user: User | None) -> User:
    """A user who may be enabled: known (404), not removed (409), disabled (409)."""
    if user is None:
        raise NotFound(f"user {name!r} does not exist")
    if user.status is UserStatus.REMOVED:
        raise Conflict(f"user {name!r} was removed; a removed user cannot be enabled again")
    if user.status is UserStatus.ACTIVE:
        raise Conflict(f"user {name!r} is not disabled")
    return user


# -- places ----------------------------------------------------------------------------
def existing_place(place_id: str, place: Place | None) -> Place:
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


def check_rename(place: Place, name: str) -> str:
    """The new name, cleaned; a name equal to the old one is refused (409)."""
    new_name = validate_place_name(name)
    if new_name == place.name:
        raise Conflict(f"place {place.id!r} is already named {new_name!r}")
    return new_name


def check_move(place: Place, parent: str | None, tree: PlaceTree) -> None:
    """A move that changes something and makes no loop (the parent's own checks aside)."""
    if parent == place.parent:
        raise Conflict(f"place {place.id!r} is already under {parent or 'no parent (a root)'}")
    if parent is not None and (parent == place.id or place.id in tree.ancestors(parent)):
        raise BadRequest(
            f"cannot move place {place.id!r} under {parent!r}: {parent!r} lies inside "
            f"{place.id!r}, so the tree would loop; pick a parent outside it"
        )


def check_retire(place: Place, tree: PlaceTree, users: Sequence[User]) -> None:
    """A place that may be retired: not already, no active place below, nobody assigned."""
    if place.retired is not None:
        raise Conflict(f"place {place.id!r} was already retired on {place.retired[:10]}")
    active = [c for c in tree.children(place.id) if c not in tree.retired]
    if active:
        raise Conflict(
            f"place {place.id!r} still has active places below it ({few(active)}); "
            "retire or move them first"
        )
    assigned = assigned_users(place.id, users)
    if assigned:
        raise Conflict(
            f"place {place.id!r} still has users assigned ({few(assigned)}); give them other "
            "places first (fieldsync user set-places, or PUT /api/v1/users/NAME/places)"
        )


def assigned_users(place_id: str, users: Iterable[User]) -> list[str]:
    """Users (removed ones aside) who have ``place_id`` itself among their places."""
    return [
        u.name
        for u in users
        if u.status is not UserStatus.REMOVED and place_id in (*u.places, *u.read_places)
    ]


def few(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown if len(names) <= _SHOWN else f"{shown} and {len(names) - _SHOWN} more"
