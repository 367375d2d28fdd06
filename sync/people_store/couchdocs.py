"""The documents of ``<prefix>accounts`` and the values they hold (sync.people_store.couchdb).

    user:<name>         {"type": "user", "name", "role", "places", "read_places",
                         "password_hash" (scrypt, as in SQLite), "status", "language",
                         "created", "updated"}
    place:<id>          {"type": "place", "id", "parent", "name", "retired", "created"}
    session:<sha256>    {"type": "session", "user", "password_tag", "created", "last_seen"}

Pure functions: ids, bodies, and values read back from the live leaves of a
document (a user's strictest status counts where leaves disagree).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from sync import accounts, people, sessions
from sync.errors import StoreUnavailable
from sync.scopes import Place, Role, User, UserStatus
from sync.sessions import Session

Doc = dict[str, Any]
_STRICTNESS = {UserStatus.ACTIVE: 0, UserStatus.DISABLED: 1, UserStatus.REMOVED: 2}


def user_doc_id(name: str) -> str:
    return f"user:{name}"


def place_doc_id(place_id: str) -> str:
    return f"place:{place_id}"


def session_doc_id(session_id: str) -> str:
    return session_doc_id_of_hash(sessions.id_hash(session_id))


def session_doc_id_of_hash(id_hash: str) -> str:
    """A session's id from the hash the embedded store keeps (``fieldsync migrate``)."""
    return f"session:{id_hash}"


def user_body(user: User) -> Doc:
    return {
        "type": "user",
        "name": user.name,
        "role": user.role.value,
        "places": list(user.places),
        "read_places": list(user.read_places),
        "password_hash": user.password_hash,
        "status": user.status.value,
        "language": accounts.LANGUAGES[0],
    }


def place_body(place: Place) -> Doc:
    return {
        "type": "place",
        "id": place.id,
        "parent": place.parent,
        "name": place.name,
        "retired": place.retired,
    }


def user_of(leaves: Sequence[Mapping[str, Any]]) -> User | None:
    """The user of the winning leaf, as strict as all live leaves together: the strictest
    status any holds, and only the places every one grants (a fork a writer has not
    settled yet, or never will: one leaf's disable or narrowing is never lost)."""
    if not leaves:
        return None
    doc = leaves[0]
    statuses = [UserStatus(str(leaf.get("status", "active"))) for leaf in leaves]
    status = max(statuses, key=_STRICTNESS.__getitem__)
    user = User(
        str(doc["name"]),
        Role(str(doc["role"])),
        _granted_by_all(leaves, "places"),
        _granted_by_all(leaves, "read_places"),
        str(doc["password_hash"]),
        status,
    )
    if status is UserStatus.REMOVED:
        user = dataclasses.replace(user, password_hash=people.REMOVED_HASH)
    return user


def _granted_by_all(leaves: Sequence[Mapping[str, Any]], field: str) -> tuple[str, ...]:
    """The winner's list of ``field``, less what some other live leaf does not hold."""
    held = [set(leaf.get(field, [])) for leaf in leaves[1:]]
    return tuple(p for p in leaves[0].get(field, []) if all(p in one for one in held))


def place_of(doc: Mapping[str, Any]) -> Place:
    return Place(str(doc["id"]), doc.get("parent"), str(doc["name"]), doc.get("retired"))


def session_of(leaves: Sequence[Mapping[str, Any]]) -> Session | None:
    if not leaves:
        return None
    doc = leaves[0]
    return Session(
        str(doc["user"]), str(doc["password_tag"]), float(doc["created"]), float(doc["last_seen"])
    )


def version_of(leaves: Sequence[Mapping[str, Any]]) -> str:
    return str(leaves[0]["_rev"]) if leaves else "0"


def bare(doc: Mapping[str, Any]) -> Doc:
    return {k: v for k, v in doc.items() if k not in ("_conflicts", "_revisions")}


def json_key(text: str) -> str:
    return orjson.dumps(text).decode()


def never() -> User:
    raise StoreUnavailable("CouchDB answered a user document without its fields")
