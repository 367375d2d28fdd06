"""Enrolment codes, device tokens, refused attempts and last-sync updates, over SQL.

    supervisor: issue_code(serial)   -> "K7Q2M-9XW4C" (shown once; only its hash is kept)
    app, as the worker: enrol(code, serial) -> device token (shown once; only its hash kept)
    every request:      binding(token hash) -> what ``verdict.judge`` decides on

A code is bound to a device and its worker at the time it was issued, is used at
most once, expires after ``CODE_LIFETIME``, and is void once a newer code is
issued or the device changes hands.  Enrolling again revokes the device's older
token, so a device has at most one live token.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from device_registry import codes, inventory, status, validators
from device_registry.model import Device
from device_registry.status import DeviceStatus
from device_registry.verdict import TokenBinding
from sync.errors import Conflict, Forbidden
from sync.scopes import Scope

CODE_LIFETIME = dt.timedelta(hours=24)


class EnrolmentRefused(Forbidden):
    """An enrolment attempt with a wrong, used, expired or misdirected code (403)."""

    error = "enrolment_refused"


class NotAssigned(Conflict):
    """An enrolment code asked for a device no worker holds (409).

    ``steps`` are the statuses the device must pass through to be assigned again
    (``(IN_STOCK, ASSIGNED)`` for a lost one: found, then assigned), or None when it
    never can be (retired).  The reason says them in a supervisor's words; the CLI
    turns them into the commands to type.
    """

    def __init__(self, device: Device) -> None:
        self.device = device
        self.steps = status.path(device.status, DeviceStatus.ASSIGNED)
        super().__init__(_not_assigned_reason(device, self.steps))


def step_words(current: DeviceStatus, steps: tuple[DeviceStatus, ...]) -> list[str]:
    """Each step as what a supervisor does: ``mark it found``, ``assign it to a worker``."""
    words, before = [], current
    for after in steps:
        action = status.label(before, after).lower()
        words.append(
            "assign it to a worker" if after is DeviceStatus.ASSIGNED else f"mark it {action}"
        )
        before = after
    return words


def _not_assigned_reason(device: Device, steps: tuple[DeviceStatus, ...] | None) -> str:
    where = f"device {device.serial} is {device.status.value}"
    if steps is None:
        return f"{where}: it can never be enrolled again"
    todo = step_words(device.status, steps) or ["assign it to a worker"]
    return f"{where}: {', then '.join(todo)}, before issuing an enrolment code"


@dataclass(frozen=True)
class IssuedCode:
    code: str
    serial: str
    worker: str
    expires: str


@dataclass(frozen=True)
class Enrolment:
    token: str
    serial: str
    worker: str


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def issue_code(
    conn: sqlite3.Connection,
    serial: str,
    actor: str,
    scope: Scope,
    now: dt.datetime | None = None,
) -> IssuedCode:
    device = inventory.managed(conn, serial, scope)
    if device.status is not DeviceStatus.ASSIGNED or device.worker is None:
        raise NotAssigned(device)
    moment = now or dt.datetime.now(dt.UTC)
    expires = _stamp(moment + CODE_LIFETIME)
    conn.execute(
        "UPDATE enrolment_codes SET superseded=1 WHERE device=? AND used IS NULL", (device.id,)
    )
    code = codes.new_code()
    normalised = codes.normalise_code(code)
    assert normalised is not None
    conn.execute(
        "INSERT INTO enrolment_codes(code_hash, device, worker, issued_by, created, expires) "
        "VALUES(?,?,?,?,?,?)",
        (codes.code_hash(normalised), device.id, device.worker, actor, _stamp(moment), expires),
    )
    inventory.record(conn, device, actor, "enrolment code issued", f"for {device.worker}")
    return IssuedCode(code, device.serial, device.worker, expires)


def enrol(
    conn: sqlite3.Connection,
    code: str,
    serial: str,
    worker: str,
    now: dt.datetime | None = None,
    versions: tuple[str, str] = ("", ""),
) -> Enrolment:
    """Exchange a code for a device token, as ``worker`` on the device ``serial``."""
    moment = _stamp(now or dt.datetime.now(dt.UTC))
    device_id = _usable_code(conn, code, serial, worker, moment)
    inventory.revoke_tokens(conn, device_id, "re_enrolled")
    token = codes.new_token()
    conn.execute(
        "INSERT INTO device_tokens(token_hash, device, worker, created) VALUES(?,?,?,?)",
        (codes.token_hash(token), device_id, worker, moment),
    )
    touch(conn, device_id, moment, *versions)
    device = inventory.get(conn, serial)
    assert device is not None
    inventory.record(conn, device, worker, "enrolled")
    return Enrolment(token, device.serial, worker)


@dataclass(frozen=True)
class _StoredCode:
    device_id: int
    worker: str
    expires: str
    used: str | None
    superseded: bool
    serial: str
    status: str
    holder: str | None

    def problem(self, serial: str, worker: str, moment: str) -> str | None:
        if self.used is not None:
            return f"this enrolment code was already used ({self.used}); ask for a new one"
        if self.worker != worker:
            return "this enrolment code was issued to another worker"
        if self.serial != serial:
            return f"this enrolment code is for device {self.serial}, not {serial}"
        if self.superseded or self.status != DeviceStatus.ASSIGNED.value or self.holder != worker:
            return "this enrolment code is void: a newer one was issued or the device changed hands"
        if self.expires <= moment:
            return f"this enrolment code expired at {self.expires}; ask for a new one"
        return None


def check_known(conn: sqlite3.Connection, code: str) -> None:
    """Refuse a malformed or unknown code (before any password is checked: see the API)."""
    normalised = codes.normalise_code(code)
    if normalised is None:
        raise EnrolmentRefused("that is not an enrolment code: 10 letters and digits, XXXXX-XXXXX")
    key = codes.code_hash(normalised)
    if conn.execute("SELECT 1 FROM enrolment_codes WHERE code_hash=?", (key,)).fetchone() is None:
        raise EnrolmentRefused("unknown enrolment code; check it or ask for a new one")


def _usable_code(conn: sqlite3.Connection, code: str, serial: str, worker: str, moment: str) -> int:
    """The device id the code enrols, after marking it used; or why it cannot be used."""
    normalised = codes.normalise_code(code)
    if normalised is None:
        raise EnrolmentRefused("that is not an enrolment code: 10 letters and digits, XXXXX-XXXXX")
    key = codes.code_hash(normalised)
    row = conn.execute(
        "SELECT c.device, c.worker, c.expires, c.used, c.superseded, d.serial, d.status, "
        "d.worker FROM enrolment_codes c JOIN devices d ON d.id = c.device WHERE c.code_hash=?",
        (key,),
    ).fetchone()
    if row is None:
        raise EnrolmentRefused("unknown enrolment code; check it or ask for a new one")
    stored = _StoredCode(int(row[0]), row[1], row[2], row[3], bool(row[4]), *row[5:])
    problem = stored.problem(validators.serial(serial), worker, moment)
    if problem is not None:
        raise EnrolmentRefused(problem)
    conn.execute("UPDATE enrolment_codes SET used=? WHERE code_hash=?", (moment, key))
    return stored.device_id


# -- every request ---------------------------------------------------------------------
def binding(conn: sqlite3.Connection, token_hash: str) -> tuple[int, TokenBinding] | None:
    """The token and its device as they are now (one primary-key lookup and a join)."""
    row = conn.execute(
        "SELECT d.id, d.serial, t.worker, t.revoked_reason, d.status, d.worker "
        "FROM device_tokens t JOIN devices d ON d.id = t.device WHERE t.token_hash=?",
        (token_hash,),
    ).fetchone()
    if row is None:
        return None
    return int(row[0]), TokenBinding(row[1], row[2], row[3], DeviceStatus(row[4]), row[5])


def touch(
    conn: sqlite3.Connection, device_id: int, at: str, app_version: str = "", os_version: str = ""
) -> None:
    """Record that the device was heard from (versions only when the app says them)."""
    conn.execute(
        "UPDATE devices SET last_sync=?, app_version=COALESCE(NULLIF(?, ''), app_version), "
        "os_version=COALESCE(NULLIF(?, ''), os_version) WHERE id=?",
        (at, app_version, os_version, device_id),
    )


@dataclass(frozen=True)
class RefusedAttempt:
    at: str
    ip: str | None
    user: str | None
    serial: str | None
    kind: str
    status: int
    method: str
    path: str
    reason: str


def record_refusals(conn: sqlite3.Connection, attempts: list[RefusedAttempt]) -> None:
    conn.executemany(
        "INSERT INTO device_refusals(at, ip, user, serial, kind, status, method, path, reason) "
        "VALUES(?,?,?,?,?,?,?,?,?)",
        [
            (a.at, a.ip, a.user, a.serial, a.kind, a.status, a.method, a.path[:300], a.reason)
            for a in attempts
        ],
    )


def refusals(
    conn: sqlite3.Connection, serials: frozenset[str] | None, limit: int
) -> list[dict[str, Any]]:
    """The latest refused attempts, newest first (only these serials' unless None)."""
    columns = "at, ip, user, serial, kind, status, method, path, reason"
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
    names = [name.strip() for name in columns.split(",")]
    return [dict(zip(names, row, strict=True)) for row in rows]
