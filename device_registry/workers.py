"""Workers and their sync health: ``GET /api/v1/workers`` (JSON, CSV) and the pages' rows.

One row per CHW whose places the caller may read (an admin: every CHW; removed
accounts are left out)::

    name            the worker's user name        account     active | disabled
    places          their capture places (ids)    place_names the same, by name
    devices         [{serial, status, last_sync, app_version}], the phones assigned to them
    last_sync       the latest last sync of an ASSIGNED phone (in stock, lost...: not counted)
    app_version     the app version the most recently synced phone reported
    docs_in_set     live documents in the places they sync (their read scope) and shared ones
    over_size_warning  docs_in_set > FIELDSYNC_SET_SIZE_WARNING
    received_7d, syncs_7d   documents received and syncs in the last 7 UTC days (sync.activity)
    refused         refused records (sync.refusals)

Query (every filter optional; a bad value is a 400 that says what to type)::

    place=ID          workers with a place in the subtree of ID (a place the caller can read)
    quiet_days=N      not synced for N days or more (never synced included)
    has_refusals=yes|no   over_size=yes|no
    sort=name|last_sync|docs_in_set|refused|received_7d (a leading "-": descending)
    format=json|csv

Document counts per place are asked of the document store once for every place
and kept :data:`SET_SIZE_SECONDS`; each worker's set is then a sum.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from device_registry.context import REGISTRY, staff
from device_registry.status import DeviceStatus
from sync.activity import ACTIVITY
from sync.activity.ports import DayActivity
from sync.appkeys import ACCOUNTS, CONFIG
from sync.errors import BadRequest, NotFound
from sync.http import csv_download, json_response
from sync.refusals import REFUSALS
from sync.replication.context import Caller
from sync.replication.routes import REPLICATION
from sync.scopes import PlaceTree, Role, User, UserStatus
from sync.store.base import SHARED

SET_SIZE_SECONDS = 15.0
MAX_QUIET_DAYS = 3650
SORTS = ("name", "last_sync", "docs_in_set", "refused", "received_7d")
CSV_COLUMNS = (
    "name",
    "account",
    "places",
    "place_names",
    "devices",
    "last_sync",
    "app_version",
    "docs_in_set",
    "over_size_warning",
    "received_7d",
    "syncs_7d",
    "refused",
)
_YES = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


@dataclass(frozen=True)
class WorkerDevice:
    serial: str
    status: DeviceStatus
    last_sync: str | None
    app_version: str

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "status": self.status.value,
            "last_sync": self.last_sync,
            "app_version": self.app_version,
        }


@dataclass(frozen=True)
class WorkerRow:
    name: str
    account: UserStatus
    places: tuple[str, ...]
    place_names: tuple[str, ...]
    devices: tuple[WorkerDevice, ...]
    docs_in_set: int
    over_size: bool
    last_sync: str | None = None  # the latest of an ASSIGNED phone (see latest())
    app_version: str = ""
    received_7d: int = 0
    syncs_7d: int = 0
    refused: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "account": self.account.value,
            "places": list(self.places),
            "place_names": list(self.place_names),
            "devices": [d.to_json() for d in self.devices],
            "last_sync": self.last_sync,
            "app_version": self.app_version,
            "docs_in_set": self.docs_in_set,
            "over_size_warning": self.over_size,
            "received_7d": self.received_7d,
            "syncs_7d": self.syncs_7d,
            "refused": self.refused,
        }

    def csv_row(self) -> list[str]:
        data = self.to_json()
        data["places"] = " ".join(self.places)
        data["place_names"] = "; ".join(self.place_names)
        data["devices"] = " ".join(f"{d.serial}:{d.status.value}" for d in self.devices)
        data["over_size_warning"] = "yes" if self.over_size else "no"
        return [csv_safe(data[column]) for column in CSV_COLUMNS]


def csv_safe(value: object) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP "CSV injection")."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# -- the query -----------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerQuery:
    place: str | None = None
    quiet_days: int | None = None
    has_refusals: bool | None = None
    over_size: bool | None = None
    sort: str = "name"
    descending: bool = False

    def params(self, **changes: str) -> dict[str, str]:
        """The query as URL parameters (for links that keep the filters)."""
        found = {
            "place": self.place or "",
            "quiet_days": "" if self.quiet_days is None else str(self.quiet_days),
            "has_refusals": _word(self.has_refusals),
            "over_size": _word(self.over_size),
            "sort": ("-" if self.descending else "") + self.sort,
        }
        found.update(changes)
        skip = {("sort", "name"), ("page", "1")}
        return {k: v for k, v in found.items() if v and (k, v) not in skip}


def _word(flag: bool | None) -> str:
    return "" if flag is None else ("yes" if flag else "no")


def parse_query(params: Mapping[str, str], caller: Caller) -> WorkerQuery:
    """The filters of ``params``; a 400 that says what to type for a value that is wrong."""
    place = params.get("place") or None
    if place is not None and (place not in caller.tree.places or not caller.scope.can_read(place)):
        raise BadRequest(f"place {place!r} is not one of your places; leave it out or pick one")
    sort = params.get("sort") or "name"
    if sort.lstrip("-") not in SORTS or sort.count("-") > 1:
        raise BadRequest(f"sort must be one of {', '.join(SORTS)} (a leading '-' for descending)")
    return WorkerQuery(
        place=place,
        quiet_days=_days(params.get("quiet_days") or None),
        has_refusals=_flag(params, "has_refusals"),
        over_size=_flag(params, "over_size"),
        sort=sort.lstrip("-"),
        descending=sort.startswith("-"),
    )


def _days(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 4 or not 0 <= int(raw) <= MAX_QUIET_DAYS:
        raise BadRequest(f"quiet_days must be a whole number of days from 0 to {MAX_QUIET_DAYS}")
    return int(raw)


def _flag(params: Mapping[str, str], name: str) -> bool | None:
    raw = (params.get(name) or "").lower()
    if not raw:
        return None
    if raw not in _YES:
        raise BadRequest(f"{name} must be yes or no (or leave it out)")
    return _YES[raw]


def select(
    rows: Iterable[WorkerRow], query: WorkerQuery, tree: PlaceTree, moment: dt.datetime
) -> list[WorkerRow]:
    """The rows the query asks for, in its order (ties by name)."""
    subtree = tree.descendants([query.place]) if query.place else None
    cutoff = None
    if query.quiet_days is not None:
        cutoff = (moment - dt.timedelta(days=query.quiet_days)).isoformat(timespec="seconds")
    chosen = [
        r
        for r in rows
        if (subtree is None or any(p in subtree for p in r.places))
        and (cutoff is None or (r.last_sync or "") < cutoff)
        and (query.has_refusals is None or (r.refused > 0) == query.has_refusals)
        and (query.over_size is None or r.over_size == query.over_size)
    ]
    chosen.sort(key=lambda r: r.name)
    chosen.sort(key=_SORT_KEYS[query.sort], reverse=query.descending)
    return chosen


_SORT_KEYS: dict[str, Any] = {
    "name": lambda r: r.name,
    "last_sync": lambda r: r.last_sync or "",
    "docs_in_set": lambda r: r.docs_in_set,
    "refused": lambda r: r.refused,
    "received_7d": lambda r: r.received_7d,
}


# -- gathering the rows --------------------------------------------------------------
async def refused_counts(app: web.Application, workers: Collection[str]) -> dict[str, int]:
    """Refused records per worker (workers with none are absent; see ``sync.refusals``)."""
    if REFUSALS not in app or not workers:
        return {}
    return await app[REFUSALS].counts(workers)


class SetSizes:
    """Live documents per place, asked of the document store at most every few seconds."""

    def __init__(self, seconds: float = SET_SIZE_SECONDS) -> None:
        self._seconds = seconds
        self._known: tuple[float, dict[str, int]] | None = None
        self._lock = asyncio.Lock()

    async def per_place(self, app: web.Application) -> dict[str, int]:
        async with self._lock:
            if self._known is None or time.monotonic() - self._known[0] >= self._seconds:
                self._known = (time.monotonic(), await _count_places(app))
            return self._known[1]


SET_SIZES = web.AppKey("worker_set_sizes", SetSizes)


async def _count_places(app: web.Application) -> dict[str, int]:
    places = [p.id for p in await app[ACCOUNTS].list_places()] + [SHARED]
    try:
        return await app[REPLICATION].parts.store.live_counts(app[CONFIG].db_name, places)
    except NotFound:
        return {}  # no database yet: nobody has synced


def visible_workers(users: Iterable[User], caller: Caller) -> list[User]:
    """The CHWs (not removed) with a place the caller may read."""
    return [
        u
        for u in users
        if u.role is Role.CHW
        and u.status is not UserStatus.REMOVED
        and (caller.is_admin or any(caller.scope.can_read(p) for p in u.places))
    ]


async def worker_rows(
    app: web.Application, caller: Caller, only: str | None = None
) -> list[WorkerRow]:
    """Every worker in the caller's scope (or only the one named ``only``), with devices,
    set size, activity and refusals."""
    if REGISTRY in app:
        await app[REGISTRY].guard.writes.drain()  # last syncs of the last seconds show at once
    users, by_worker = await _people_and_phones(app, only)
    workers = visible_workers(users, caller)
    names = [u.name for u in workers]
    sizes = await app[SET_SIZES].per_place(app) if SET_SIZES in app else {}
    week = await activity_totals(app, days=7)
    refused = await refused_counts(app, names)
    context = _RowContext(caller, sizes, week, refused, by_worker, app[CONFIG].set_size_warning)
    return [context.row(user) for user in workers]


@dataclass
class _RowContext:
    """What every row of one listing is made from (read once per request)."""

    caller: Caller
    sizes: Mapping[str, int]  # live documents per place
    week: Mapping[str, tuple[int, int]]  # (syncs, received) per worker
    refused: Mapping[str, int]
    phones: Mapping[str, tuple[WorkerDevice, ...]]
    limit: int  # FIELDSYNC_SET_SIZE_WARNING

    def row(self, user: User) -> WorkerRow:
        tree = self.caller.tree
        # the worker's set: their read scope (sync.scopes.PlaceTree.scope_of) and shared docs
        in_set = sum(
            self.sizes.get(p, 0)
            for p in tree.descendants((*user.places, *user.read_places)) | {SHARED}
        )
        syncs, received = self.week.get(user.name, (0, 0))
        phones = self.phones.get(user.name, ())
        last_sync, app_version = latest(phones)
        shown = _shown(user.places, self.caller)
        return WorkerRow(
            name=user.name,
            account=user.status,
            places=shown,
            place_names=tuple(_name(tree, p) for p in shown),
            devices=phones,
            docs_in_set=in_set,
            over_size=in_set > self.limit,
            last_sync=last_sync,
            app_version=app_version,
            received_7d=received,
            syncs_7d=syncs,
            refused=self.refused.get(user.name, 0),
        )


def _shown(places: Sequence[str], caller: Caller) -> tuple[str, ...]:
    """A worker's places the caller may read (a place of another district stays unnamed)."""
    return tuple(p for p in places if caller.scope.can_read(p))


