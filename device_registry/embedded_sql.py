"""The embedded adapter's SQL: plain functions over a ``sqlite3.Connection``.

Each runs inside the caller's transaction (:class:`device_registry.embedded.EmbeddedDevices`
runs them through the store's single writer, or one ``BEGIN IMMEDIATE`` on the
data dir's file for the CLI), so reading a device, checking what
:mod:`device_registry.inventory` says of a change, and writing it cannot
interleave with another change.  Every change of worker or status is written to
``device_history`` in the same transaction, and every change that takes a device
out of its worker's hands revokes its tokens there too: the next request sees it.
Tables: :mod:`device_registry.embedded_schema`.

The device's worker (places, account status) is read with a join on the
``users`` table of the same file, in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from device_registry import codes, inventory
from device_registry.enrolment import (
    CODE_LIFETIME,
    Enrolment,
    EnrolmentRefused,
    IssuedCode,
    NotAssigned,
    RefusedAttempt,
    StoredCode,
    code_key,
    stamp,
)
from device_registry.inventory import Change
from device_registry.lookup import GONE
from device_registry.model import Device, DeviceOwner, HistoryEntry, NewDevice
from device_registry.status import ACTIVE, DeviceStatus
from device_registry.verdict import TokenBinding
from sync.people_store import embedded_tables
from sync.scopes import Scope, UserStatus

log = structlog.get_logger("fieldsync.devices")

_COLUMNS = (
    "d.id, d.serial, d.imei, d.imei2, d.model, d.os_version, d.app_version, d.phone, "
    "d.worker, d.place, d.issued, d.status, d.last_sync, d.notes, d.created, d.updated, u.places, "
    "u.status"
)
_SELECT = f"SELECT {_COLUMNS} FROM devices d LEFT JOIN users u ON u.name = d.worker"
# Columns a Change may set (its keys come from inventory, never from a request).
_WRITABLE = frozenset(
    {*inventory.EDITABLE, "worker", "status", "issued", "updated", "last_sync", "app_version"}
)


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


# -- reading -----------------------------------------------------------------------------
def get(conn: sqlite3.Connection, serial: str) -> Device | None:
    row = conn.execute(f"{_SELECT} WHERE d.serial=?", (serial.strip().upper(),)).fetchone()
    return None if row is None else _device(row)


def _fresh(conn: sqlite3.Connection, serial: str) -> Device:
    device = get(conn, serial)
    assert device is not None
    return device


def list_all(conn: sqlite3.Connection) -> list[Device]:
    return [_device(row) for row in conn.execute(f"{_SELECT} ORDER BY d.serial")]


def history(conn: sqlite3.Connection, serial: str) -> list[HistoryEntry]:
    rows = conn.execute(
        "SELECT h.at, h.actor, h.action, h.from_status, h.to_status, h.from_worker, "
        "h.to_worker, h.reason FROM device_history h JOIN devices d ON d.id = h.device "
        "WHERE d.serial=? ORDER BY h.id DESC",
        (serial.strip().upper(),),
    ).fetchall()
    return [HistoryEntry(*row) for row in rows]


# -- changing ----------------------------------------------------------------------------------
def add(conn: sqlite3.Connection, new: NewDevice, actor: str, scope: Scope) -> Device:
    if get(conn, new.serial) is not None:
        raise inventory.serial_taken(new.serial)
    inventory.check_new(new, embedded_tables.place_tree(conn), scope)
    _check_imeis(conn, (new.imei, new.imei2 or ""), None, scope)
    if new.phone is not None:
        _check_phone(conn, new.phone, None, scope)
    device, entry = inventory.added(new, actor)
    cur = conn.execute(
        "INSERT INTO devices(serial, imei, imei2, model, os_version, phone, place, status, "
        "notes, created, updated) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
        (
            device.serial,
            device.imei,
            device.imei2,
            device.model,
            device.os_version,
            device.phone,
            device.place,
            device.status.value,
            device.notes,
            device.created,
            device.updated,
        ),
    )
    _record(conn, int(cur.lastrowid or 0), entry)
    return _fresh(conn, new.serial)


def edit(
    conn: sqlite3.Connection,
    serial: str,
    changes: Mapping[str, str | None],
    actor: str,
    scope: Scope,
) -> Device:
    device = inventory.managed(get(conn, serial), serial, scope)
    tree = embedded_tables.place_tree(conn) if "place" in changes else _NO_TREE
    return _apply(conn, inventory.plan_edit(device, changes, actor, scope, tree), scope)


def assign(
    conn: sqlite3.Connection, serial: str, worker: str, actor: str, scope: Scope, reason: str = ""
) -> Device:
    device = inventory.managed(get(conn, serial), serial, scope)
    user = inventory.check_worker(embedded_tables.get_user(conn, worker), worker, scope)
    return _apply(conn, inventory.plan_assign(device, user, actor, reason), scope)


def mark(
    conn: sqlite3.Connection,
    serial: str,
    target: DeviceStatus,
    actor: str,
    scope: Scope,
    reason: str = "",
) -> Device:
    device = inventory.managed(get(conn, serial), serial, scope)
    return _apply(conn, inventory.plan_mark(device, target, actor, reason), scope)


def _apply(conn: sqlite3.Connection, change: Change, scope: Scope) -> Device:
    device = change.device
    if change.imeis:
        _check_imeis(conn, change.imeis, device.id, scope)
    if change.phone:
        _check_phone(conn, change.phone, device.id, scope)
    if change.revoke is not None:
        revoke_tokens(conn, device.id, change.revoke)
    for column, value in change.fields.items():
        assert column in _WRITABLE, column
        conn.execute(f"UPDATE devices SET {column}=? WHERE id=?", (value, device.id))
    if change.entry is not None:
        _record(conn, device.id, change.entry)
    return _fresh(conn, device.serial)


class _EmptyTree:
    places: dict[str, object] = {}


_NO_TREE: Any = _EmptyTree()  # an edit that does not move the device needs no tree


def _check_imeis(
    conn: sqlite3.Connection, imeis: Sequence[str], own_id: int | None, scope: Scope
) -> None:
    for value in filter(None, imeis):
        row = conn.execute(
            "SELECT serial FROM devices WHERE (imei=? OR imei2=?) AND id IS NOT ?",
            (value, value, own_id),
        ).fetchone()
        if row is not None:
            raise inventory.imei_taken(value, get(conn, row[0]), row[0], scope)


def _check_phone(conn: sqlite3.Connection, phone: str, own_id: int | None, scope: Scope) -> None:
    marks = ",".join("?" * len(ACTIVE))
    row = conn.execute(
        f"SELECT serial FROM devices WHERE phone=? AND status IN ({marks}) AND id IS NOT ?",
        (phone, *(s.value for s in ACTIVE), own_id),
    ).fetchone()
    if row is not None:
        raise inventory.phone_taken(phone, get(conn, row[0]), row[0], scope)


def revoke_tokens(conn: sqlite3.Connection, device_id: int, reason: str) -> int:
    """Revoke the device's live tokens and unused enrolment codes; how many tokens."""
    cur = conn.execute(
        "UPDATE device_tokens SET revoked=?, revoked_reason=? WHERE device=? AND revoked IS NULL",
        (inventory.now(), reason, device_id),
    )
    conn.execute(
        "UPDATE enrolment_codes SET superseded=1 WHERE device=? AND used IS NULL", (device_id,)
    )
    log.info("device_tokens_revoked", device_id=device_id, reason=reason, tokens=cur.rowcount)
    return cur.rowcount


