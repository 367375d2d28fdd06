"""The guard's refused-attempt counters (the RefusalLimits port) shared by instances.

:class:`CouchRefusalLimits` keeps the counters in the devices database, one
document per key, exactly as the login limits keep theirs
(:class:`sync.people_store.couchdb_limits.CouchLoginLimits`, whose code it reuses:
``failures:<sha256 of the key>``, written against the ``_rev`` read, 409 read
again, every leaf of a fork counted).  So "10 refusals of one device in 10
minutes" means 10 whichever instances the attempts reach.  Once a key is
limited, this instance remembers until when, so a flood of refused requests
from a limited phone or address costs CouchDB nothing more until it may try
again (a flood must not become CouchDB's load).  One server's counters:
:mod:`device_registry.limits`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

from sync.people_store.couchdb_limits import CouchLoginLimits
from sync.ratelimit import Limit, Limited
from sync.store.couchdb.client import CouchClient
from sync.store.couchdb.once import CreatedOnce

if TYPE_CHECKING:
    from sync.people_store.couchdb import CouchAccounts


class CouchRefusalLimits(CouchLoginLimits):
    """Counters shared by every instance, in ``<prefix>devices`` (see the module)."""

    def __init__(self, client: CouchClient, home: CreatedOnce, limits: dict[str, Limit]) -> None:
        super().__init__(client, cast("CouchAccounts", None), limits)
        self._home = home
        self._limited: dict[str, float] = {}  # key -> (wall clock) until when it is limited

    async def fail(self, keys: tuple[str, ...]) -> int | None:
        """Count a refusal; the wait when a key was already at its limit (then not counted:
        a limited key stays limited until its window slides)."""
        now = self._clock()
        known = [self._limited[k] for k in keys if self._limited.get(k, 0.0) > now]
        if known:
            return max(1, math.ceil(max(known) - now))
        try:
            await self.reserve(keys)
        except Limited as exc:
            await self._remember_limited(keys, now)
            return exc.wait
        return None

    async def _remember_limited(self, keys: tuple[str, ...], now: float) -> None:
        for key in keys:
            wait = await self.retry_after((key,))
            if wait is not None:
                self._limited[key] = now + wait
        if len(self._limited) > 50_000:  # forget those whose time is up
            self._limited = {k: t for k, t in self._limited.items() if t > now}

    async def _db(self) -> str:
        await self._home.ensure()
        return self._home.name