def _name(tree: PlaceTree, place: str) -> str:
    found = tree.places.get(place)
    return found.name if found is not None else place


def latest(devices: Iterable[WorkerDevice]) -> tuple[str | None, str]:
    """The last sync of the phones ASSIGNED among ``devices`` (None: never, or none
    assigned), and the app version of the one that synced last."""
    assigned = [d for d in devices if d.status is DeviceStatus.ASSIGNED and d.last_sync]
    if not assigned:
        return None, ""
    newest = max(assigned, key=lambda d: d.last_sync or "")
    return newest.last_sync, newest.app_version


async def _people_and_phones(
    app: web.Application, only: str | None
) -> tuple[list[User], dict[str, tuple[WorkerDevice, ...]]]:
    """The users (or only the one named ``only``) and the phones each holds."""
    people = app[ACCOUNTS]
    if only is None:
        users = await people.list_users()
    else:
        one = await people.get_user(only)
        users = [] if one is None else [one]
    found: dict[str, list[WorkerDevice]] = {}
    for device in await app[REGISTRY].devices.list_all():  # by serial
        if device.worker is not None and only in (None, device.worker):
            phone = WorkerDevice(device.serial, device.status, device.last_sync, device.app_version)
            found.setdefault(device.worker, []).append(phone)
    return users, {w: tuple(ds) for w, ds in found.items()}


