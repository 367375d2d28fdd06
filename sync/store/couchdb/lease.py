"""Leases in CouchDB: one holder at a time for a piece of work, across every instance.

Two shapes of the same idea, both written against CouchDB's ``_rev`` (optimistic
concurrency), both safe on a cluster:

- :func:`claim_write` writes a document that claims something (an SMS message,
  a lease) and says whether *this* write is the one that holds: only a 201
  (``CouchClient.put_alone``); 409 means a rival changed it first, and a 202 (fewer
  than a quorum of copies took it: a rival may hold the others) is taken back.
- :class:`Lease` is a named lease, one document in ``<prefix>leases``::

      lease:<name>   {"type": "lease", "owner", "until" (UTC ISO 8601), "what",
                      "taken" (when this owner took it), "claim" (token)}

  Anyone may take it when it is absent, released (``owner`` null) or expired
  (``until`` passed: its holder died or hung); its holder takes it again to
  renew it.  A holder that finds another owner has lost it and must stop.
  Expiry compares clocks of different machines: keep them in NTP sync, and the
  lease long compared with any drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sync.errors import FieldsyncError, StoreUnavailable
from sync.store.couchdb.client import CouchClient
from sync.store.couchdb.once import CreatedOnce

DB_NAME = "leases"  # after the deployment's prefix
PREFIX = "lease:"
_TRIES = 5
_FORK_READS, _FORK_WAIT = 5, 0.05  # seconds between reads of a forked lease
Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_owner() -> str:
    """Who holds a lease: this machine and process, and a random tail (a restart is another)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def claim_write(client: CouchClient, couch_db: str, body: dict[str, Any]) -> bool:
    """Write ``body`` (with its ``_rev``, if any, and a fresh ``claim`` token) and say
    whether this write is the one that holds."""
    return await client.put_alone(couch_db, body, "claim")  # 409 or 202: not ours


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, until when, doing what."""

    owner: str
    until: dt.datetime
    what: str

    def describe(self) -> str:
        return f"{self.owner} ({self.what}) until {self.until.isoformat(timespec='seconds')}"


class LeaseTaken(FieldsyncError):
    """Another instance or operator holds the lease."""

    status = 409
    error = "lease_taken"
    default_reason = "Another instance holds this work's lease."


class Lease:
    """The lease ``name`` in ``<prefix>leases``, for ``owner``, ``seconds`` long each time taken."""

    def __init__(
        self,
        client: CouchClient,
        prefix: str,
        name: str,
        owner: str,
        seconds: float,
        what: str = "",
        clock: Clock = utcnow,
    ) -> None:
        self.client, self.name, self.owner = client, name, owner
        self.seconds, self.what, self.clock = seconds, what, clock
        self.db = prefix + DB_NAME
        self.lost = False  # set when a renewal finds another owner
        self._home = CreatedOnce(client, self.db)

    @property
    def doc_id(self) -> str:
        return PREFIX + self.name

    async def take(self) -> Holder | None:
        """Take (or renew) the lease: None if it is ours now, else who holds it."""
        await self._home.ensure()
        for _ in range(_TRIES):
            current = await self._settled()
            now = self.clock()
            holder = _holder(current)
            if _live_rival(holder, self.owner, now):
                return holder
            body = self._body(current, now)
            if await claim_write(self.client, self.db, body):
                return None
        raise StoreUnavailable(f"Could not take the lease {self.name}: too many rival writes.")

    async def _settled(self) -> dict[str, Any] | None:
        """The lease document's winner, read again while it is forked: a fork is most often
        a 202 being taken back (``CouchClient.put_alone``), whose writer holds nothing, so
        naming it as the holder would be wrong.  A fork that stays (its writer died before
        taking it back) is read as it is after a few tries."""
        for attempt in range(_FORK_READS):
            found = await self.client.leaves_by_id(self.db, [self.doc_id])
            leaves = found.get(self.doc_id, [])
            if len(leaves) <= 1 or attempt == _FORK_READS - 1:
                return leaves[0] if leaves else None
            await asyncio.sleep(_FORK_WAIT)
        return None

    def _body(self, current: dict[str, Any] | None, now: dt.datetime) -> dict[str, Any]:
        mine = current is not None and current.get("owner") == self.owner
        body: dict[str, Any] = {
            "_id": self.doc_id,
            "type": "lease",
            "owner": self.owner,
            "what": self.what,
            "until": (now + dt.timedelta(seconds=self.seconds)).isoformat(),
            "taken": current["taken"] if mine and current else now.isoformat(),
            "claim": uuid.uuid4().hex,
        }
        if current is not None:
            body["_rev"] = current["_rev"]
        return body

    async def release(self) -> None:
        """Give the lease up now (if it is still ours), so the next taker need not wait."""
        for _ in range(_TRIES):
            found = await self.client.leaves_by_id(self.db, [self.doc_id])
            current = found.get(self.doc_id, [None])[0]
            if current is None or current.get("owner") != self.owner:
                return
            body = {**current, "owner": None, "until": self.clock().isoformat()}
            body["claim"] = uuid.uuid4().hex
            if await claim_write(self.client, self.db, body):
                return

    async def held(self) -> Holder | None:
        """The lease's live holder, whoever it is (None: free)."""
        await self._home.ensure()
        found = await self.client.leaves_by_id(self.db, [self.doc_id])
        holder = _holder(found.get(self.doc_id, [None])[0])
        return holder if holder is not None and holder.until > self.clock() else None


