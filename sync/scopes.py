"""Places, and what a user may read and write.

Places form a tree (country > district > facility > CHW area).  A user's
*capture scope* is their places and all descendants: what they may write.
Their *read scope* is the capture scope plus their read-only places and
descendants, plus the shared pseudo-place ``""`` (forms, settings).  Admins
have no limits (``None``).  See DESIGN.md, "Per-worker document sets".
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


@dataclass(frozen=True, slots=True)
class Place:
    id: str
    parent: str | None
    name: str


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    places: tuple[str, ...]
    read_places: tuple[str, ...]
    password_hash: str

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


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
