"""Places, and what a user may read and write.

Places form a tree (country > district > facility > CHW area).  A user's
*capture scope* is their places and all descendants: what they may write.
Their *read scope* is the capture scope plus their read-only places and
descendants, plus the shared pseudo-place ``""`` (forms, settings).  Admins
have no limits (``None``).  See DESIGN.md, "Per-worker document sets".

A *retired* place (``fieldsync place retire``) stays in the tree and in the
scopes above it: its documents stay readable by whoever reads it through an
ancestor, and its phones stay managed by whoever captures it; but no document
is written *into* it any more, by anyone (``sync.replication.context.require_write``).
A user is ``active``, ``disabled`` (refused until enabled again) or ``removed``
(refused for good; the row stays so that their name, devices and audit history
keep meaning what they meant).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sync.errors import BadRequest
from sync.store.base import SHARED

PLACE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class Role(enum.Enum):
    CHW = "chw"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    GATEWAY = "gateway"


class UserStatus(enum.Enum):
    ACTIVE = "active"
    DISABLED = "disabled"  # refused until enabled; sessions and devices wait
    REMOVED = "removed"  # refused for good; the name is never given out again


@dataclass(frozen=True, slots=True)
class Place:
    id: str
    parent: str | None
    name: str
    retired: str | None = None  # when it was retired (ISO time), None while in use


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    places: tuple[str, ...]
    read_places: tuple[str, ...]
    password_hash: str
    status: UserStatus = UserStatus.ACTIVE

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def active(self) -> bool:
        return self.status is UserStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class Scope:
    """``None`` means unlimited (admins)."""

    capture: frozenset[str] | None
    read: frozenset[str] | None

    def can_read(self, place: str) -> bool:
        return self.read is None or place in self.read

    def can_write(self, place: str) -> bool:
        return self.capture is None or place in self.capture


UNLIMITED = Scope(None, None)


def validate_place_id(place_id: str) -> str:
    if not PLACE_ID_RE.fullmatch(place_id):  # match's `$` lets a trailing newline in
        raise BadRequest(
            f"invalid place id {place_id!r}: use 1-128 letters, digits, '_', '.', ':' or '-'"
        )
    return place_id


class PlaceTree:
    """The place hierarchy, for expanding scopes to descendants."""

    def __init__(self, places: Iterable[Place]) -> None:
        self.places: Mapping[str, Place] = {p.id: p for p in places}
        children: dict[str, list[str]] = {}
        for place in self.places.values():
            if place.parent is not None:
                children.setdefault(place.parent, []).append(place.id)
        self._children = children
        self.retired = frozenset(p.id for p in self.places.values() if p.retired is not None)

    def ancestors(self, place_id: str) -> list[str]:
        """The places above ``place_id``, nearest first (a cycle, which moves refuse, stops)."""
        found: list[str] = []
        current = self.places.get(place_id)
        while current is not None and current.parent is not None and current.parent not in found:
            found.append(current.parent)
            current = self.places.get(current.parent)
        return found

    def children(self, place_id: str) -> list[str]:
        return sorted(self._children.get(place_id, ()))

    def descendants(self, roots: Iterable[str]) -> frozenset[str]:
        """The roots that exist and everything below them."""
        found: set[str] = set()
        stack = [r for r in roots if r in self.places]
        while stack:
            current = stack.pop()
            if current in found:
                continue
            found.add(current)
            stack.extend(self._children.get(current, ()))
        return frozenset(found)

    def scope_of(self, user: User) -> Scope:
        if user.is_admin:
            return UNLIMITED
        capture = self.descendants(user.places)
        read = capture | self.descendants(user.read_places) | {SHARED}
        return Scope(capture, frozenset(read))