def _record(conn: sqlite3.Connection, device_id: int, entry: HistoryEntry) -> None:
    conn.execute(
        "INSERT INTO device_history(device, at, actor, action, from_status, to_status, "
        "from_worker, to_worker, reason) VALUES(?,?,?,?,?,?,?,?,?)",
        (
            device_id,
            entry.at,
            entry.actor,
            entry.action,
            entry.from_status,
            entry.to_status,
            entry.from_worker,
            entry.to_worker,
            entry.reason,
        ),
    )


# -- enrolment ---------------------------------------------------------------------------------
def issue_code(
    conn: sqlite3.Connection,
    serial: str,
    actor: str,
    scope: Scope,
    now: dt.datetime | None = None,
) -> IssuedCode:
    device = inventory.managed(get(conn, serial), serial, scope)
    if device.status is not DeviceStatus.ASSIGNED or device.worker is None:
        raise NotAssigned(device)
    moment = now or dt.datetime.now(dt.UTC)
    expires = stamp(moment + CODE_LIFETIME)
    conn.execute(
        "UPDATE enrolment_codes SET superseded=1 WHERE device=? AND used IS NULL", (device.id,)
    )
    code = codes.new_code()
    conn.execute(
        "INSERT INTO enrolment_codes(code_hash, device, worker, issued_by, created, expires) "
        "VALUES(?,?,?,?,?,?)",
        (code_key(code), device.id, device.worker, actor, stamp(moment), expires),
    )
    entry = inventory.note_entry(device, actor, "enrolment code issued", f"for {device.worker}")
    _record(conn, device.id, entry)
    return IssuedCode(code, device.serial, device.worker, expires)


def check_known(conn: sqlite3.Connection, code: str) -> None:
    """Refuse a malformed or unknown code (before any password is checked: see the API)."""
    key = code_key(code)
    if conn.execute("SELECT 1 FROM enrolment_codes WHERE code_hash=?", (key,)).fetchone() is None:
        raise EnrolmentRefused("unknown enrolment code; check it or ask for a new one")


