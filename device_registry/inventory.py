"""The inventory over SQL: add, edit, assign and change the status of devices.

Plain functions over a ``sqlite3.Connection`` inside the caller's transaction (the
app runs them through ``store.write_tx``, the CLI through ``sync.clitools.with_conn``).
Every change of worker or status is written to ``device_history`` in the same
transaction, and every change that takes a device out of its worker's hands
revokes its tokens there too: the next request sees it (see ``status``).

``scope`` is the actor's: a device outside their read scope does not exist for
them (404), one they only read cannot be changed by them (403).  The CLI acts
with ``UNLIMITED``.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Mapping

import structlog

from device_registry import validators
from device_registry.model import Device, HistoryEntry, NewDevice
from device_registry.status import (
    ACTIVE,
    UNASSIGNING,
    DeviceStatus,
    check_transition,
    revocation,
)
from sync import accounts
from sync.errors import BadRequest, Conflict, Forbidden, NotFound
from sync.scopes import Role, Scope, UserStatus

log = structlog.get_logger("fieldsync.devices")

EDITABLE = ("model", "os_version", "phone", "imei2", "place", "notes")
_COLUMNS = (
    "d.id, d.serial, d.imei, d.imei2, d.model, d.os_version, d.app_version, d.phone, "
    "d.worker, d.place, d.issued, d.status, d.last_sync, d.notes, d.created, d.updated, u.places, "
    "u.status"
)
_SELECT = f"SELECT {_COLUMNS} FROM devices d LEFT JOIN users u ON u.name = d.worker"

# Roles whose phones hold records (they replicate), so are bound to a device; admins
# are exempt (servers and browsers), gateways do not replicate.
HOLDERS = frozenset({Role.CHW, Role.SUPERVISOR})


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _device(row: tuple[object, ...]) -> Device:
    places = tuple(json.loads(str(row[16]))) if row[16] else ()
    return Device(
        id=int(row[0]),  # type: ignore[call-overload]
        serial=str(row[1]),
        imei=str(row[2]),
        imei2=_opt(row[3]),
        model=str(row[4]),
        os_version=str(row[5]),
        app_version=str(row[6]),
        phone=_opt(row[7]),
        worker=_opt(row[8]),
        worker_places=places,
        place=_opt(row[9]),
        issued=_opt(row[10]),
        status=DeviceStatus(row[11]),
        last_sync=_opt(row[12]),
        notes=str(row[13]),
        created=str(row[14]),
        updated=str(row[15]),
        worker_status=None if row[17] is None else UserStatus(row[17]),
    )


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


# -- reading -----------------------------------------------------------------------
def get(conn: sqlite3.Connection, serial: str) -> Device | None:
    row = conn.execute(f"{_SELECT} WHERE d.serial=?", (serial.strip().upper(),)).fetchone()
    return None if row is None else _device(row)


def _fresh(conn: sqlite3.Connection, serial: str) -> Device:
    device = get(conn, serial)
    assert device is not None
    return device


def visible(conn: sqlite3.Connection, serial: str, scope: Scope) -> Device:
    """The device, if it exists for someone with ``scope``; otherwise 404."""
    device = get(conn, serial)
    if device is None or not device.visible_to(scope):
        raise NotFound(f"no device with serial {serial!r}")
    return device


def managed(conn: sqlite3.Connection, serial: str, scope: Scope) -> Device:
    """The device, if someone with ``scope`` may change it."""
    device = visible(conn, serial, scope)
    if not device.managed_by(scope):
        raise Forbidden(f"device {device.serial} belongs to places you may only read")
    return device


def list_all(conn: sqlite3.Connection) -> list[Device]:
    return [_device(row) for row in conn.execute(f"{_SELECT} ORDER BY d.serial")]


def history(conn: sqlite3.Connection, device: Device) -> list[HistoryEntry]:
    rows = conn.execute(
        "SELECT at, actor, action, from_status, to_status, from_worker, to_worker, reason "
        "FROM device_history WHERE device=? ORDER BY id DESC",
        (device.id,),
    ).fetchall()
    return [HistoryEntry(*row) for row in rows]


# -- adding and editing --------------------------------------------------------------
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


def add(conn: sqlite3.Connection, new: NewDevice, actor: str, scope: Scope) -> Device:
    if get(conn, new.serial) is not None:
        raise Conflict(f"a device with serial {new.serial} is already in the inventory")
    _check_place(conn, new.place, scope)
    _check_imeis(conn, new.imei, new.imei2, None, scope)
    if new.phone is not None:
        _check_phone(conn, new.phone, None, scope)
    stamp = now()
    cur = conn.execute(
        "INSERT INTO devices(serial, imei, imei2, model, os_version, phone, place, status, "
        "notes, created, updated) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
        (
            new.serial,
            new.imei,
            new.imei2,
            new.model,
            new.os_version,
            new.phone,
            new.place,
            DeviceStatus.IN_STOCK.value,
            new.notes,
            stamp,
            stamp,
        ),
    )
    _record(conn, int(cur.lastrowid or 0), actor, "added", None, DeviceStatus.IN_STOCK, None, None)
    return _fresh(conn, new.serial)


def edit(
    conn: sqlite3.Connection,
    serial: str,
    changes: Mapping[str, str | None],
    actor: str,
    scope: Scope,
) -> Device:
    """Change the details of a device (``EDITABLE`` fields; empty clears optional ones)."""
    device = managed(conn, serial, scope)
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise BadRequest(f"cannot edit {', '.join(sorted(unknown))}; editable: {EDITABLE}")
    values = _validated_edits(changes)
    if "place" in values:
        _check_place(conn, values["place"], scope)
    if values.get("imei2"):
        _check_imeis(conn, device.imei, values["imei2"], device.id, scope)
    if values.get("phone") and device.status in ACTIVE:
        _check_phone(conn, str(values["phone"]), device.id, scope)
    for column, value in values.items():  # column names come from EDITABLE only
        conn.execute(f"UPDATE devices SET {column}=? WHERE id=?", (value, device.id))
    conn.execute("UPDATE devices SET updated=? WHERE id=?", (now(), device.id))
    if "phone" in values and values["phone"] != device.phone:
        reason = f"SIM phone number {device.phone or '-'} -> {values['phone'] or '-'}"
        _record(conn, device.id, actor, "edited", device.status, device.status, None, None, reason)
    return _fresh(conn, device.serial)


def _validated_edits(changes: Mapping[str, str | None]) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for field, raw in changes.items():
        text = (raw or "").strip()
        if field == "phone":
            values[field] = validators.phone(text) if text else None
        elif field == "imei2":
            values[field] = validators.imei(text) if text else None
        elif field == "place":
            values[field] = text or None
        else:
            values[field] = validators.text(text, field, 2000 if field == "notes" else 100)
    return values


def _check_place(conn: sqlite3.Connection, place: str | None, scope: Scope) -> None:
    if place is None:
        if scope.capture is not None:
            raise BadRequest("give the place where the device is kept (one in your scope)")
        return
    if accounts.place_tree(conn).places.get(place) is None:
        raise NotFound(f"place {place!r} does not exist")
    if not scope.can_write(place):
        raise Forbidden(f"place {place!r} is not in your scope")


def _holder(
    conn: sqlite3.Connection, serial: str, scope: Scope, noun: str = "device", article: str = "a"
) -> str:
    """The device a conflict is with, named only to someone who may see it."""
    device = get(conn, serial)
    if device is not None and device.visible_to(scope):
        return f"{noun} {serial}"
    return f"{article} {noun} outside your scope"


def _check_imeis(
    conn: sqlite3.Connection, imei: str, imei2: str | None, own_id: int | None, scope: Scope
) -> None:
    if imei2 == imei:
        raise BadRequest("the second IMEI must differ from the first")
    for value in filter(None, (imei, imei2)):
        row = conn.execute(
            "SELECT serial FROM devices WHERE (imei=? OR imei2=?) AND id IS NOT ?",
            (value, value, own_id),
        ).fetchone()
        if row is not None:
            raise Conflict(f"IMEI {value} is already registered to {_holder(conn, row[0], scope)}")


def _check_phone(conn: sqlite3.Connection, phone: str, own_id: int | None, scope: Scope) -> None:
    marks = ",".join("?" * len(ACTIVE))
    row = conn.execute(
        f"SELECT serial FROM devices WHERE phone=? AND status IN ({marks}) AND id IS NOT ?",
        (phone, *(s.value for s in ACTIVE), own_id),
    ).fetchone()
    if row is not None:
        holder = _holder(conn, row[0], scope, "active device", "an")
        raise Conflict(f"phone number {phone} is in use by {holder}")


# -- assignment and status -------------------------------------------------------------
def assign(
    conn: sqlite3.Connection, serial: str, worker: str, actor: str, scope: Scope, reason: str = ""
) -> Device:
    device = managed(conn, serial, scope)
    user = accounts.get_user(conn, worker)
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
    if device.status is DeviceStatus.ASSIGNED and device.worker == worker:
        raise Conflict(f"device {device.serial} is already assigned to {worker}")
    check_transition(device.status, DeviceStatus.ASSIGNED)
    revoked = revocation(device.status, DeviceStatus.ASSIGNED, device.worker != worker)
    if revoked is not None:
        revoke_tokens(conn, device.id, revoked)
    conn.execute(
        "UPDATE devices SET worker=?, status=?, issued=?, updated=? WHERE id=?",
        (worker, DeviceStatus.ASSIGNED.value, dt.date.today().isoformat(), now(), device.id),
    )
    action = "reassigned" if device.worker not in (None, worker) else "assigned"
    _record(
        conn,
        device.id,
        actor,
        action,
        device.status,
        DeviceStatus.ASSIGNED,
        device.worker,
        worker,
        reason,
    )
    return _fresh(conn, device.serial)


def mark(
    conn: sqlite3.Connection,
    serial: str,
    target: DeviceStatus,
    actor: str,
    scope: Scope,
    reason: str = "",
) -> Device:
    """Change a device's status (assignment, which needs a worker, is :func:`assign`)."""
    if target is DeviceStatus.ASSIGNED:
        raise BadRequest("to assign a device, assign it to a worker")
    device = managed(conn, serial, scope)
    check_transition(device.status, target)
    if target in ACTIVE and device.phone is not None and device.status not in ACTIVE:
        _check_phone(conn, device.phone, device.id, scope)
    revoked = revocation(device.status, target, False)
    if revoked is not None:
        revoke_tokens(conn, device.id, revoked)
    worker, place = device.worker, device.place
    if target in UNASSIGNING:
        worker, place = None, place or (device.worker_places[:1] or (None,))[0]
    conn.execute(
        "UPDATE devices SET status=?, worker=?, place=?, issued=?, updated=? WHERE id=?",
        (target.value, worker, place, device.issued if worker else None, now(), device.id),
    )
    _record(
        conn, device.id, actor, target.value, device.status, target, device.worker, worker, reason
    )
    return _fresh(conn, device.serial)


