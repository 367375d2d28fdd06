"""The inventory's rules: what adding, editing, assigning and marking a device do.

Pure functions over values (no storage): each adapter of the device port
(``device_registry.ports``) reads the device, asks these what a change does
(:class:`Change`: the new fields, the history entry, whether the device's
tokens and codes are revoked, which IMEIs and number must be free), checks
uniqueness its own way, and writes it all at once.  So every backend refuses
the same things with the same words.

``scope`` is the actor's: a device outside their read scope does not exist for
them (404), one they only read cannot be changed by them (403).  The CLI acts
with ``UNLIMITED``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from device_registry import validators
from device_registry.model import Device, HistoryEntry, NewDevice
from device_registry.status import (
    ACTIVE,
    UNASSIGNING,
    DeviceStatus,
    check_transition,
    revocation,
)
from sync.errors import BadRequest, Conflict, Forbidden, NotFound
from sync.scopes import PlaceTree, Role, Scope, User

EDITABLE = ("model", "os_version", "phone", "imei2", "place", "notes")

# Roles whose phones hold records (they replicate), so are bound to a device; admins
# are exempt (servers and browsers), gateways do not replicate.
HOLDERS = frozenset({Role.CHW, Role.SUPERVISOR})


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Change:
    """What one change does to ``device``; the adapter writes it all or nothing."""

    device: Device  # as it was read
    fields: dict[str, Any]  # column -> new value (``updated`` included)
    entry: HistoryEntry | None  # None: nothing worth a history entry
    revoke: str | None = None  # the reason its tokens and unused codes are revoked
    phone: str | None = None  # a number no other active device may have
    imeis: tuple[str, ...] = field(default=())  # IMEIs no other device may have


# -- reading -----------------------------------------------------------------------------
def visible(device: Device | None, serial: str, scope: Scope) -> Device:
    """The device, if it exists for someone with ``scope``; otherwise 404."""
    if device is None or not device.visible_to(scope):
        raise NotFound(f"no device with serial {serial!r}")
    return device


def managed(device: Device | None, serial: str, scope: Scope) -> Device:
    """The device, if someone with ``scope`` may change it."""
    device = visible(device, serial, scope)
    if not device.managed_by(scope):
        raise Forbidden(f"device {device.serial} belongs to places you may only read")
    return device


def holder(
    device: Device | None, serial: str, scope: Scope, noun: str = "device", article: str = "a"
) -> str:
    """The device a conflict is with, named only to someone who may see it."""
    if device is not None and device.visible_to(scope):
        return f"{noun} {serial}"
    return f"{article} {noun} outside your scope"


def imei_taken(value: str, other: Device | None, serial: str, scope: Scope) -> Conflict:
    return Conflict(f"IMEI {value} is already registered to {holder(other, serial, scope)}")


def phone_taken(phone: str, other: Device | None, serial: str, scope: Scope) -> Conflict:
    used_by = holder(other, serial, scope, "active device", "an")
    return Conflict(f"phone number {phone} is in use by {used_by}")


def serial_taken(serial: str) -> Conflict:
    return Conflict(f"a device with serial {serial} is already in the inventory")


# -- adding and editing --------------------------------------------------------------------
def validate_new(
    serial: str,
    imei: str,
    imei2: str | None = None,
    model: str = "",
    os_version: str = "",
    phone: str | None = None,
    place: str | None = None,
    notes: str = "",
) -> NewDevice:
    """A new device from what was typed, each field validated."""
    return NewDevice(
        serial=validators.serial(serial),
        imei=validators.imei(imei),
        imei2=validators.imei(imei2) if imei2 else None,
        model=validators.text(model, "model", 100),
        os_version=validators.text(os_version, "os_version", 64),
        phone=validators.phone(phone) if phone else None,
        place=place or None,
        notes=validators.text(notes, "notes", 2000),
    )


def check_new(new: NewDevice, tree: PlaceTree, scope: Scope) -> None:
    check_place(tree, new.place, scope)
    if new.imei2 == new.imei:
        raise BadRequest("the second IMEI must differ from the first")


def added(new: NewDevice, actor: str) -> tuple[Device, HistoryEntry]:
    """The device as it enters the inventory (in stock), and its first history entry."""
    stamp = now()
    device = Device(
        serial=new.serial,
        imei=new.imei,
        imei2=new.imei2,
        model=new.model,
        os_version=new.os_version,
        phone=new.phone,
        place=new.place,
        status=DeviceStatus.IN_STOCK,
        notes=new.notes,
        created=stamp,
        updated=stamp,
    )
    entry = HistoryEntry(stamp, actor, "added", None, DeviceStatus.IN_STOCK.value, None, None, "")
    return device, entry


def plan_edit(
    device: Device, changes: Mapping[str, str | None], actor: str, scope: Scope, tree: PlaceTree
) -> Change:
    """Change the details of a device (``EDITABLE`` fields; empty clears optional ones)."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise BadRequest(f"cannot edit {', '.join(sorted(unknown))}; editable: {EDITABLE}")
    values: dict[str, Any] = _validated_edits(changes)
    if "place" in values:
        check_place(tree, values["place"], scope)
    imeis: tuple[str, ...] = ()
    if values.get("imei2"):
        if values["imei2"] == device.imei:
            raise BadRequest("the second IMEI must differ from the first")
        imeis = (device.imei, values["imei2"])
    phone = values.get("phone") if device.status in ACTIVE else None
    entry = None
    if "phone" in values and values["phone"] != device.phone:
        reason = f"SIM phone number {device.phone or '-'} -> {values['phone'] or '-'}"
        entry = _entry(actor, "edited", device, device.status, None, None, reason)
    return Change(device, {**values, "updated": now()}, entry, None, phone, imeis)


