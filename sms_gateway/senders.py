"""Who sent a message: phone → device → worker → place, from the device registry.

The registry's contract is ``device_registry.lookup.device_for_phone(app,
phone) -> DeviceOwner | None`` (a frozen dataclass with the device serial,
the worker's name and place(s), and the device's ``status``: ``assigned``, or
``lost``/``stolen`` for a phone reported gone, whose messages are flagged and
never recorded); :class:`Sender` is what the SMS gateway needs of it.  The
service takes any :data:`SenderLookup`, so tests can stand in for the registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web


@dataclass(frozen=True)
class Sender:
    worker: str
    device: str | None
    places: tuple[str, ...]
    gone: str | None = None  # "lost" or "stolen": the phone was reported so; nothing is recorded


GONE = ("lost", "stolen")


SenderLookup = Callable[[str], Awaitable[Sender | None]]


def sender_of(owner: Any) -> Sender:
    """A registry DeviceOwner as a :class:`Sender` (the field names are the registry's)."""
    places = getattr(owner, "places", None)
    if places is None:
        place = getattr(owner, "place", None)
        places = () if place is None else (place,)
    elif isinstance(places, str):
        places = (places,)
    device = getattr(owner, "serial", None) or getattr(owner, "device", None)
    worker = getattr(owner, "worker", None) or getattr(owner, "worker_name", None)
    status = getattr(owner, "status", None)
    gone = status if status in GONE else None
    return Sender(str(worker), None if device is None else str(device), tuple(places), gone)


def registry_lookup(app: web.Application) -> SenderLookup:
    """The device registry's phone lookup; a lookup that knows nobody until it exists.

    ``app`` is the running server: the SMS gateway only passes it on, and the registry
    finds its device port there when a phone is looked up (it owns its storage)."""
    try:
        module = importlib.import_module("device_registry.lookup")
    except ImportError:
        module = None
    device_for_phone = getattr(module, "device_for_phone", None)

    async def lookup(phone: str) -> Sender | None:
        if device_for_phone is None:
            return None
        owner = await device_for_phone(app, phone)
        return None if owner is None or not getattr(owner, "worker", True) else sender_of(owner)

    return lookup
