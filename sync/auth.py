"""Who is calling: HTTP Basic, or the ``AuthSession`` cookie from ``POST /_session``.

A wrong name and a wrong password give the same 401, after the same work: an
unknown name is checked against a dummy scrypt hash.  Every password check
reserves its failure in the login window *before* scrypt runs and is forgiven
once the caller is accepted (``sync.ratelimit``), so parallel guesses cannot
pass the limit.

Verified Basic credentials are remembered (keyed by a hash of name, password
and stored hash) so a PouchDB client, which sends them on every request, does
not pay for scrypt each time.  While a name is limited, remembered credentials
pass only with a valid device token: otherwise the limit itself would answer
"429" to a wrong guess and "200" to the right one, at network speed.

Basic requests refused by a device check (no, unknown or revoked
``X-Device-Token``) get exactly the answer of a wrong password, after the same
scrypt and within the same limit: the answer must not tell a guesser that the
password was right.  The app learns what is wrong with its device from
a session: ``POST /_session`` is the login (it says whether the password is
right, within the same limits), and requests with the session cookie get the
device check's own reason ("not enrolled", "reported stolen"), since the cookie
already proves the password.

Users, places and sessions come through the accounts port
(``sync.people_store``: the data dir's SQLite, or CouchDB shared by every
instance).  The user and the session are read on every request, never cached,
so a user disabled or a session ended through any instance (or the CLI) is
refused from the next request; the place tree is kept until its version, read
with the user, changes.  Sessions are stored on the server (``sync.sessions``):
logging out, an admin, or a changed password ends them.  The login limits are
the port's too: one process's window on the embedded store, counters shared in
CouchDB by every instance otherwise (``sync.people_store.limits``).

A disabled user (``sync.people``) is refused on every path (Basic, login,
cookie, server-side work on their behalf) with a 401 that says so, once their
credentials are proven: for Basic and login, only after the password *and* the
device check pass, so the answer never confirms a guessed password to whoever
lacks the phone.  Their sessions stay (enabling them brings the sessions back,
within the usual lifetime).  A removed user is an unknown name here.  https://docs.couchdb.org/en/stable/api/server/authn.html
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import structlog
from aiohttp import web

from sync import accounts, requestlog, sessions
from sync.audit import AuditLog
from sync.config import VERIFIED_PASSWORDS
from sync.errors import BadRequest, TooManyRequests, Unauthorized
from sync.extensions import DeviceCheck
from sync.people_store.limits import LocalLoginLimits
from sync.people_store.ports import AccountStore, LoginLimits
from sync.ratelimit import Limit, Limited, Reservation
from sync.replication.context import Caller
from sync.scopes import PlaceTree, User, UserStatus
from sync.sessions import Lifetime, Session

COOKIE = "AuthSession"
# Failed logins before further attempts get 429: per user name, and per address
# (higher: many phones may share a carrier's address).
LOGIN_LIMITS = {"user": Limit(10, 300.0), "ip": Limit(50, 300.0)}
# Checked when the name is unknown, so that costs the same scrypt as a wrong password.
_DUMMY_HASH = "scrypt${}${}${}${}${}".format(
    accounts.SCRYPT_N,
    accounts.SCRYPT_R,
    accounts.SCRYPT_P,
    base64.b64encode(b"fieldsync-dummy!").decode(),
    base64.b64encode(bytes(64)).decode(),
)


@dataclass(frozen=True)
class Credentials:
    name: str
    password: str

    def __post_init__(self) -> None:
        # A form field decoded with an odd charset can hold lone surrogates, which no
        # store can look up (they are no UTF-8): a bad request, not a server error.
        for text in (self.name, self.password):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise BadRequest("name and password must be valid Unicode text") from exc


def parse_basic(header: str) -> Credentials | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthorized("Malformed Authorization header.") from exc
    name, sep, password = decoded.partition(":")
    if not sep:
        raise Unauthorized("Malformed Authorization header.")
    return Credentials(name, password)


log = structlog.get_logger("fieldsync.auth")


def _shown(name: str) -> str:
    """A claimed name is the caller's text: short, and printable, before it is logged."""
    return "".join(c if c.isprintable() else "?" for c in name[: accounts.USER_NAME_MAX + 1])


class DeviceRefused(Exception):
    """A device check refused a request whose credentials were otherwise good."""

    def __init__(self, error: Unauthorized | TooManyRequests) -> None:
        super().__init__(error.reason)
        self.error = error


