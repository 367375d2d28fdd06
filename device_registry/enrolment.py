"""Enrolment codes and device tokens: their rules and value types (no storage).

    supervisor: issue_code(serial)   -> "K7Q2M-9XW4C" (shown once; only its hash is kept)
    app, as the worker: enrol(code, serial) -> device token (shown once; only its hash kept)
    every request:      binding(token hash) -> what ``verdict.judge`` decides on

A code is bound to a device and its worker at the time it was issued, is used at
most once, expires after ``CODE_LIFETIME``, and is void once a newer code is
issued or the device changes hands.  Enrolling again revokes the device's older
token, so a device has at most one live token.  The adapters of the device port
(``device_registry.ports``) keep only the SHA-256 of codes and tokens.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from device_registry import codes, status, validators
from device_registry.model import Device
from device_registry.status import DeviceStatus
from sync.errors import Conflict, Forbidden

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


def stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class StoredCode:
    """An enrolment code as stored, with the device it enrols as that device is now."""

    device_id: int
    worker: str
    expires: str
    used: str | None
    superseded: bool
    serial: str
    status: str
    holder: str | None

    def check(self, serial: str, worker: str, moment: str) -> None:
        """Refuse (EnrolmentRefused) a code that cannot enrol ``serial`` for ``worker`` now."""
        problem = self.problem(validators.serial(serial), worker, moment)
        if problem is not None:
            raise EnrolmentRefused(problem)

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


def code_key(code: str) -> str:
    """What a code is stored under (the SHA-256 of its normal form), or EnrolmentRefused."""
    normalised = codes.normalise_code(code)
    if normalised is None:
        raise EnrolmentRefused("that is not an enrolment code: 10 letters and digits, XXXXX-XXXXX")
    return codes.code_hash(normalised)


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
