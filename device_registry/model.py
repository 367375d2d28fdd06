"""The registry's value types, and their JSON and CSV shapes.

A device row (table ``devices``)::

    serial      unique, upper-case                 imei, imei2   15 digits, Luhn-checked
    model, os_version, app_version, notes          free text
    phone       E.164, unique among active devices (in_stock, assigned, in_repair)
    worker      the CHW or supervisor holding it (kept while lost/stolen/in repair)
    place       where it is kept while nobody holds it (a place id), optional
    issued      the date it was handed to its current worker
    status      a DeviceStatus                     last_sync  when it last made a request

A device belongs to the places of its worker, or to its own ``place`` when it has
no worker; supervisors see the devices whose places lie in their read scope and
act on those in their capture scope.

A phone still assigned to a worker who was disabled or removed (``sync.people``)
is to be collected: :attr:`Device.collect` says why, and the supervisor pages
and the JSON show it (``"collect"``), until the phone is marked returned, lost,
or given to someone else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from device_registry.status import DeviceStatus
from sync.scopes import Scope, UserStatus

CSV_COLUMNS = (
    "serial",
    "status",
    "worker",
    "places",
    "model",
    "imei",
    "imei2",
    "phone",
    "os_version",
    "app_version",
    "issued",
    "last_sync",
    "notes",
)


@dataclass(frozen=True)
class Device:
    serial: str
    imei: str
    status: DeviceStatus
    imei2: str | None = None
    model: str = ""
    os_version: str = ""
    app_version: str = ""
    phone: str | None = None
    worker: str | None = None
    worker_places: tuple[str, ...] = ()
    place: str | None = None
    issued: str | None = None
    last_sync: str | None = None
    notes: str = ""
    created: str = ""
    updated: str = ""
    id: int = 0
    worker_status: UserStatus | None = None  # the worker's account, None without a worker

    @property
    def collect(self) -> str | None:
        """Why this phone should be collected from its worker, or None."""
        if self.status is not DeviceStatus.ASSIGNED or self.worker_status is None:
            return None
        if self.worker_status is UserStatus.REMOVED:
            return f"Collect this phone: its worker {self.worker} was removed."
        if self.worker_status is UserStatus.DISABLED:
            return (
                f"Collect this phone unless {self.worker} is coming back: their account "
                "is disabled."
            )
        return None

    @property
    def places(self) -> tuple[str, ...]:
        """The places the device belongs to (see the module docstring)."""
        if self.worker is not None:
            return self.worker_places
        return (self.place,) if self.place else ()

    def visible_to(self, scope: Scope) -> bool:
        return scope.read is None or any(scope.can_read(p) for p in self.places)

    def managed_by(self, scope: Scope) -> bool:
        return scope.capture is None or any(scope.can_write(p) for p in self.places)

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "status": self.status.value,
            "worker": self.worker,
            "places": list(self.places),
            "place": self.place,
            "model": self.model,
            "imei": self.imei,
            "imei2": self.imei2,
            "phone": self.phone,
            "os_version": self.os_version,
            "app_version": self.app_version,
            "issued": self.issued,
            "last_sync": self.last_sync,
            "notes": self.notes,
            "created": self.created,
            "updated": self.updated,
            "worker_status": None if self.worker_status is None else self.worker_status.value,
            "collect": self.collect is not None,
            "collect_reason": self.collect,
        }

    def csv_row(self) -> list[str]:
        data = self.to_json()
        data["places"] = " ".join(self.places)
        return [_csv_safe(data[column]) for column in CSV_COLUMNS]


def _csv_safe(value: Any) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP "CSV injection")."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "@", "\t", "\r", "-") or (text[:1] == "+" and not text[1:].isdigit()):
        return "'" + text
    return text


@dataclass(frozen=True)
class DeviceOwner:
    """Who texts from a phone number (``device_registry.lookup``)."""

    serial: str
    worker: str
    places: tuple[str, ...]  # the worker's capture places: where their reports belong
    status: str = DeviceStatus.ASSIGNED.value  # or lost / stolen: reports refused, flagged


@dataclass(frozen=True)
class NewDevice:
    """A device as it is added to the inventory (validated by ``inventory.validate_new``)."""

    serial: str
    imei: str
    imei2: str | None = None
    model: str = ""
    os_version: str = ""
    phone: str | None = None
    place: str | None = None
    notes: str = ""


@dataclass(frozen=True)
class HistoryEntry:
    """One change of a device's status or worker: who, when, from -> to, why."""

    at: str
    actor: str
    action: str
    from_status: str | None
    to_status: str
    from_worker: str | None
    to_worker: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "from_status": self.from_status,
            "to_status": self.to_status,
            "from_worker": self.from_worker,
            "to_worker": self.to_worker,
            "reason": self.reason,
        }