class Authenticator:
    def __init__(
        self,
        store: AccountStore,
        lifetime: Lifetime,
        https: bool = False,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
        on_login_failed: Callable[[], None] | None = None,
        device_checks: Sequence[DeviceCheck] = (),
        limits: LoginLimits | None = None,
        remembered: int = VERIFIED_PASSWORDS,
    ) -> None:
        self._store = store  # users, places and sessions (sync.people_store)
        self._on_login_failed = on_login_failed  # a metric: counts wrong names and passwords
        self.lifetime = lifetime
        self._https = https  # this server speaks TLS itself
        self._audit = audit
        self._clock = clock
        # Verified credentials, the least recently used first; at most ``remembered``.
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._remembered = remembered
        self._tree: tuple[str, PlaceTree] | None = None
        self.device_checks = tuple(device_checks)  # the packages' (sync.extensions)
        # Shared by every instance on CouchDB; this process's own on the embedded store.
        self.failures = limits or LocalLoginLimits(LOGIN_LIMITS)

    async def caller(self, request: web.Request) -> Caller | None:
        """The authenticated caller of ``request`` (None without credentials)."""
        found = await self._caller_of(request)
        if found is not None:
            requestlog.note_caller(request, found)
        return found

    async def _caller_of(self, request: web.Request) -> Caller | None:
        header = request.headers.get("Authorization")
        if header:
            creds = parse_basic(header)
            if creds is not None:
                return await self._basic(creds, request)
        cookie = request.cookies.get(COOKIE)
        if cookie:
            found = await self._from_cookie(cookie)
            self._refuse_disabled(found.user)
            try:
                return await self._with_device(request, found)
            except DeviceRefused as refused:
                raise refused.error from None  # the cookie proved the password: say why
        return None

    async def require(self, request: web.Request) -> Caller:
        found = await self.caller(request)
        if found is None:
            raise Unauthorized("You are not authorized to access this db.")
        return found

    async def _with_device(self, request: web.Request, found: Caller) -> Caller:
        for check in self.device_checks:
            try:
                device = await check(request, found.user)
            except (Unauthorized, TooManyRequests) as exc:
                self.record(found.name, "device_refused")
                raise DeviceRefused(exc) from exc
            if device is not None:
                found = replace(found, device=device)
        return found

    async def _basic(self, creds: Credentials, request: web.Request) -> Caller:
        """Basic credentials, then the device; a refused device looks like a wrong password."""
        user, tree, _ = await self._load(creds.name)
        keys = self._keys(creds.name, request.remote)
        refused: DeviceRefused | None = None
        if user is not None and self._known_good(creds, user):
            try:
                found = await self._with_device(request, self._caller(user, tree))
            except DeviceRefused as exc:
                refused = exc  # go the slow way: same limit, same scrypt, same answer
            else:
                if found.device is not None or await self.failures.retry_after(keys) is None:
                    self._refuse_disabled(user)
                    return found
        reservation = await self._reserve(keys)
        await self._verify(creds, user)
        assert user is not None
        if refused is None:
            try:
                found = await self._with_device(request, self._caller(user, tree))
            except DeviceRefused as exc:
                refused = exc
        if refused is not None:
            # Counted like a wrong password, and not remembered: were it forgiven, the
            # limit's next answer would tell a guesser that this password was right.  (A
            # lost phone that keeps retrying can hold its worker's name at the limit for
            # a while; an enrolled phone with remembered credentials still gets through.)
            raise Unauthorized() from refused
        await self._accept(creds, user, reservation)
        self._refuse_disabled(user)
        return found

    async def login(self, creds: Credentials, request: web.Request) -> Caller:
        """Check a name and password (a login), then the device, as for Basic.

        The attempt is counted before it is checked, per user and per address, and
        forgiven when right.  A worker's login from a phone that is not enrolled, or is
        lost, answers exactly like a wrong password: whoever guessed the password must
        not learn that it is right.  (Supervisors log in to the console from a browser;
        the device check asks nothing of them there.)
        """
        user, tree, _ = await self._load(creds.name)
        reservation = await self._reserve(self._keys(creds.name, request.remote))
        await self._verify(creds, user)
        assert user is not None
        try:
            found = await self._with_device(request, self._caller(user, tree))
        except DeviceRefused as refused:
            raise Unauthorized() from refused  # counted, as for Basic: the limit tells nothing
        await self._accept(creds, user, reservation)
        self._refuse_disabled(user)
        requestlog.note_caller(request, found)
        return found

    @staticmethod
    def _keys(name: str, remote: str | None) -> tuple[str, ...]:
        return (f"user:{name}", *([f"ip:{remote}"] if remote else []))

    async def _reserve(self, keys: tuple[str, ...]) -> Reservation:
        try:
            return await self.failures.reserve(keys)
        except Limited as exc:
            raise TooManyRequests(f"Too many failed logins; try again in {exc.wait} s.") from exc

    async def _verify(self, creds: Credentials, user: User | None) -> None:
        """Raise the one 401 of a wrong name or password, after scrypt either way."""
        stored = _DUMMY_HASH if user is None else user.password_hash
        ok = await asyncio.to_thread(accounts.verify_password, creds.password, stored)
        if user is None or not ok:
            reason = "unknown_user" if user is None else "wrong_password"
            log.warning("login_failed", user=_shown(creds.name), reason=reason)
            self.record(creds.name, "login_failed")
            if self._on_login_failed is not None:
                self._on_login_failed()
            raise Unauthorized()

    async def _accept(self, creds: Credentials, user: User, reservation: Reservation) -> None:
        await self.failures.forgive(reservation)
        key = self._cache_key(creds, user)
        self._verified[key] = None
        self._verified.move_to_end(key)
        while len(self._verified) > self._remembered:
            self._verified.popitem(last=False)

    def _known_good(self, creds: Credentials, user: User) -> bool:
        key = self._cache_key(creds, user)
        if key not in self._verified:
            return False
        self._verified.move_to_end(key)  # a phone that syncs stays; one gone quiet goes first
        return True

    def _refuse_disabled(self, user: User) -> None:
        """The 401 of a disabled account, once its credentials (and device) are proven."""
        if user.status is not UserStatus.DISABLED:
            return
        log.warning("login_failed", user=user.name, reason="account_disabled")
        self.record(user.name, "account_disabled")
        raise AccountDisabled(disabled_reason(user.name))

    def record(self, actor: str, action: str, subject: str | None = None) -> None:
        """An entry in the audit trail for an access decision (no database, no documents)."""
        if self._audit is not None:  # a claimed name is the caller's text: keep it short
            actor = actor[: accounts.USER_NAME_MAX + 1]
            self._audit.record(actor, action, None, [] if subject is None else [subject])

    @staticmethod
    def _caller(user: User, tree: PlaceTree) -> Caller:
        return Caller(user, tree.scope_of(user), tree)

    async def caller_for(self, name: str, device: str | None = None) -> Caller:
        """Act on behalf of ``name`` without a password (server-side work such as SMS).

        Raises Unauthorized when the user does not exist, was removed, or is disabled.
        """
        user, tree, _ = await self._load(name)
        if user is None:
            raise Unauthorized(f"user {name!r} does not exist")
        if user.status is UserStatus.DISABLED:
            raise AccountDisabled(disabled_reason(name))
        return Caller(user, tree.scope_of(user), tree, device)

    @staticmethod
    def _cache_key(creds: Credentials, user: User) -> bytes:
        joined = "\x00".join((creds.name, creds.password, user.password_hash))
        return hashlib.sha256(joined.encode()).digest()

    async def _load(
        self, name: str | None, session_id: str | None = None
    ) -> tuple[User | None, PlaceTree, Session | None]:
        """The user ``name`` (or the session's user), the place tree, and the session.

        The user and the session are read on every request; the tree is kept
        until its version changes (the version is read before the tree, so a tree
        loaded after it is never older than it).
        """
        found = await self._store.lookup(name, session_id)
        if self._tree is None or self._tree[0] != found.places_version:
            self._tree = (found.places_version, await self._store.place_tree())
        tree = self._tree[1]
        user = found.user
        if user is not None and user.status is UserStatus.REMOVED:
            user = None  # a removed name is an unknown name: same scrypt, same 401
        return user, tree, found.session

    # -- sessions ----------------------------------------------------------------
    async def start_session(
        self, response: web.StreamResponse, user: User, request: web.Request
    ) -> None:
        """Open a server-side session and set its cookie: HttpOnly, SameSite=Lax, Secure
        when served over HTTPS (by this server, or by a trusted proxy in front of it)."""
        opened = await self._store.start_session(user, self._clock(), self.lifetime)
        # Read again as the session opens: a user disabled or removed while their
        # password was being checked gets no session.
        if opened.user is None:
            raise Unauthorized()
        if opened.session_id is None:
            raise AccountDisabled(disabled_reason(user.name))
        response.set_cookie(
            COOKIE,
            opened.session_id,
            httponly=True,
            samesite="Lax",
            secure=self._https or request.secure,
            path="/",
            max_age=int(self.lifetime.absolute),
        )

    async def end_session(self, request: web.Request, response: web.StreamResponse) -> None:
        """Log out: the session ends on the server, not only in this browser."""
        response.del_cookie(COOKIE, path="/")
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return
        user = await self._store.end_session(cookie)
        if user is not None:
            self.record(user, "session_ended")

    async def _from_cookie(self, cookie: str) -> Caller:
        now = self._clock()
        user, tree, session = await self._load(None, cookie)
        if session is None or user is None:
            raise Unauthorized("Your session has ended; log in again.")
        if not self.lifetime.alive(session, now) or (
            session.password_tag != sessions.password_tag(user.password_hash)
        ):
            raise Unauthorized("Your session has expired; log in again.")
        if now - session.last_seen >= sessions.TOUCH_EVERY:
            await self._store.touch_session(cookie, now)
        return self._caller(user, tree)


class AccountDisabled(Unauthorized):
    """The account is disabled (``sync.people``); said only once its password is proven."""


def disabled_reason(name: str) -> str:
    return (
        f"The account {name!r} is disabled: ask your supervisor or an admin to enable it "
        "(fieldsync user enable)."
    )


def user_ctx(caller: Caller | None) -> dict[str, object]:
    if caller is None:
        return {"name": None, "roles": []}
    roles = ["_admin"] if caller.is_admin else [caller.user.role.value]
    return {"name": caller.name, "roles": roles}
