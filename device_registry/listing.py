"""Filtering, sorting and counting a device list (the supervisor page, JSON and CSV).

Query parameters, all optional::

    status=lost             one status (or several: status=lost&status=stolen)
    worker=alice            the worker holding it
    place=district-a        devices whose places lie in that place's subtree
    quiet_days=7            not synced for 7 days or more (never synced counts)
    collect=true            phones still with a worker who was disabled or removed
    q=35209...              a serial, an IMEI or a SIM phone number (all or part of it)
    sort=last_sync          serial | status | worker | model | phone | issued | last_sync
    order=desc              asc (default) | desc

The counts per status ignore the status filter (so the page can show how many
devices each status button would list) but honour every other filter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from device_registry.model import Device
from device_registry.status import DeviceStatus, parse
from sync.errors import BadRequest

SORT_KEYS: Mapping[str, Callable[[Device], str]] = {
    "serial": lambda d: d.serial,
    "status": lambda d: d.status.value,
    "worker": lambda d: d.worker or "",
    "model": lambda d: d.model.lower(),
    "phone": lambda d: d.phone or "",
    "issued": lambda d: d.issued or "",
    "last_sync": lambda d: d.last_sync or "",
}


@dataclass(frozen=True)
class DeviceQuery:
    statuses: frozenset[DeviceStatus] = frozenset()
    worker: str | None = None
    place: str | None = None
    quiet_days: int | None = None
    collect: bool = False
    search: str | None = None
    sort: str = "serial"
    descending: bool = False


def parse_query(params: Mapping[str, str], statuses: Sequence[str] = ()) -> DeviceQuery:
    """A query from request parameters (``statuses``: every ``status`` value given)."""
    chosen = frozenset(parse(s) for s in statuses if s)
    sort = params.get("sort") or "serial"
    if sort not in SORT_KEYS:
        raise BadRequest(f"sort must be one of {', '.join(SORT_KEYS)}")
    order = params.get("order") or "asc"
    if order not in ("asc", "desc"):
        raise BadRequest("order must be asc or desc")
    return DeviceQuery(
        statuses=chosen,
        worker=params.get("worker") or None,
        place=params.get("place") or None,
        quiet_days=_days(params.get("quiet_days")),
        collect=_yes(params.get("collect")),
        search=_search(params.get("q")),
        sort=sort,
        descending=order == "desc",
    )


def _search(value: str | None) -> str | None:
    text = (value or "").strip()
    if len(text) > 64:
        raise BadRequest("q must be a serial, an IMEI or a phone number (at most 64 characters)")
    return text or None


def found(device: Device, search: str) -> bool:
    """Whether ``search`` is part of the device's serial, an IMEI or its phone number.

    Letters are compared without case; spaces, dashes and a leading ``+`` or ``0``
    in a phone number do not matter (``0712 345 678`` finds ``+254712345678``).
    """
    text = search.upper()
    if text in device.serial.upper():
        return True
    if any(ch not in "0123456789 +-()." for ch in text):
        return False  # letters: a serial only
    digits = "".join(ch for ch in text if ch.isdigit())
    if not digits:
        return False
    numbers = (device.imei, device.imei2 or "", device.phone or "")
    return any(digits in n for n in numbers) or (
        len(digits) > 4 and digits.lstrip("0") in (device.phone or "")
    )


def _yes(value: str | None) -> bool:
    if value in (None, "", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise BadRequest("collect must be true or false")


def _days(value: str | None) -> int | None:
    if not value:
        return None
    if not value.isdigit() or int(value) > 36_500:
        raise BadRequest("quiet_days must be a whole number of days")
    return int(value)


def select(
    devices: Iterable[Device],
    query: DeviceQuery,
    subtree: frozenset[str] | None,
    now: dt.datetime,
) -> tuple[list[Device], dict[str, int]]:
    """The devices the query asks for, sorted, and the count per status.

    ``subtree`` is the query's place and its descendants (None: no place filter).
    """
    cutoff = None
    if query.quiet_days is not None:
        cutoff = (now - dt.timedelta(days=query.quiet_days)).isoformat(timespec="seconds")
    matching = [d for d in devices if _matches(d, query, subtree, cutoff)]
    counts = {status.value: 0 for status in DeviceStatus}
    for device in matching:
        counts[device.status.value] += 1
    chosen = [d for d in matching if not query.statuses or d.status in query.statuses]
    chosen.sort(key=lambda d: (SORT_KEYS[query.sort](d), d.serial), reverse=query.descending)
    return chosen, counts


def _matches(
    device: Device, query: DeviceQuery, subtree: frozenset[str] | None, cutoff: str | None
) -> bool:
    if query.worker is not None and device.worker != query.worker:
        return False
    if query.collect and device.collect is None:
        return False
    if subtree is not None and not subtree.intersection(device.places):
        return False
    if query.search is not None and not found(device, query.search):
        return False
    return cutoff is None or device.last_sync is None or device.last_sync < cutoff


def with_sort(query: DeviceQuery, key: str) -> DeviceQuery:
    """The query sorted by ``key``; the same key again flips the order (column headers)."""
    descending = not query.descending if query.sort == key else False
    return replace(query, sort=key, descending=descending)


def to_params(query: DeviceQuery) -> list[tuple[str, str]]:
    """The query as URL parameters (for links that keep the filters)."""
    params = [("status", s.value) for s in DeviceStatus if s in query.statuses]
    for name, value in (
        ("worker", query.worker),
        ("place", query.place),
        ("quiet_days", None if query.quiet_days is None else str(query.quiet_days)),
        ("collect", "true" if query.collect else None),
        ("q", query.search),
    ):
        if value is not None:
            params.append((name, value))
    if query.sort != "serial" or query.descending:
        params += [("sort", query.sort), ("order", "desc" if query.descending else "asc")]
    return params
