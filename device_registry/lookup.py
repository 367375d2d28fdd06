"""Who is texting: phone number -> active device -> worker -> places (for the SMS gateway).

A coded SMS is attributed to the worker holding the device whose SIM has the
sender's number.  Only an ``assigned`` device counts: a lost or stolen phone's SIM
must not be able to file reports in its former holder's name.  Such a phone is
still named (``status`` lost or stolen, the worker it was with and their places),
so its messages are flagged to that worker's supervisor and the sender is told
to contact them, rather than that the phone is unknown.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from device_registry import validators
from device_registry.status import DeviceStatus
from sync import accounts
from sync.errors import BadRequest
from sync.store.sqlite import SqliteStore


@dataclass(frozen=True)
class DeviceOwner:
    serial: str
    worker: str
    places: tuple[str, ...]  # the worker's capture places: where their reports belong
    status: str = DeviceStatus.ASSIGNED.value  # or lost / stolen: reports refused, flagged


GONE = (DeviceStatus.LOST.value, DeviceStatus.STOLEN.value)


def owner_of_phone(conn: sqlite3.Connection, phone: str) -> DeviceOwner | None:
    try:
        number = validators.phone(phone)
    except BadRequest:
        return None
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
    user = accounts.get_user(conn, row[1])
    if user is None:
        return None
    return DeviceOwner(row[0], user.name, user.places, row[2])


async def device_for_phone(store: SqliteStore, phone: str) -> DeviceOwner | None:
    """The active device with this SIM number and the worker holding it, or None."""
    return await store.read(lambda conn: owner_of_phone(conn, phone))