def revoke_tokens(conn: sqlite3.Connection, device_id: int, reason: str) -> int:
    """Revoke the device's live tokens and unused enrolment codes; how many tokens."""
    cur = conn.execute(
        "UPDATE device_tokens SET revoked=?, revoked_reason=? WHERE device=? AND revoked IS NULL",
        (now(), reason, device_id),
    )
    conn.execute(
        "UPDATE enrolment_codes SET superseded=1 WHERE device=? AND used IS NULL", (device_id,)
    )
    log.info("device_tokens_revoked", device_id=device_id, reason=reason, tokens=cur.rowcount)
    return cur.rowcount


def record(
    conn: sqlite3.Connection, device: Device, actor: str, action: str, reason: str = ""
) -> None:
    """A history entry that changes neither status nor worker (enrolment, codes)."""
    _record(
        conn,
        device.id,
        actor,
        action,
        device.status,
        device.status,
        device.worker,
        device.worker,
        reason,
    )


def _record(
    conn: sqlite3.Connection,
    device_id: int,
    actor: str,
    action: str,
    from_status: DeviceStatus | None,
    to_status: DeviceStatus,
    from_worker: str | None,
    to_worker: str | None,
    reason: str = "",
) -> None:
    conn.execute(
        "INSERT INTO device_history(device, at, actor, action, from_status, to_status, "
        "from_worker, to_worker, reason) VALUES(?,?,?,?,?,?,?,?,?)",
        (
            device_id,
            now(),
            actor,
            action,
            None if from_status is None else from_status.value,
            to_status.value,
            from_worker,
            to_worker,
            validators.text(reason, "reason", 500),
        ),
    )
