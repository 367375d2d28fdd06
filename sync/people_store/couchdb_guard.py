"""One change at a time of what the cross-document rules of accounts look at (CouchDB).

Three rules of :mod:`sync.people` look at more than one document:

- the last active admin can be neither disabled nor removed (every admin);
- a place with users assigned, or active places below it, cannot be retired
  (every user, every child), and nobody is assigned to, nor any place put under,
  a retired place;
- a move must not make a loop (every ancestor of the new parent).

Checked on one read and then written, two instances changing *different*
documents at the same moment could each pass (two admins disabling each other;
a place retired while a worker is assigned to it; A moved under B while B is
moved under A).  So every change those rules look at holds the guard while it
reads, checks and writes: one document in ``<prefix>accounts``::

    rules_guard   {"type": "guard", "holder": <random token> | null, "until": <epoch s>}

Taking it is a write against the ``_rev`` read: of two instances taking it at
once, one gets 409, reads again and waits for ``holder`` to be null.  Giving it
back writes ``holder: null``.  An instance that dies holding it blocks such
changes until ``until`` (:data:`LEASE` seconds after it was taken); then any
instance takes it over.  A 202 (fewer than a quorum of copies took the write)
never holds it: a rival may have had its 201 through the other copies, which a
read back need not reach; the write is taken back (``CouchClient.put_alone``) and
the guard read again.  A fork nobody holds keeps one side.

Limits, honestly: the lease trusts the instances' clocks to within a few
seconds, and a holder stalled for longer than :data:`LEASE` (a paused VM) may
finish its write after another instance took the guard over: the guard logs it
(``accounts_guard_lost``), it cannot undo the write.  Changes of users and places
are rare admin work: they queue behind the guard (one per instance polls it,
the others wait in the process) and answer 503 after :data:`WAIT` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import structlog

from sync.errors import Conflict, NotFound, StoreUnavailable
from sync.store.couchdb.client import CouchClient, path

GUARD_DOC = "rules_guard"
LEASE = 30.0  # seconds a holder may keep the guard before another instance takes it over
WAIT = 40.0  # seconds a change waits for the guard before it answers 503
_FIRST_PAUSE, _LONGEST_PAUSE = 0.02, 0.2

log = structlog.get_logger("fieldsync.accounts")


class RulesGuard:
    def __init__(
        self, client: CouchClient, db: str, lease: float = LEASE, wait: float = WAIT
    ) -> None:
        self._client = client
        self._db = db
        self._lease = lease
        self._wait = wait
        self._here = asyncio.Lock()  # this process's changes queue here, not on CouchDB

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold the guard for the ``async with`` (taken over by another after LEASE s)."""
        async with self._here:
            token = await self._take()
            try:
                yield
            finally:  # a request cancelled here still gives it back (not after LEASE s)
                await asyncio.shield(self._give_back(token))

    async def _take(self) -> str:
        deadline = time.monotonic() + self._wait
        pause = _FIRST_PAUSE
        while True:
            leaves = await self._leaves()
            now = time.time()
            if all(_free(leaf, now) for leaf in leaves):
                if len(leaves) > 1:  # a fork nobody holds: keep one side
                    await self._delete(leaves[1:])
                    continue
                token = await self._claim(leaves[0] if leaves else None, now)
                if token is not None:
                    return token
            if time.monotonic() > deadline:
                raise StoreUnavailable(
                    "Another change of users or places has held the accounts guard for "
                    f"{self._wait:.0f} s (an instance busy or gone); try again in a minute."
                )
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, _LONGEST_PAUSE)

    async def _claim(self, leaf: Mapping[str, Any] | None, now: float) -> str | None:
        """Write ourselves in against the ``_rev`` read; the token, or None when another won."""
        token = secrets.token_hex(16)
        body: dict[str, Any] = {
            "_id": GUARD_DOC,
            "type": "guard",
            "holder": token,
            "until": now + self._lease,
        }
        if leaf is not None:
            body["_rev"] = leaf["_rev"]
        # a 202 never holds it: taken back (the rival may have had its 201), read again
        return token if await self._client.put_alone(self._db, body, "holder") else None

    async def _give_back(self, token: str) -> None:
        leaves = await self._leaves()
        mine = [leaf for leaf in leaves if leaf.get("holder") == token]
        if not mine:
            log.error("accounts_guard_lost", lease=self._lease, hint="another instance took it")
            return
        body = {"type": "guard", "holder": None, "until": 0, "_rev": mine[0]["_rev"]}
        with contextlib.suppress(Conflict, NotFound):  # taken over meanwhile: theirs now
            await self._client.put_status(path(self._db, GUARD_DOC), body)

    async def _leaves(self) -> list[dict[str, Any]]:
        found = await self._client.leaves_by_id(self._db, [GUARD_DOC])
        return found.get(GUARD_DOC, [])

    async def _delete(self, leaves: list[dict[str, Any]]) -> None:
        await self._client.delete_leaves(self._db, GUARD_DOC, leaves)


def _free(leaf: Mapping[str, Any], now: float) -> bool:
    """Nobody holds it, or the holder's lease ran out."""
    return leaf.get("holder") is None or float(leaf.get("until", 0)) <= now
