"""What the registry's handlers share: the app state, who is calling, the device view."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from device_registry import listing
from device_registry.guard import DeviceGuard
from device_registry.model import Device
from device_registry.ports import DeviceStore, Note
from sync.appkeys import ACCOUNTS, AUTH, CONFIG
from sync.audit import AUDIT
from sync.auth import Authenticator
from sync.config import Config
from sync.errors import Forbidden
from sync.people_store.ports import AccountStore
from sync.replication.context import Caller
from sync.scopes import Role

STAFF = frozenset({Role.SUPERVISOR, Role.ADMIN})


@dataclass
class Registry:
    guard: DeviceGuard
    secret: bytes  # signs CSRF tokens
    devices: DeviceStore  # the device port (device_registry.backends)


REGISTRY = web.AppKey("device_registry", Registry)


@dataclass(frozen=True)
class Parts:
    devices: DeviceStore
    accounts: AccountStore
    auth: Authenticator
    config: Config
    registry: Registry


def parts(request: web.Request) -> Parts:
    app = request.app
    registry = app[REGISTRY]
    return Parts(registry.devices, app[ACCOUNTS], app[AUTH], app[CONFIG], registry)


def note(request: web.Request, caller: Caller, action: str, detail: str) -> Note | None:
    """The audit entry of a change ``caller`` makes (None when the app keeps no trail)."""
    log = request.app.get(AUDIT)
    if log is None:
        return None
    return Note(log, caller.name, caller.device, action, detail)


def is_staff(caller: Caller | None) -> bool:
    return caller is not None and caller.user.role in STAFF


async def staff(request: web.Request) -> Caller:
    """The calling supervisor or admin (401 without credentials, 403 for others)."""
    caller = await request.app[AUTH].require(request)
    if not is_staff(caller):
        raise Forbidden("The device registry is for supervisors and admins.")
    return caller


async def device_list(
    request: web.Request, caller: Caller, params: Mapping[str, str], statuses: Sequence[str]
) -> tuple[listing.DeviceQuery, list[Device], dict[str, int]]:
    """The caller's devices the query asks for, and the count per status."""
    query = listing.parse_query(params, statuses)
    devices = await request.app[REGISTRY].devices.list_all()
    mine = [d for d in devices if d.visible_to(caller.scope)]
    subtree = caller.tree.descendants([query.place]) if query.place else None
    chosen, counts = listing.select(mine, query, subtree, dt.datetime.now(dt.UTC))
    return query, chosen, counts


def server_url(config: Config) -> str | None:
    """The URL the enrolment QR code gives the app, or None to leave it out.

    Never the request's ``Host``: anyone can send any Host, and a QR code pointing
    phones at another server would hand it their passwords and records.  It is
    ``FIELDSYNC_PUBLIC_URL``; else the address the server listens on when a phone
    could reach it (not a wildcard, not loopback); else none, and the app keeps
    the server it is configured with.
    """
    if config.public_url:
        return config.public_url
    try:
        address = ipaddress.ip_address(config.host)
    except ValueError:
        return None  # a name: which one phones use is the implementer's to say
    if address.is_loopback or address.is_unspecified:
        return None
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{'https' if config.https else 'http'}://{host}:{config.port}"