def _live_rival(holder: Holder | None, owner: str, now: dt.datetime) -> bool:
    return (
        holder is not None
        and holder.owner != owner
        and holder.until > now
        and not _gone_here(holder.owner)
    )


def _gone_here(owner: str) -> bool:
    """Was the lease taken by a process of this machine that is no longer running (a command
    killed with ``kill -9``)?  Then it is taken over at once, not after its expiry."""
    host, _, rest = owner.rpartition("-")[0].rpartition("-")
    if host != socket.gethostname() or not rest.isdigit():
        return False
    try:
        os.kill(int(rest), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # running, as another user
    return False


def _holder(doc: dict[str, Any] | None) -> Holder | None:
    if doc is None or not doc.get("owner"):
        return None
    until = dt.datetime.fromisoformat(str(doc["until"]))
    return Holder(str(doc["owner"]), until, str(doc.get("what", "")))


@contextlib.asynccontextmanager
async def holding(lease: Lease, refused: str) -> AsyncIterator[Lease]:
    """Hold ``lease`` for the ``async with``, renewed every third of its length.

    ``refused`` starts the error when another holds it (the holder is named after
    it).  If a renewal finds the lease taken by another (this process stalled past
    the expiry), ``lease.lost`` turns true: the work must check it and stop.
    """
    holder = await lease.take()
    if holder is not None:
        raise LeaseTaken(f"{refused}: the lease {lease.name} is held by {holder.describe()}")
    renewer = asyncio.create_task(_renew(lease))
    try:
        yield lease
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        if not lease.lost:
            with contextlib.suppress(FieldsyncError):  # it runs out by itself otherwise
                await lease.release()


async def _renew(lease: Lease) -> None:
    while not lease.lost:
        await asyncio.sleep(lease.seconds / 3)
        try:
            holder = await lease.take()
        except FieldsyncError:
            continue  # CouchDB away a moment: the lease still runs, try again
        if holder is not None:
            lease.lost = True


async def once_per_tick(lease: Lease) -> bool:
    """For work every instance ticks for but one must do: True if this instance holds the
    lease (taken or renewed now) and does this tick's work; the others skip it.

    The holder keeps it by renewing at each of its ticks; if it dies, the lease runs
    out (``lease.seconds``) and the next instance to tick takes the work over.
    """
    try:
        return await lease.take() is None
    except FieldsyncError:
        return False  # CouchDB away: nobody can be sure of holding it, so nobody works
