"""The CouchDB adapter of the accounts port (sync.people_store.ports): many instances, one truth.

One database, ``<prefix>accounts``, holds (bodies: :mod:`sync.people_store.couchdocs`)::

    user:<name>         a user, with the scrypt hash of their password (as in SQLite)
    place:<id>          a place
    places_version      {"n"}: moved on after every change of a place
    session:<sha256>    a session, under the SHA-256 of the cookie value (never the value)
    rules_guard         held by a change the cross-document rules look at (``guard``)
    failures:<sha256>   login-guessing counters (``limits``)

Every read of a user or a session is a quorum read of all its live leaves
(``_bulk_get``), never a cache: a user disabled through one instance is refused by
every instance from the next request.  The place tree may be kept by a caller
until :meth:`places_version` changes; the version document is written *after*
the place, so a tree loaded after reading a version is never older than it.
(An instance that dies between the two writes leaves the others on the old tree
until the next change of a place: the one gap, and it costs only staleness.)

Changes are read-modify-write against the winner's ``_rev``: a 409 (another
instance wrote first) reads again and checks the rules again; a 202 (fewer than a
quorum of copies took it, so a rival write may have forked the document) reads
back, and when the document forked, checks and writes the change again on the
other leaf and deletes its own (``_settle``): a rival's change is never dropped.
Where leaves still disagree when read, a user is as strict as all of them: the
most restrictive status (removed, then disabled, then active), the places every
leaf grants.

Rules that look at more than one document ("the last active admin", "nobody is
assigned to a place being retired", "a move must not make a loop") are checked
and written while holding one guard document (:mod:`sync.people_store.couchdb_guard`), so
two instances changing *different* documents at once cannot both pass them: one
waits for the other.  Lists (users, places) take their ids from ``_all_docs`` and
their bodies from a quorum read.  Ending every session of a user and forgetting
expired sessions scan the session documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from sync import accounts, people, sessions
from sync.audit import AuditLog
from sync.errors import BadRequest, Conflict, NotFound, StoreUnavailable
from sync.people_store.couchdb_guard import RulesGuard
from sync.people_store.couchdocs import (
    Doc,
    bare,
    json_key,
    never,
    place_body,
    place_doc_id,
    place_of,
    session_doc_id,
    session_of,
    user_body,
    user_doc_id,
    user_of,
    version_of,
)
from sync.people_store.ports import AccountsNotReady, Actor, Lookup, Opened, details_of_scope
from sync.recent import RecentLookups
from sync.scopes import Place, PlaceTree, Role, User, UserStatus, validate_place_id
from sync.sessions import Lifetime
from sync.store.couchdb.client import CouchClient, path
from sync.store.couchdb.once import CreatedOnce

DB_NAME = "accounts"  # after the deployment's prefix
VERSION_DOC = "places_version"
PURGE_EVERY = 3600.0  # seconds between two sweeps of expired sessions, per instance
_TRIES = 50
_MARK = "write"  # the token of the write that made a leaf


def _marked(body: Doc, apply: Callable[[Doc], None]) -> Doc:
    """``apply``'d, with a fresh token that finds this write's leaf again (``_settle``)."""
    apply(body)
    body[_MARK] = secrets.token_hex(8)
    return body


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


Mirror = Callable[[User | Place], Awaitable[None]]
P = ParamSpec("P")
T = TypeVar("T")


def _guarded(
    change: Callable[Concatenate[CouchAccounts, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[CouchAccounts, P], Coroutine[Any, Any, T]]:
    """Run ``change`` holding the rules guard: its reads, checks and writes, alone."""

    async def guarded(self: CouchAccounts, /, *args: P.args, **kwargs: P.kwargs) -> T:
        await self._ensure_db()
        async with self._guard.held():
            return await change(self, *args, **kwargs)

    return guarded


class CouchAccounts:
    def __init__(
        self,
        client: CouchClient,
        db: str,
        audit: AuditLog | None = None,
        mirror: Mirror | None = None,
        recent_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._db = db
        self._audit = audit
        # Told every user and place as changed here (the data dir's copy, for the
        # domains that still read users from the embedded tables: backends).
        self._mirror = mirror
        self._home = CreatedOnce(client, self._db)
        self._purged = 0.0
        self._adopting = False  # the data dir's users are still to be copied in (backends)
        self._guard = RulesGuard(client, db)  # the rules across documents (couchdb_guard)
        # Callers read a moment ago (sync.recent): forgotten after every write here.
        self._recent: RecentLookups[Lookup] = RecentLookups(recent_seconds, clock=clock)

    @classmethod
    def for_prefix(
        cls,
        client: CouchClient,
        prefix: str,
        audit: AuditLog | None = None,
        mirror: Mirror | None = None,
        recent_seconds: float = 0.0,
    ) -> CouchAccounts:
        return cls(client, prefix + DB_NAME, audit, mirror, recent_seconds)

    def adopting(self, pending: bool) -> None:
        """Say whether this server's data dir still has users to copy into CouchDB.

        Meanwhile a name (or session) CouchDB lacks may be one of them, so
        :meth:`lookup` answers :class:`AccountsNotReady` (503) for it rather than "no
        such user": a 401 would count against the name's login limit, and lock out
        a worker whose only fault is that this server started while CouchDB was away.
        """
        self._adopting = pending

    # -- reading ---------------------------------------------------------------------------
    async def lookup(self, name: str | None, session_id: str | None = None) -> Lookup:
        """One ``_bulk_get`` (the version, and the user or session), unless the same caller
        was read less than ``recent_seconds`` ago and nothing was written here since."""
        return await self._recent.read_once(
            (name, session_id), lambda: self._lookup(name, session_id), _always
        )

    async def _lookup(self, name: str | None, session_id: str | None) -> Lookup:
        await self._ensure_db()
        first = [VERSION_DOC] if session_id is None else [VERSION_DOC, session_doc_id(session_id)]
        if session_id is None and name is not None:
            first.append(user_doc_id(name))  # Basic: one request for both
        found = await self._client.leaves_by_id(self._db, first)
        version = found.get(VERSION_DOC, [])
        session = None
        if session_id is not None:
            session = session_of(found.get(session_doc_id(session_id), []))
            name = session.user if session is not None else None
            user = None if name is None else await self.get_user(name)
        else:
            user = None if name is None else user_of(found.get(user_doc_id(name), []))
        if user is None and self._adopting and (name is not None or session_id is not None):
            raise AccountsNotReady()  # perhaps in the data dir, not here yet: no 401
        return Lookup(user, session, version_of(version))

    async def places_version(self) -> str:
        await self._ensure_db()
        return version_of(await self._leaves(VERSION_DOC))

    async def place_tree(self) -> PlaceTree:
        return PlaceTree(await self.list_places())

    async def get_user(self, name: str) -> User | None:
        await self._ensure_db()
        return user_of(await self._leaves(user_doc_id(name)))

    async def list_users(self) -> list[User]:
        return [user_of(leaves) or never() for leaves in await self._prefixed_leaves("user:")]

    async def get_place(self, place_id: str) -> Place | None:
        await self._ensure_db()
        leaves = await self._leaves(place_doc_id(place_id))
        return place_of(leaves[0]) if leaves else None

    async def list_places(self) -> list[Place]:
        return [place_of(leaves[0]) for leaves in await self._prefixed_leaves("place:")]

    async def language(self, name: str) -> str:
        await self._ensure_db()
        leaves = await self._leaves(user_doc_id(name))
        return accounts.known_language(leaves[0].get("language") if leaves else None)

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
        accounts.check_new_user(name, role, password, places, read_places)
        hashed = await asyncio.to_thread(accounts.hash_password, password)  # off the loop
        user = User(name, role, tuple(places), tuple(read_places), hashed)
        return await self._add_user(user, by)

    @_guarded
    async def _add_user(self, user: User, by: Actor | None) -> User:
        name, role, places, read_places = user.name, user.role, user.places, user.read_places
        await self._check_places([*places, *read_places])
        body = {**user_body(user), "created": _now(), "updated": _now()}
        try:
            await self._client.put_status(path(self._db, user_doc_id(name)), body)
        except Conflict:
            existing = await self.get_user(name)
            if existing is None:  # deleted meanwhile by hand: still not ours to take
                raise Conflict(f"user {name!r} already exists") from None
            raise accounts.name_taken(name, existing) from None
        self._recent.forget()  # a name answered "unknown" a moment ago is known now
        detail = f"user {name}: role {role.value}, {details_of_scope(places, read_places)}"
        self._note(by, "user_add", detail)
        await self._mirrored(user)
        return user

    @_guarded
    async def set_places(
        self, name: str, places: Sequence[str], read_places: Sequence[str], by: Actor | None
    ) -> User:
        async def check(user: User) -> None:
            await self._check_places([*places, *read_places])

        def apply(doc: Doc) -> None:
            doc.update(places=list(places), read_places=list(read_places))

        user = await self._change_user(name, check, apply)
        self._note(by, "user_places", f"user {name}: {details_of_scope(places, read_places)}")
        return user

    async def set_password(self, name: str, password: str, by: Actor | None) -> None:
        accounts.check_password(password)
        password_hash = await asyncio.to_thread(accounts.hash_password, password)

        def apply(doc: Doc) -> None:
            doc["password_hash"] = password_hash

        await self._change_user(name, _no_check, apply)
        self._note(by, "user_password", f"user {name}: password set")

    async def set_language(self, name: str, language: str, by: Actor | None) -> None:
        accounts.check_language(language)

        def apply(doc: Doc) -> None:
            doc["language"] = language

        await self._change_user(name, _no_check, apply)
        self._note(by, "user_language", f"user {name}: console language {language}")

    @_guarded
    async def disable_user(self, name: str, by: Actor | None) -> User:
        async def check(user: User) -> None:
            people.check_disable(user)
            await self._keep_an_admin(user, "disable")

        user = await self._change_user(name, check, _status(UserStatus.DISABLED))
        self._note(by, "user_disable", f"user {name}: active -> disabled")
        return user

    async def enable_user(self, name: str, by: Actor | None) -> User:
        async def check(user: User) -> None:
            if user.status is UserStatus.ACTIVE:
                raise Conflict(f"user {name!r} is not disabled")

        user = await self._change_user(name, check, _status(UserStatus.ACTIVE), enable=True)
        self._note(by, "user_enable", f"user {name}: disabled -> active")
        return user

    @_guarded
    async def remove_user(self, name: str, by: Actor | None) -> User:
        before: list[UserStatus] = []

        async def check(user: User) -> None:
            await self._keep_an_admin(user, "remove")
            before.append(user.status)

        def apply(doc: Doc) -> None:
            doc.update(status=UserStatus.REMOVED.value, password_hash=people.REMOVED_HASH)

        user = await self._change_user(name, check, apply)
        ended = await self._end_all(name)
        was = before[-1].value if before else "active"
        self._note(by, "user_remove", f"user {name}: {was} -> removed, {ended} session(s) ended")
        return user

    # -- changing places ---------------------------------------------------------------------
    async def add_place(
        self, place_id: str, parent: str | None, name: str | None, by: Actor | None
    ) -> Place:
        validate_place_id(place_id)
        return await self._add_place(place_id, parent, name, by)

    @_guarded
    async def _add_place(
        self, place_id: str, parent: str | None, name: str | None, by: Actor | None
    ) -> Place:
        if parent is not None:
            await self._check_parent(parent)
        place = Place(place_id, parent, name or place_id)
        body = {**place_body(place), "created": _now()}
        try:
            await self._client.put_status(path(self._db, place_doc_id(place_id)), body)
        except Conflict:
            raise Conflict(f"place {place_id!r} already exists") from None
        await self._bump_places()
        self._note(by, "place_add", f"place {place_id}, parent {parent or '-'}")
        await self._mirrored(place)
        return place

    async def edit_place(
        self, place_id: str, name: str | None, move: bool, parent: str | None, by: Actor | None
    ) -> Place:
        if name is None and not move:
            raise BadRequest('give "name" (a new name) and/or "parent" (a place id, or null)')
        return await self._edit_place(place_id, name, move, parent, by)

    @_guarded
    async def _edit_place(
        self, place_id: str, name: str | None, move: bool, parent: str | None, by: Actor | None
    ) -> Place:
        place = await self._existing_place(place_id)
        if name is not None:
            place = await self._rename(place, name, by)
        if move:
            place = await self._move(place, parent, by)
        return place

    async def _rename(self, place: Place, name: str, by: Actor | None) -> Place:
        new_name = people.check_rename(place, name)
        changed = await self._change_place(place.id, lambda doc: doc.update(name=new_name))
        self._note(by, "place_rename", f"place {place.id}: name {place.name!r} -> {new_name!r}")
        return changed

    async def _move(self, place: Place, parent: str | None, by: Actor | None) -> Place:
        if parent is not None and parent != place.parent:
            await self._check_parent(parent)
        people.check_move(place, parent, await self.place_tree())
        changed = await self._change_place(place.id, lambda doc: doc.update(parent=parent))
        self._note(
            by, "place_move", f"place {place.id}: parent {place.parent or '-'} -> {parent or '-'}"
        )
        return changed

    @_guarded
    async def retire_place(self, place_id: str, by: Actor | None) -> Place:
        place = await self._existing_place(place_id)
        people.check_retire(place, await self.place_tree(), await self.list_users())
        stamp = _now()
        changed = await self._change_place(place_id, lambda doc: doc.update(retired=stamp))
        self._note(by, "place_retire", f"place {place_id}: active -> retired")
        return changed

    # -- sessions ------------------------------------------------------------------------------
    async def start_session(self, user: User, now: float, lifetime: Lifetime) -> Opened:
        current = await self.get_user(user.name)
        if current is None or current.status is UserStatus.REMOVED:
            return Opened(None, None)
        if current.status is not UserStatus.ACTIVE:
            return Opened(current, None)
        await self._purge(lifetime, now)
        session_id = secrets.token_urlsafe(32)
        body = {
            "type": "session",
            "user": user.name,
            "password_tag": sessions.password_tag(user.password_hash),
            "created": now,
            "last_seen": now,
        }
        # A new random id: no other writer, so 202 is as good as 201.
        await self._client.put_status(path(self._db, session_doc_id(session_id)), body)
        return Opened(current, session_id)

    async def touch_session(self, session_id: str, now: float) -> None:
        leaves = await self._leaves(session_doc_id(session_id))
        if not leaves:
            return
        body = {**bare(leaves[0]), "last_seen": now}
        with contextlib.suppress(Conflict, NotFound):  # touched or ended meanwhile: fine
            await self._client.put_status(path(self._db, session_doc_id(session_id)), body)

    async def end_session(self, session_id: str) -> str | None:
        await self._ensure_db()
        leaves = await self._leaves(session_doc_id(session_id))
        await self._delete(session_doc_id(session_id), leaves)
        return str(leaves[0]["user"]) if leaves else None

    async def logout_user(self, name: str, by: Actor | None) -> int:
        if await self.get_user(name) is None:
            raise NotFound(f"user {name!r} does not exist")
        ended = await self._end_all(name)
        self._note(by, "user_logout", f"user {name}: every session ended")
        return ended

    async def _end_all(self, name: str) -> int:
        docs = [d for d in await self._prefixed("session:") if d.get("user") == name]
        for doc in docs:
            await self._delete(str(doc["_id"]), await self._leaves(str(doc["_id"])))
        return len(docs)

    async def _purge(self, lifetime: Lifetime, now: float) -> None:
        """Forget sessions that can no longer be used, at most once per PURGE_EVERY here."""
        if time.monotonic() - self._purged < PURGE_EVERY and self._purged:
            return
        self._purged = time.monotonic()
        for doc in await self._prefixed("session:"):
            session = session_of([doc])
            if session is not None and not lifetime.alive(session, now):
                await self._delete(str(doc["_id"]), [doc])

    # -- rules read from CouchDB -----------------------------------------------------------------
    async def _check_places(self, places: Sequence[str]) -> None:
        """Places a user may be given: they exist (404) and are not retired (409)."""
        for place_id in places:
            accounts.check_assignable(place_id, await self.get_place(place_id))

    async def _check_parent(self, parent: str) -> None:
        accounts.check_parent(parent, await self.get_place(parent))

    async def _existing_place(self, place_id: str) -> Place:
        return people.existing_place(place_id, await self.get_place(place_id))

    async def _keep_an_admin(self, user: User, verb: str) -> None:
        if user.role is Role.ADMIN and user.status is UserStatus.ACTIVE:
            people.keep_an_admin(user, await self.list_users(), verb)

    # -- read-modify-write -------------------------------------------------------------------
    async def _change_user(
        self,
        name: str,
        check: Callable[[User], Any],
        apply: Callable[[Doc], None],
        enable: bool = False,
    ) -> User:
        """Check the rules on the user as stored, then write ``apply``'d against its _rev."""

        async def checked(leaves: list[Doc]) -> None:
            user = user_of(leaves)
            if user is None:
                raise NotFound(f"user {name!r} does not exist")
            if user.status is UserStatus.REMOVED:
                verb = "enabled again" if enable else "changed"
                raise Conflict(f"user {name!r} was removed; a removed user cannot be {verb}")
            await check(user)

        def stamped(doc: Doc) -> None:
            apply(doc)
            doc["updated"] = _now()

        doc = await self._update(user_doc_id(name), checked, stamped)
        user = user_of([doc]) or never()
        await self._mirrored(user)
        return user

    async def _change_place(self, place_id: str, apply: Callable[[Doc], None]) -> Place:
        async def checked(leaves: list[Doc]) -> None:
            if not leaves:
                raise NotFound(f"place {place_id!r} does not exist")

        doc = await self._update(place_doc_id(place_id), checked, apply)
        await self._bump_places()
        place = place_of(doc)
        await self._mirrored(place)
        return place

    async def _bump_places(self) -> None:
        async def anything(leaves: list[Doc]) -> None:
            return None

        def bump(doc: Doc) -> None:
            doc["n"] = int(doc.get("n", 0)) + 1

        await self._update(VERSION_DOC, anything, bump)

    async def _update(
        self,
        doc_id: str,
        check: Callable[[list[Doc]], Any],
        apply: Callable[[Doc], None],
    ) -> Doc:
        """One change of ``doc_id``: rules checked on what is stored, 409 retried, a fork
        left by a 202 settled on the winner; the document as written."""
        await self._ensure_db()
        try:
            return await self._try_update(doc_id, check, apply)
        finally:
            self._recent.forget()  # whatever the outcome: the next lookup reads again

    async def _try_update(
        self,
        doc_id: str,
        check: Callable[[list[Doc]], Any],
        apply: Callable[[Doc], None],
    ) -> Doc:
        for _ in range(_TRIES):
            leaves = await self._leaves(doc_id)
            await check(leaves)
            body = _marked(bare(leaves[0]) if leaves else {"_id": doc_id}, apply)
            try:
                status = await self._client.put_status(path(self._db, doc_id), body)
            except Conflict:
                continue  # another instance wrote first: read and check again
            if status == 202:
                return await self._settle(doc_id, check, apply, body)
            return body
        raise StoreUnavailable(
            f"Could not change {doc_id} (too many concurrent writers); try again."
        )

    async def _settle(
        self,
        doc_id: str,
        check: Callable[[list[Doc]], Any],
        apply: Callable[[Doc], None],
        ours: Doc,
    ) -> Doc:
        """After a 202 (fewer than a quorum of copies took ``ours``): a rival may have
        written from the same revision on the other copies, and had its 201.  While our
        leaf stands beside others, the change goes again onto CouchDB's winner among
        them, its rules checked on it, and only our own leaf is deleted — never a
        rival's, whose change (a disable, a new password) would be lost.  A rival's 201
        never settles, so the 202's writer always does, winner or not.  Rules that no
        longer hold there take our leaf back and raise."""
        for _ in range(_TRIES):
            leaves = await self._leaves(doc_id)
            mine = [leaf for leaf in leaves if leaf.get(_MARK) == ours[_MARK]]
            others = [leaf for leaf in leaves if leaf.get(_MARK) != ours[_MARK]]
            if not mine or not others:  # alone, or built on (our change is in): settled
                return ours
            try:
                await check(others)
            except Exception:
                await self._delete(doc_id, mine)
                raise
            body = _marked(bare(others[0]), apply)
            try:
                status = await self._client.put_status(path(self._db, doc_id), body)
            except Conflict:
                continue
            await self._delete(doc_id, mine)
            if status == 201:
                return body
            ours = body  # a 202 again: settle that write in turn
        raise StoreUnavailable(f"Could not settle {doc_id} (too many concurrent writers).")

    async def _delete(self, doc_id: str, leaves: Sequence[Mapping[str, Any]]) -> None:
        self._recent.forget()
        await self._client.delete_leaves(self._db, doc_id, leaves)

    # -- CouchDB -----------------------------------------------------------------------------
    async def database(self) -> str:
        """The accounts database's name, once it exists (the login limits share it)."""
        await self._ensure_db()
        return self._db

    async def _leaves(self, doc_id: str) -> list[Doc]:
        found = await self._client.leaves_by_id(self._db, [doc_id])
        return found.get(doc_id, [])

    async def _prefixed(self, prefix: str) -> list[Doc]:
        """Every document whose id starts with ``prefix``, the winner of each, by id."""
        return [leaves[0] for leaves in await self._prefixed_leaves(prefix)]

    async def _prefixed_leaves(self, prefix: str) -> list[list[Doc]]:
        """The live leaves of every document whose id starts with ``prefix``, by id.

        The ids come from ``_all_docs`` (one copy's), the bodies from a quorum read
        (``_bulk_get``): a change stored by a quorum is seen, whichever node answers.
        """
        await self._ensure_db()
        params = {"startkey": json_key(prefix), "endkey": json_key(prefix + "\ufff0")}
        answer = await self._client.json("GET", path(self._db, "_all_docs"), params=params)
        ids = [str(row["id"]) for row in answer.get("rows", [])]
        found = await self._client.leaves_by_id(self._db, ids)
        return [found[doc_id] for doc_id in ids if doc_id in found]

    async def _ensure_db(self) -> None:
        """Create the database once per process (another instance may have made it)."""
        await self._home.ensure()

    async def _mirrored(self, value: User | Place) -> None:
        if self._mirror is not None:
            await self._mirror(value)

    def _note(self, by: Actor | None, action: str, detail: str) -> None:
        """The change's audit entry: recorded now, made safe before the answer goes out."""
        if self._audit is not None and by is not None:
            self._audit.record(by.name, action, None, (), by.device, detail=detail)

    async def adopt(self, users: Sequence[User], places: Sequence[Place]) -> int:
        """Create the users and places that CouchDB lacks (never overwrites one); how many.

        The server adopts its data dir's accounts on start, so a deployment moved onto
        CouchDB keeps its people; a name or place already in CouchDB wins.
        """
        await self._ensure_db()
        docs = [
            {"_id": user_doc_id(u.name), **user_body(u), "created": _now(), "updated": _now()}
            for u in users
        ]
        docs += [{"_id": place_doc_id(p.id), **place_body(p), "created": _now()} for p in places]
        if not docs:
            return 0
        answer = await self._client.json("POST", path(self._db, "_bulk_docs"), body={"docs": docs})
        self._recent.forget()
        created = [r for r in answer if "error" not in r]
        if any(str(r["id"]).startswith("place:") for r in created):
            await self._bump_places()
        return len(created)


def _status(status: UserStatus) -> Callable[[Doc], None]:
    def apply(doc: Doc) -> None:
        doc["status"] = status.value

    return apply


async def _no_check(user: User) -> None:
    return None


def _always(found: Lookup) -> bool:
    return True
