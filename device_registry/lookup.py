"""Who is texting: phone number -> active device -> worker -> places (for the SMS gateway).

A coded SMS is attributed to the worker holding the device whose SIM has the
sender's number.  Only an ``assigned`` device counts: a lost or stolen phone's SIM
must not be able to file reports in its former holder's name.  Such a phone is
still named (``status`` lost or stolen, the worker it was with and their places),
so its messages are flagged to that worker's supervisor and the sender is told
to contact them, rather than that the phone is unknown.

The SMS gateway calls :func:`device_for_phone` with the running app, and the
lookup asks the device port the registry's worker opened (``REGISTRY``) at
the moment a phone is looked up: so no start-up depends on the order the
workers start in, and with CouchDB the gateway finds the phones every instance
shares.
"""

from __future__ import annotations

from aiohttp import web

from device_registry import validators
from device_registry.context import REGISTRY
from device_registry.model import DeviceOwner
from device_registry.status import DeviceStatus
from sync.errors import BadRequest, StoreUnavailable

__all__ = ["GONE", "DeviceOwner", "device_for_phone"]

GONE = (DeviceStatus.LOST.value, DeviceStatus.STOLEN.value)


def number(phone: str) -> str | None:
    """The E.164 number, or None for something that is not one."""
    try:
        return validators.phone(phone)
    except BadRequest:
        return None


async def device_for_phone(app: web.Application, phone: str) -> DeviceOwner | None:
    """The active device with this SIM number and the worker holding it, or None.

    While the registry's worker is not running nobody can be told apart, so the
    lookup fails (the message waits) rather than call the sender unknown."""
    registry = app.get(REGISTRY)
    if registry is None:
        raise StoreUnavailable("the device registry is not open")
    return await registry.devices.owner_of_phone(phone)
