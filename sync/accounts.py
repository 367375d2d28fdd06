"""The rules of users and places that need no storage: names, roles, passwords, languages.

Whichever adapter stores the accounts (:mod:`sync.people_store`), the same
checks run with the same errors.  Passwords are stored as scrypt hashes
(``scrypt$n$r$p$salt$hash``, RFC 7914).

The SQL lives in :mod:`sync.people_store.embedded_tables`, for the embedded
adapters and the seeders that fill a data dir's file; everything else reaches
accounts through the port (:mod:`sync.people_store.ports`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from sync.errors import BadRequest, Conflict, NotFound
from sync.scopes import Place, Role, User, UserStatus
from sync.unsafe_text import first_unsafe

# The languages the supervisor pages speak (a user's own choice, ``users.language``).
LANGUAGES = ("en", "sw")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
USER_NAME_MAX = 64
PASSWORD_MIN = 8


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


def check_password(password: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise BadRequest(f"password must be at least {PASSWORD_MIN} characters")


# -- places --------------------------------------------------------------------
def check_parent(parent: str, found: Place | None) -> Place:
    """A place that may take a new child: it exists (404) and is not retired (409)."""
    if found is None:
        raise NotFound(f"parent place {parent!r} does not exist")
    if found.retired is not None:
        raise Conflict(f"parent place {parent!r} is retired: it takes no new places")
    return found


def check_assignable(place_id: str, found: Place | None) -> None:
    """A place a user may be given: it exists (404) and is not retired (409)."""
    if found is None:
        raise NotFound(f"place {place_id!r} does not exist")
    if found.retired is not None:
        raise Conflict(f"place {place_id!r} is retired: nobody can be assigned to it")


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


def check_new_user(
    name: str, role: Role, password: str, places: Sequence[str], read_places: Sequence[str]
) -> None:
    """What a new user needs before any place is looked up: a name, a password, a scope."""
    validate_user_name(name)
    check_password(password)
    if role in (Role.CHW, Role.SUPERVISOR) and not places and not read_places:
        raise BadRequest(f"a {role.value} needs at least one --place or --read-place")


def name_taken(name: str, existing: User) -> Conflict:
    """The refusal of a name already given out (a removed name is never given again)."""
    if existing.status is UserStatus.REMOVED:
        return Conflict(
            f"user {name!r} was removed, and a removed name is never given out again (the "
            "audit trail and the device history must keep naming one person); choose another"
        )
    return Conflict(f"user {name!r} already exists")


def existing_user(name: str, user: User | None) -> User:
    """A user who has not been removed: 404 for an unknown name, 409 for a removed one."""
    if user is None:
        raise NotFound(f"user {name!r} does not exist")
    if user.status is UserStatus.REMOVED:
        raise Conflict(f"user {name!r} was removed; a removed user cannot be changed")
    return user


def check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise BadRequest(f"language must be one of {', '.join(LANGUAGES)} (e.g. sw for Swahili)")


def known_language(chosen: object) -> str:
    """A stored language, or English when none (or an unknown one) is stored."""
    return chosen if isinstance(chosen, str) and chosen in LANGUAGES else LANGUAGES[0]
