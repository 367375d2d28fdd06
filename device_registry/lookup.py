"""Who is texting: phone number -> active device -> worker -> places (for the SMS gateway).

A coded SMS is attributed to the worker holding the device whose SIM has the
sender's number.  Only an ``assigned`` device counts: a lost or stolen phone's SIM
must not be able to file reports in its former holder's name.  Such a phone is
still named (``status`` lost or stolen, the worker it was with and their places),
so its messages are flagged to that worker's supervisor and the sender is told
to contact them, rather than that the phone is unknown.

The SMS gateway calls :func:`device_for_phone` with whatever it was given as the
registry's store: the device port itself, or the server's SQLite store, which
stands for the device port the registry opened over it (``remember``) — so
with CouchDB the gateway finds the phones every instance shares.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, cast

from device_registry import validators
from device_registry.model import DeviceOwner
from device_registry.status import DeviceStatus
from sync.errors import BadRequest

if TYPE_CHECKING:
    from device_registry.ports import DeviceStore

__all__ = ["GONE", "DeviceOwner", "device_for_phone", "remember"]

GONE = (DeviceStatus.LOST.value, DeviceStatus.STOLEN.value)
_OPENED: weakref.WeakKeyDictionary[Any, DeviceStore] = weakref.WeakKeyDictionary()


def remember(sqlite: object, devices: DeviceStore) -> None:
    """``devices`` is the registry's port for the server whose SQLite store is ``sqlite``."""
    _OPENED[sqlite] = devices


def number(phone: str) -> str | None:
    """The E.164 number, or None for something that is not one."""
    try:
        return validators.phone(phone)
    except BadRequest:
        return None


async def device_for_phone(store: object, phone: str) -> DeviceOwner | None:
    """The active device with this SIM number and the worker holding it, or None."""
    devices: DeviceStore | None = _OPENED.get(store)
    if devices is None and hasattr(store, "owner_of_phone"):  # the port itself
        devices = cast("DeviceStore", store)
    if devices is None:  # a store the registry never opened: its own tables
        from device_registry.embedded import EmbeddedDevices, Transactions

        devices = EmbeddedDevices(cast(Transactions, store))
    return await devices.owner_of_phone(phone)
