"""The guard's refused-attempt counters (the RefusalLimits port) of one process.

Embedded (one server): :class:`LocalRefusalLimits`, the process's
:class:`sync.ratelimit.FailureWindow`.  Several instances share theirs in
CouchDB (:mod:`device_registry.couchdb_limits`).
"""

from __future__ import annotations

from typing import Any

from sync.ratelimit import FailureWindow, Limit, Reservation


class LocalRefusalLimits:
    """This process's counters (the embedded store: one server)."""

    def __init__(self, limits: dict[str, Limit], window: FailureWindow | None = None) -> None:
        self.window = window or FailureWindow(limits)

    @property
    def limits(self) -> dict[str, Any]:
        return self.window.limits

    async def reserve(self, keys: tuple[str, ...]) -> Reservation:
        return self.window.reserve(*keys)

    async def forgive(self, reservation: Reservation) -> None:
        self.window.forgive(reservation)

    async def fail(self, keys: tuple[str, ...]) -> int | None:
        wait = self.window.retry_after(*keys)
        self.window.fail(*keys)
        return wait
