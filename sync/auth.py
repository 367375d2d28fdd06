"""Who is calling: HTTP Basic, or the ``AuthSession`` cookie from ``POST /_session``.

A wrong name and a wrong password give the same 401.  Verified Basic
credentials are remembered (keyed by a hash of name, password and stored
hash) so a PouchDB client, which sends them on every request, does not pay
for scrypt each time; changing the password invalidates both the cache and
existing cookies.  https://docs.couchdb.org/en/stable/api/server/authn.html
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from aiohttp import web

from sync import accounts
from sync.errors import TooManyRequests, Unauthorized
from sync.ratelimit import FailureWindow, Limit
from sync.replication.context import Caller
from sync.scopes import PlaceTree, User
from sync.store.sqlite import SqliteStore

COOKIE = "AuthSession"
# Failed logins before further attempts get 429: per user name, and per address
# (higher: many phones may share a carrier's address).
LOGIN_LIMITS = {"user": Limit(10, 300.0), "ip": Limit(50, 300.0)}
# A device check sees the request and its authenticated user, and returns the id of
# the device the request comes from (or None when no device is involved); it raises
# Unauthorized to refuse the request.  The device registry installs one.
DeviceCheck = Callable[[web.Request, User], Awaitable[str | None]]
_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Credentials:
    name: str
    password: str


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


class Authenticator:
    def __init__(
        self, store: SqliteStore, secret: bytes, session_seconds: int, https: bool = False
    ) -> None:
        self._store = store
        self._secret = secret
        self._session_seconds = session_seconds
        self._https = https  # this server speaks TLS itself
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._tree: tuple[int, PlaceTree] | None = None
        self.device_checks: list[DeviceCheck] = []
        self.failures = FailureWindow(LOGIN_LIMITS)

    async def caller(self, request: web.Request) -> Caller | None:
        """The authenticated caller of ``request`` (None without credentials)."""
        found = await self._credentials(request)
        if found is None:
            return None
        for check in self.device_checks:
            device = await check(request, found.user)
            if device is not None:
                found = replace(found, device=device)
        return found

    async def _credentials(self, request: web.Request) -> Caller | None:
        header = request.headers.get("Authorization")
        if header:
            creds = parse_basic(header)
            if creds is not None:
                return await self.login(creds, request.remote)
        cookie = request.cookies.get(COOKIE)
        if cookie:
            return await self._from_cookie(cookie)
        return None

    async def require(self, request: web.Request) -> Caller:
        found = await self.caller(request)
        if found is None:
            raise Unauthorized("You are not authorized to access this db.")
        return found

    async def login(self, creds: Credentials, remote: str | None = None) -> Caller:
        """Check a name and password; guessing is slowed down per user and per address.

        Credentials already verified (the cache) pass even while a name is under
        attack, so a phone that has synced before keeps syncing.
        """
        user, tree = await self._load(creds.name)
        if user is not None and self._known_good(creds, user):
            return Caller(user, tree.scope_of(user), tree)
        keys = [f"user:{creds.name}", *([f"ip:{remote}"] if remote else [])]
        wait = self.failures.retry_after(*keys)
        if wait is not None:
            raise TooManyRequests(f"Too many failed logins; try again in {wait} s.")
        if user is None or not await self._check(creds, user):
            self.failures.fail(*keys)
            raise Unauthorized()
        return Caller(user, tree.scope_of(user), tree)

    def _known_good(self, creds: Credentials, user: User) -> bool:
        return self._cache_key(creds, user) in self._verified

    async def caller_for(self, name: str, device: str | None = None) -> Caller:
        """Act on behalf of ``name`` without a password (server-side work such as SMS).

        Raises Unauthorized when the user does not exist.
        """
        user, tree = await self._load(name)
        if user is None:
            raise Unauthorized(f"user {name!r} does not exist")
        return Caller(user, tree.scope_of(user), tree, device)

    @staticmethod
    def _cache_key(creds: Credentials, user: User) -> bytes:
        joined = "\x00".join((creds.name, creds.password, user.password_hash))
        return hashlib.sha256(joined.encode()).digest()

    async def _check(self, creds: Credentials, user: User) -> bool:
        key = self._cache_key(creds, user)
        if key in self._verified:
            self._verified.move_to_end(key)
            return True
        ok = await asyncio.to_thread(accounts.verify_password, creds.password, user.password_hash)
        if ok:
            self._verified[key] = None
            if len(self._verified) > _CACHE_SIZE:
                self._verified.popitem(last=False)
        return ok

    async def _load(self, name: str) -> tuple[User | None, PlaceTree]:
        cached = self._tree

        def run(conn: sqlite3.Connection) -> tuple[User | None, int, PlaceTree | None]:
            version = accounts.version(conn, "places_version")
            tree = None if cached and cached[0] == version else accounts.place_tree(conn)
            return accounts.get_user(conn, name), version, tree

        user, version, tree = await self._store.read(run)
        if tree is not None:
            self._tree = (version, tree)
        assert self._tree is not None
        return user, self._tree[1]

    # -- cookies ---------------------------------------------------------------
    def start_session(self, response: web.StreamResponse, user: User, request: web.Request) -> None:
        """Set the session cookie: HttpOnly, SameSite=Lax, Secure when served over HTTPS
        (by this server, or by a trusted proxy in front of it)."""
        response.set_cookie(
            COOKIE,
            self.issue_cookie(user),
            httponly=True,
            samesite="Lax",
            secure=self._https or request.secure,
            path="/",
            max_age=self._session_seconds,
        )

    def issue_cookie(self, user: User) -> str:
        issued = format(int(time.time()), "x")
        mac = self._mac(user, issued)
        raw = f"{user.name}:{issued}:{mac}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _mac(self, user: User, issued: str) -> str:
        message = "\x00".join((user.name, issued, user.password_hash)).encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    async def _from_cookie(self, cookie: str) -> Caller:
        try:
            raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4)).decode()
            name, issued, mac = raw.rsplit(":", 2)
            age = time.time() - int(issued, 16)
        except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthorized("Your session is not valid; log in again.") from exc
        user, tree = await self._load(name)
        if (
            user is None
            or age > self._session_seconds
            or not hmac.compare_digest(mac, self._mac(user, issued))
        ):
            raise Unauthorized("Your session has expired; log in again.")
        return Caller(user, tree.scope_of(user), tree)


def user_ctx(caller: Caller | None) -> dict[str, object]:
    if caller is None:
        return {"name": None, "roles": []}
    roles = ["_admin"] if caller.is_admin else [caller.user.role.value]
    return {"name": caller.name, "roles": roles}
