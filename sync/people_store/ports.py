"""The accounts port: users, places and sessions, in the words of the code that uses them.

    AccountStore                    the port (a typing.Protocol)
    ├── sync.people_store.embedded  SQLite, inside the server's single writer
    └── sync.people_store.couchdb   CouchDB / Cloudant, safe with many instances
    LoginLimits                     the login-guessing counters (limits, couchdb_limits)

Whichever adapter runs, these hold (tests/people_store/test_account_store_contract.py
checks each against every adapter):

- **Read fresh.**  :meth:`AccountStore.lookup` reads the user and the session
  from storage on every call: a user disabled, removed or given other places,
  or a session ended, through any instance counts from the next request of
  every instance.  Nothing here caches users or sessions.
- **The tree has a version.**  :meth:`AccountStore.places_version` changes
  (after the change is stored) whenever a place is added, renamed, moved or
  retired, so a caller may keep the tree it loaded *after* reading a version
  until the version changes.
- **One name, one person.**  A user name is given out once; a removed user
  keeps their row (and name) for good.  A place id is given out once.
- **Secrets as today.**  Passwords are kept only as scrypt hashes; a session
  is stored under the SHA-256 of its cookie value, never the value itself.
- **Audited with the change.**  Every change made ``by`` an :class:`Actor`
  records its audit entry: in the same transaction where the backend has
  transactions (embedded), otherwise right after the write, before the answer
  (the audit trail's own flush).

Errors: the server's :mod:`sync.errors` (BadRequest, NotFound, Conflict, and
StoreUnavailable when the storage fails), with the same reasons on every adapter;
and :class:`AccountsNotReady` (503) from a lookup while a server copies its data
dir's users into CouchDB (``sync.people_store.backends``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sync.errors import ServiceUnavailable
from sync.ratelimit import Reservation
from sync.scopes import Place, PlaceTree, Role, User
from sync.sessions import Lifetime, Session


class AccountsNotReady(ServiceUnavailable):
    """503: the server cannot yet tell whether a name exists (its data dir's users are
    still being copied into CouchDB); nothing was checked, nothing is counted."""

    default_reason = "accounts are not ready yet; try again in a few seconds"


@dataclass(frozen=True)
class Actor:
    """Who made a change (an admin, the CLI's operator): the audit entry names them."""

    name: str
    device: str | None = None


@dataclass(frozen=True)
class Lookup:
    """What one request needs to know of its caller: the user, the session (if any), and
    the place tree's version as read *before* them (see ``places_version``)."""

    user: User | None
    session: Session | None
    places_version: str


@dataclass(frozen=True)
class Opened:
    """A login's session: the user as stored now (None: gone or removed), and the raw
    cookie value (None unless the user is active)."""

    user: User | None
    session_id: str | None


def details_of_scope(places: Sequence[str], read_places: Sequence[str]) -> str:
    """How an audit entry says a user's places (``places a,b, read -``)."""
    return f"places {','.join(places) or '-'}, read {','.join(read_places) or '-'}"


class AccountStore(Protocol):
    # -- reading (every request) ---------------------------------------------------------
    async def lookup(self, name: str | None, session_id: str | None = None) -> Lookup:
        """The user ``name``, or the user of the session ``session_id`` (its raw cookie
        value), whatever their status; the session too when one was asked for; and the
        tree's version, read first."""
        ...

    async def places_version(self) -> str:
        """A token that changes whenever the place tree changes (compare for equality)."""
        ...

    async def place_tree(self) -> PlaceTree:
        """Every place, retired ones included."""
        ...

    async def get_user(self, name: str) -> User | None: ...

    async def list_users(self) -> list[User]:
        """Every user (removed ones too), by name."""
        ...

    async def get_place(self, place_id: str) -> Place | None: ...

    async def list_places(self) -> list[Place]:
        """Every place, by id."""
        ...

    async def language(self, name: str) -> str:
        """The language ``name`` reads the supervisor pages in (``en`` when unknown)."""
        ...

    # -- changing users ------------------------------------------------------------------
    async def add_user(
        self,
        name: str,
        role: Role,
        password: str,
        places: Sequence[str],
        read_places: Sequence[str],
        by: Actor | None,
    ) -> User: ...

    async def set_places(
        self, name: str, places: Sequence[str], read_places: Sequence[str], by: Actor | None
    ) -> User: ...

    async def set_password(self, name: str, password: str, by: Actor | None) -> None:
        """A new password; it ends every session opened with the old one (password tag)."""
        ...

    async def set_language(self, name: str, language: str, by: Actor | None) -> None: ...

    async def disable_user(self, name: str, by: Actor | None) -> User: ...

    async def enable_user(self, name: str, by: Actor | None) -> User: ...

    async def remove_user(self, name: str, by: Actor | None) -> User:
        """For good: password erased, every session ended, the row and name kept."""
        ...

    # -- changing places -----------------------------------------------------------------
    async def add_place(
        self, place_id: str, parent: str | None, name: str | None, by: Actor | None
    ) -> Place: ...

    async def edit_place(
        self, place_id: str, name: str | None, move: bool, parent: str | None, by: Actor | None
    ) -> Place:
        """Rename (``name`` not None) and/or move (``move``: under ``parent``, None a root)."""
        ...

    async def retire_place(self, place_id: str, by: Actor | None) -> Place: ...

    # -- sessions ------------------------------------------------------------------------
    async def start_session(self, user: User, now: float, lifetime: Lifetime) -> Opened:
        """Open a session for ``user`` if they are still active (read again here).

        The session remembers the password it was opened with (``user``'s hash), so
        a password changed meanwhile leaves it unusable.  Sessions past ``lifetime``
        may be forgotten on the way.
        """
        ...

    async def touch_session(self, session_id: str, now: float) -> None:
        """Note that the session was used at ``now`` (callers do it at most once a minute)."""
        ...

    async def end_session(self, session_id: str) -> str | None:
        """End one session; the user it belonged to (None when there was none)."""
        ...

    async def logout_user(self, name: str, by: Actor | None) -> int:
        """End every session of ``name`` (404 for an unknown user); how many ended."""
        ...


class LoginLimits(Protocol):
    """Failed logins counted per key (``user:NAME``, ``ip:ADDRESS``) in a sliding window.

    An attempt is counted as a failure *before* it is checked and forgiven once
    it proves right, so parallel guesses cannot pass a limit (see sync.ratelimit).
    """

    async def reserve(self, keys: tuple[str, ...]) -> Reservation:
        """Count an attempt on ``keys`` now; raise ``sync.ratelimit.Limited`` at a limit."""
        ...

    async def forgive(self, reservation: Reservation) -> None: ...

    async def retry_after(self, keys: tuple[str, ...]) -> int | None:
        """Seconds until the first limited key of ``keys`` may try again; None if none is."""
        ...
