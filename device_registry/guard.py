"""The device check: every authenticated request from a phone that holds records passes it.

Registered as a device check (``device_registry.routes.extend``).  A
request must carry the ``X-Device-Token`` of a device assigned to its user when
it comes from a CHW (any route but the enrolment call itself), or from any other
non-admin user on the replication surface (``/{db}...``): a supervisor's phone
holds a whole district's records, so it is bound to its device and revoked like
a CHW's.  The supervisor console and the JSON APIs stay open to a browser without
a token; admins are exempt.  The token is looked up on every request
(``DeviceStore.binding``: one primary-key read embedded, one ``_bulk_get`` in
CouchDB): no cache can let a revoked device through.

A refused request gets a 401 that says why, and is recorded (the device port's
``record_refusals``); when it came with Basic credentials ``sync.auth`` answers
the 401 of a wrong password instead, so a refusal never confirms a password.
Too many refusals from one device or one address within a window turn further
*refusals* into 429s (counted by the RefusalLimits port: with CouchDB, shared by
every instance); a valid device is never slowed down, so
a stolen phone behind a carrier's shared address cannot lock out the honest
phones behind it.

Refusals and last-sync updates are written in the background, batched, so a flood
of bad requests costs one transaction per batch, and a syncing device at most one
write a minute (``touch_every``).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NoReturn

import structlog
from aiohttp import web

from device_registry import codes
from device_registry.enrolment import RefusedAttempt
from device_registry.inventory import now
from device_registry.limits import LocalRefusalLimits
from device_registry.ports import DeviceKey, DeviceStore, Heard, RefusalLimits
from device_registry.verdict import TOKEN_HEADER, Refusal, judge, no_token
from sync.config import Config
from sync.errors import FieldsyncError, TooManyRequests, Unauthorized
from sync.ratelimit import Limit
from sync.replication.routes import is_replication
from sync.scopes import Role, User

ENROLL_PATH = "/api/v1/devices/enroll"
APP_VERSION_HEADER = "X-App-Version"
OS_VERSION_HEADER = "X-OS-Version"
DEFAULT_LIMITS = {
    "device": Limit(failures=10, window=600.0),
    "ip": Limit(failures=100, window=600.0),
    "user": Limit(failures=20, window=600.0),
}
_MAX_TOKEN = 256
log = structlog.get_logger("fieldsync.devices")


class BackgroundWrites:
    """Writes nobody waits for, batched into one transaction per turn of the writer."""

    def __init__(self, store: DeviceStore, max_pending: int = 10_000) -> None:
        self._store = store
        self._max_pending = max_pending
        self._refusals: list[RefusedAttempt] = []
        self._touches: dict[DeviceKey, Heard] = {}
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def refusal(self, attempt: RefusedAttempt) -> None:
        if len(self._refusals) >= self._max_pending:
            self.dropped += 1  # the writer is far behind: keep serving, count the loss
            return
        self._refusals.append(attempt)
        self._kick()

    def touch(self, device: DeviceKey, at: str, app_version: str, os_version: str) -> None:
        self._touches[device] = Heard(at, app_version, os_version)
        self._kick()

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._refusals or self._touches:
            refusals, self._refusals = self._refusals, []
            touches, self._touches = self._touches, {}
            try:
                await self._store.record_refusals(refusals)
                await self._store.heard(touches)
            except Exception:
                log.exception("device_writes_failed", refusals=len(refusals))

    async def drain(self) -> None:
        """Wait until everything submitted so far is written."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)


def needs_device(request: web.Request, user: User) -> bool:
    """Whether this request must come from an enrolled device of ``user``."""
    if user.role is Role.ADMIN:
        return False
    if request.method == "POST" and request.path == ENROLL_PATH:
        return False
    return user.role is Role.CHW or is_replication(request)


class DeviceGuard:
    def __init__(
        self,
        store: DeviceStore,
        config: Config,
        writes: BackgroundWrites,
        limiter: RefusalLimits | None = None,
        touch_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._config = config
        self._on_refused = on_refused  # a metric: refusals by kind (verdict.Kind values)
        self.writes = writes
        self.limiter = limiter or LocalRefusalLimits(dict(DEFAULT_LIMITS))
        self.touch_every = touch_every
        self._clock = clock
        self._heard: OrderedDict[DeviceKey, tuple[float | None, str, str]] = OrderedDict()

    async def check(self, request: web.Request, user: User) -> str | None:
        """The ``DeviceCheck`` of ``sync.auth``: the device's serial, or a refusal."""
        if not needs_device(request, user):
            return None
        token = request.headers.get(TOKEN_HEADER, "").strip()
        ip_key = f"ip:{request.remote or '-'}"
        if not token:
            if not self._config.require_enrolment:
                return None
            await self.refuse(request, user, no_token(), ip_key, f"user:{user.name}")
        digest = codes.token_hash(token)
        found = None
        if len(token) <= _MAX_TOKEN:
            found = await self._store.binding(digest)
        verdict = judge(None if found is None else found[1], user.name)
        if isinstance(verdict, Refusal):
            device_key = f"device:{verdict.serial or digest[:32]}"
            await self.refuse(request, user, verdict, ip_key, device_key)
        assert found is not None and isinstance(verdict, str)
        self._heard_from(found[0], request)
        return verdict

    async def refuse(
        self,
        request: web.Request,
        user: User | None,
        refusal: Refusal,
        *keys: str,
        error: FieldsyncError | None = None,
    ) -> NoReturn:
        """Record the refused attempt and raise ``error`` (a 401 by default; 429 over a limit)."""
        wait = await self.limiter.fail(keys) if keys else None
        attempt = RefusedAttempt(
            at=now(),
            ip=request.remote,
            user=None if user is None else user.name,
            serial=refusal.serial,
            kind=refusal.kind.value,
            status=401 if wait is None else 429,
            method=request.method,
            path=request.path,
            reason=refusal.reason,
        )
        self.writes.refusal(attempt)
        log.warning(
            "device_refused",
            kind=attempt.kind,
            reason=attempt.reason,
            serial=attempt.serial,
            user=attempt.user,
            status=attempt.status,
        )
        if self._on_refused is not None:
            self._on_refused(refusal.kind.value)
        if wait is not None:
            raise TooManyRequests(
                f"Too many refused attempts from this device or address; try again in {wait} s. "
                f"({refusal.reason})"
            )
        raise error or Unauthorized(refusal.reason)

    def _heard_from(self, device_id: DeviceKey, request: web.Request) -> None:
        app_version = header_value(request, APP_VERSION_HEADER)
        os_version = header_value(request, OS_VERSION_HEADER)
        moment = self._clock()
        last = self._heard.get(device_id, (None, "", ""))
        versions = (app_version or last[1], os_version or last[2])
        if last[0] is not None and moment - last[0] < self.touch_every and versions == last[1:]:
            return
        self._heard[device_id] = (moment, *versions)
        self._heard.move_to_end(device_id)
        if len(self._heard) > 100_000:
            self._heard.popitem(last=False)
        self.writes.touch(device_id, now(), app_version, os_version)


def header_value(request: web.Request, name: str) -> str:
    """A short printable header value, or "" (an app's version is not worth a 400)."""
    value = request.headers.get(name, "").strip()
    if len(value) > 64 or not value.isprintable():
        return ""
    return value
