"""Login-guessing limits of one server (the LoginLimits port): this process's window.

Embedded (one server): :class:`LocalLoginLimits`, the process's
:class:`sync.ratelimit.FailureWindow`; reserving is synchronous on the event loop.
Several instances share their counters in CouchDB instead
(:class:`sync.people_store.couchdb_limits.CouchLoginLimits`).
"""

from __future__ import annotations

from sync.ratelimit import FailureWindow, Limit, Reservation


class LocalLoginLimits:
    """One process's counters (the embedded store: one server)."""

    def __init__(self, limits: dict[str, Limit]) -> None:
        self.window = FailureWindow(limits)

    async def reserve(self, keys: tuple[str, ...]) -> Reservation:
        return self.window.reserve(*keys)

    async def forgive(self, reservation: Reservation) -> None:
        self.window.forgive(reservation)

    async def retry_after(self, keys: tuple[str, ...]) -> int | None:
        return self.window.retry_after(*keys)