def enrol(
    conn: sqlite3.Connection,
    code: str,
    serial: str,
    worker: str,
    now: dt.datetime | None = None,
    versions: tuple[str, str] = ("", ""),
) -> Enrolment:
    """Exchange a code for a device token, as ``worker`` on the device ``serial``."""
    moment = stamp(now or dt.datetime.now(dt.UTC))
    device_id = _usable_code(conn, code, serial, worker, moment)
    revoke_tokens(conn, device_id, "re_enrolled")
    token = codes.new_token()
    conn.execute(
        "INSERT INTO device_tokens(token_hash, device, worker, created) VALUES(?,?,?,?)",
        (codes.token_hash(token), device_id, worker, moment),
    )
    touch(conn, device_id, moment, *versions)
    device = get(conn, serial)
    assert device is not None
    _record(conn, device.id, inventory.note_entry(device, worker, "enrolled"))
    return Enrolment(token, device.serial, worker)


def _usable_code(conn: sqlite3.Connection, code: str, serial: str, worker: str, moment: str) -> int:
    """The device id the code enrols, after marking it used; or why it cannot be used."""
    key = code_key(code)
    row = conn.execute(
        "SELECT c.device, c.worker, c.expires, c.used, c.superseded, d.serial, d.status, "
        "d.worker FROM enrolment_codes c JOIN devices d ON d.id = c.device WHERE c.code_hash=?",
        (key,),
    ).fetchone()
    if row is None:
        raise EnrolmentRefused("unknown enrolment code; check it or ask for a new one")
    stored = StoredCode(int(row[0]), row[1], row[2], row[3], bool(row[4]), *row[5:])
    stored.check(serial, worker, moment)
    conn.execute("UPDATE enrolment_codes SET used=? WHERE code_hash=?", (moment, key))
    return stored.device_id


# -- every request ---------------------------------------------------------------------------
def binding(conn: sqlite3.Connection, token_hash: str) -> tuple[str, TokenBinding] | None:
    """The token and its device as they are now (one primary-key lookup and a join)."""
    row = conn.execute(
        "SELECT d.id, d.serial, t.worker, t.revoked_reason, d.status, d.worker "
        "FROM device_tokens t JOIN devices d ON d.id = t.device WHERE t.token_hash=?",
        (token_hash,),
    ).fetchone()
    if row is None:
        return None
    return str(row[0]), TokenBinding(row[1], row[2], row[3], DeviceStatus(row[4]), row[5])


def touch(
    conn: sqlite3.Connection, device_id: int, at: str, app_version: str = "", os_version: str = ""
) -> None:
    """Record that the device was heard from (versions only when the app says them)."""
    conn.execute(
        "UPDATE devices SET last_sync=?, app_version=COALESCE(NULLIF(?, ''), app_version), "
        "os_version=COALESCE(NULLIF(?, ''), os_version) WHERE id=?",
        (at, app_version, os_version, device_id),
    )


def record_refusals(conn: sqlite3.Connection, attempts: Sequence[RefusedAttempt]) -> None:
    conn.executemany(
        "INSERT INTO device_refusals(at, ip, user, serial, kind, status, method, path, reason) "
        "VALUES(?,?,?,?,?,?,?,?,?)",
        [
            (a.at, a.ip, a.user, a.serial, a.kind, a.status, a.method, a.path[:300], a.reason)
            for a in attempts
        ],
    )


REFUSAL_COLUMNS = ("at", "ip", "user", "serial", "kind", "status", "method", "path", "reason")


def refusals(
    conn: sqlite3.Connection, serials: frozenset[str] | None, limit: int
) -> list[dict[str, Any]]:
    """The latest refused attempts, newest first (only these serials' unless None)."""
    columns = ", ".join(REFUSAL_COLUMNS)
    if serials is None:
        rows = conn.execute(
            f"SELECT {columns} FROM device_refusals ORDER BY id DESC LIMIT ?", (limit,)
        )
    else:
        rows = conn.execute(
            f"SELECT {columns} FROM device_refusals WHERE serial IN "
            "(SELECT value FROM json_each(?)) ORDER BY id DESC LIMIT ?",
            (json.dumps(sorted(serials)), limit),
        )
    return [dict(zip(REFUSAL_COLUMNS, row, strict=True)) for row in rows]


# -- who is texting ----------------------------------------------------------------------------


def owner_of_phone(conn: sqlite3.Connection, number: str) -> DeviceOwner | None:
    """The assigned device with SIM ``number`` (E.164), or its latest lost or stolen one."""
    try:
        row = conn.execute(
            "SELECT serial, worker, status FROM devices WHERE phone=? AND status=? "
            "AND worker IS NOT NULL",
            (number, DeviceStatus.ASSIGNED.value),
        ).fetchone()
        if row is None:  # the number's latest lost or stolen phone, if any
            row = conn.execute(
                "SELECT serial, worker, status FROM devices WHERE phone=? AND status IN (?,?) "
                "AND worker IS NOT NULL ORDER BY updated DESC, id DESC LIMIT 1",
                (number, *GONE),
            ).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None  # the registry's tables are made at start-up: none yet, nobody known
        raise
    if row is None:
        return None
    user = embedded_tables.get_user(conn, row[1])
    if user is None:
        return None
    return DeviceOwner(row[0], user.name, user.places, row[2])
