"""Login-guessing limits shared by every instance, in CouchDB (the LoginLimits port).

:class:`CouchLoginLimits` keeps the counters themselves in CouchDB, so the limit
is the configured total across every instance (10 wrong passwords per name in 5
minutes means 10, whichever instances the guesses reach), rather
than a per-instance share, which would need to know how many instances run and
would block a worker sooner the more instances there are.
One document per key, ``failures:<sha256 of the key>`` in ``<prefix>accounts``::

    {"type": "failures", "key": "user:NAME" (cut to 200 characters), "times": [[at, token], ...]}

``at`` is wall-clock seconds (instances share no monotonic clock).  A
reservation reads the document, drops what slid out of the window, refuses at
the limit, and otherwise writes itself in against the ``_rev`` it read: two
instances reserving at once cannot both write the same ``_rev`` (409: the loser
reads again and counts the winner's failure), so parallel guesses spread over
any number of instances never pass the limit.  A 202 (fewer than a quorum of
copies took the write: a rival may have counted from the same revision on the
others) is taken back and read again, like a 409 (``CouchClient.put_alone``); a
fork left all the same (a writer that died) only ever counts more, since reads
count the failures of every live leaf.  Forgiving removes the reservation's own
entry (its random token), retried on 409.  One server on the embedded store
counts in its own process instead (:mod:`sync.people_store.limits`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sync.errors import Conflict, NotFound, StoreUnavailable
from sync.people_store.couchdb import CouchAccounts
from sync.ratelimit import Limit, Limited, Reservation
from sync.store.couchdb.client import CouchClient, path

_TRIES = 50
KEY_SHOWN = 200  # characters of a key kept in its document, for whoever reads it


class CouchLoginLimits:
    """Counters shared by every instance, in the accounts database (see the module)."""

    def __init__(
        self,
        client: CouchClient,
        accounts: CouchAccounts,
        limits: dict[str, Limit],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._accounts = accounts
        self.limits = limits
        self._clock = clock

    async def reserve(self, keys: tuple[str, ...]) -> Reservation:
        wait = await self.retry_after(keys)
        if wait is not None:
            raise Limited(wait)
        at = self._clock()
        token = secrets.token_hex(8)
        counted: list[str] = []
        try:
            for key in keys:
                await self._add(key, at, token)
                counted.append(key)
        except Limited:  # a rival filled a later key meanwhile: take back the earlier ones
            for key in counted:
                await self._remove(key, token)
            raise
        return Reservation(tuple(f"{key}\x00{token}" for key in keys), at)

    async def forgive(self, reservation: Reservation) -> None:
        for marked in reservation.keys:
            key, _, token = marked.partition("\x00")
            await self._remove(key, token)

    async def retry_after(self, keys: tuple[str, ...]) -> int | None:
        now = self._clock()
        found = await self._client.leaves_by_id(await self._db(), [_doc_id(k) for k in keys])
        waits = []
        for key in keys:
            limit = self._limit(key)
            wait = _wait(_times(found.get(_doc_id(key), []), now - limit.window), limit, now)
            if wait is not None:
                waits.append(wait)
        return max(waits) if waits else None

    async def _add(self, key: str, at: float, token: str) -> None:
        """Write one failure in; at the limit already (a rival got there first): Limited."""
        limit = self._limit(key)
        for _ in range(_TRIES):
            leaves = await self._leaves(key)
            entries = _entries(leaves, at - limit.window)
            wait = _wait([e[0] for e in entries], limit, at)
            if wait is not None:
                raise Limited(wait)
            body: dict[str, Any] = {"_id": _doc_id(key), "type": "failures", "key": _shown(key)}
            body["times"] = [*entries, [at, token]]
            if leaves:
                body["_rev"] = leaves[0]["_rev"]
            if not await self._written(body):
                continue  # another attempt was counted first (or may have been): read again
            await self._drop_forks(key, leaves[1:])
            return
        raise StoreUnavailable("Could not count a login attempt; try again shortly.")

    async def _remove(self, key: str, token: str) -> None:
        for _ in range(_TRIES):
            leaves = await self._leaves(key)
            entries = _entries(leaves, self._clock() - self._limit(key).window)
            kept = [e for e in entries if e[1] != token]
            if not leaves or len(kept) == len(entries):
                return
            body = {
                "_id": _doc_id(key),
                "_rev": leaves[0]["_rev"],
                "type": "failures",
                "key": _shown(key),
                "times": kept,
            }
            if not await self._written(body):
                continue
            await self._drop_forks(key, leaves[1:])
            return

    async def _written(self, body: dict[str, Any]) -> bool:
        """Whether this write of the counter stands: a 409 or a 202 does not (a rival may
        have counted from the same revision: ``CouchClient.put_alone``)."""
        marked = {**body, "write": secrets.token_hex(8)}
        return await self._client.put_alone(await self._db(), marked, "write")

    async def _drop_forks(self, key: str, losers: Sequence[Mapping[str, Any]]) -> None:
        """The other leaves' failures were merged into our write: delete those leaves."""
        for leaf in losers:
            with contextlib.suppress(Conflict, NotFound):
                await self._client.json(
                    "DELETE",
                    path(await self._db(), _doc_id(key)),
                    params={"rev": str(leaf["_rev"])},
                )

    async def _leaves(self, key: str) -> list[dict[str, Any]]:
        found = await self._client.leaves_by_id(await self._db(), [_doc_id(key)])
        return found.get(_doc_id(key), [])

    async def _db(self) -> str:
        return await self._accounts.database()

    def _limit(self, key: str) -> Limit:
        return self.limits[key.split(":", 1)[0]]


def _doc_id(key: str) -> str:
    """The key's document: named by a digest, so a claimed name of any length or
    spelling (the caller's text) makes a short, plain document id."""
    return "failures:" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def _shown(key: str) -> str:
    """A key as kept in its document: valid UTF-8, cut short."""
    return key.encode("utf-8", "replace").decode("utf-8")[:KEY_SHOWN]


def _entries(leaves: Sequence[Mapping[str, Any]], horizon: float) -> list[list[Any]]:
    """The failures of every live leaf after ``horizon`` (a fork counts both sides)."""
    seen: dict[str, list[Any]] = {}
    for leaf in leaves:
        for at, token in leaf.get("times", []):
            if float(at) > horizon:
                seen[str(token)] = [float(at), str(token)]
    return sorted(seen.values())


def _times(leaves: Sequence[Mapping[str, Any]], horizon: float) -> list[float]:
    return [entry[0] for entry in _entries(leaves, horizon)]


def _wait(times: Sequence[float], limit: Limit, now: float) -> int | None:
    """Seconds until a key with failures at ``times`` may fail again; None if not limited."""
    if len(times) < limit.failures:
        return None
    return max(1, math.ceil(sorted(times)[-limit.failures] + limit.window - now))