def _validated_edits(changes: Mapping[str, str | None]) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for name, raw in changes.items():
        text = (raw or "").strip()
        if name == "phone":
            values[name] = validators.phone(text) if text else None
        elif name == "imei2":
            values[name] = validators.imei(text) if text else None
        elif name == "place":
            values[name] = text or None
        else:
            values[name] = validators.text(text, name, 2000 if name == "notes" else 100)
    return values


def check_place(tree: PlaceTree, place: str | None, scope: Scope) -> None:
    if place is None:
        if scope.capture is not None:
            raise BadRequest("give the place where the device is kept (one in your scope)")
        return
    if tree.places.get(place) is None:
        raise NotFound(f"place {place!r} does not exist")
    if not scope.can_write(place):
        raise Forbidden(f"place {place!r} is not in your scope")


# -- assignment and status -------------------------------------------------------------------
def check_worker(user: User | None, worker: str, scope: Scope) -> User:
    """The worker a phone may go to, or why not."""
    if user is None:
        raise NotFound(f"unknown worker {worker!r}")
    if not user.active:
        raise Conflict(f"{worker} is {user.status.value}; a phone goes only to an active worker")
    if user.role not in HOLDERS:
        raise BadRequest(
            f"{worker} is a {user.role.value}; devices are assigned to CHWs and supervisors"
        )
    if scope.capture is not None and not any(
        scope.can_write(p) for p in user.places or user.read_places
    ):
        raise Forbidden(f"worker {worker} is not in your scope")
    return user


def plan_assign(device: Device, user: User, actor: str, reason: str = "") -> Change:
    """Give ``device`` (managed by the actor) to ``user`` (checked by :func:`check_worker`)."""
    worker = user.name
    if device.status is DeviceStatus.ASSIGNED and device.worker == worker:
        raise Conflict(f"device {device.serial} is already assigned to {worker}")
    check_transition(device.status, DeviceStatus.ASSIGNED)
    revoked = revocation(device.status, DeviceStatus.ASSIGNED, device.worker != worker)
    fields = {
        "worker": worker,
        "status": DeviceStatus.ASSIGNED.value,
        "issued": dt.date.today().isoformat(),
        "updated": now(),
    }
    action = "reassigned" if device.worker not in (None, worker) else "assigned"
    entry = _entry(actor, action, device, DeviceStatus.ASSIGNED, device.worker, worker, reason)
    return Change(device, fields, entry, revoked, None, ())


def plan_mark(device: Device, target: DeviceStatus, actor: str, reason: str = "") -> Change:
    """Change a device's status (assignment, which needs a worker, is :func:`plan_assign`)."""
    if target is DeviceStatus.ASSIGNED:
        raise BadRequest("to assign a device, assign it to a worker")
    check_transition(device.status, target)
    phone = None
    if target in ACTIVE and device.phone is not None and device.status not in ACTIVE:
        phone = device.phone
    revoked = revocation(device.status, target, False)
    worker, place = device.worker, device.place
    if target in UNASSIGNING:
        worker, place = None, place or (device.worker_places[:1] or (None,))[0]
    fields = {
        "status": target.value,
        "worker": worker,
        "place": place,
        "issued": device.issued if worker else None,
        "updated": now(),
    }
    entry = _entry(actor, target.value, device, target, device.worker, worker, reason)
    return Change(device, fields, entry, revoked, phone, ())


def note_entry(device: Device, actor: str, action: str, reason: str = "") -> HistoryEntry:
    """A history entry that changes neither status nor worker (enrolment, codes)."""
    return _entry(actor, action, device, device.status, device.worker, device.worker, reason)


def _entry(
    actor: str,
    action: str,
    device: Device,
    to_status: DeviceStatus,
    from_worker: str | None,
    to_worker: str | None,
    reason: str = "",
) -> HistoryEntry:
    return HistoryEntry(
        at=now(),
        actor=actor,
        action=action,
        from_status=device.status.value,
        to_status=to_status.value,
        from_worker=from_worker,
        to_worker=to_worker,
        reason=validators.text(reason, "reason", 500),
    )