async def activity_totals(app: web.Application, days: int) -> dict[str, tuple[int, int]]:
    """(syncs, documents received) per worker over the last ``days`` UTC days."""
    recorder = app.get(ACTIVITY)
    if recorder is None:
        return {}
    await recorder.flush()  # what was counted in the last seconds shows at once
    return await recorder.store.totals(_since(days))


def _since(days: int) -> str:
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days - 1)).isoformat()


async def activity_days(
    app: web.Application, workers: Collection[str], days: int
) -> dict[str, list[DayActivity]]:
    """Each worker's day buckets of the last ``days`` UTC days (today included)."""
    recorder = app.get(ACTIVITY)
    if recorder is None or not workers:
        return {}
    await recorder.flush()
    found: dict[str, list[DayActivity]] = {}
    for bucket in await recorder.store.days(_since(days), workers):
        found.setdefault(bucket.worker, []).append(bucket)
    return found


# -- the API ------------------------------------------------------------------------
async def list_workers(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/workers``: the caller's workers and their sync health."""
    caller = await staff(request)
    query = parse_query(request.query, caller)
    fmt = request.query.get("format") or None
    if fmt not in (None, "json", "csv"):
        raise BadRequest("format must be json or csv (or leave it out for JSON)")
    rows = await worker_rows(request.app, caller)
    chosen = select(rows, query, caller.tree, dt.datetime.now(dt.UTC))
    if fmt == "csv":
        return csv_response(chosen)
    return json_response({"total": len(chosen), "workers": [r.to_json() for r in chosen]})


def csv_response(rows: Sequence[WorkerRow]) -> web.Response:
    return csv_download("workers.csv", CSV_COLUMNS, (r.csv_row() for r in rows))


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/workers", list_workers)
