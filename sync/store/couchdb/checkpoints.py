"""Checkpoints of a phone catching up, written to CouchDB a moment later.

PouchDB saves its replication checkpoint (``PUT /{db}/_local/{id}``) after every
batch it takes: a first pull of 10,000 documents saves it 100 times, each a
CouchDB write.  While the changes feed tells that more pages are coming for
that owner (:meth:`LaterSaves.expect_more`, set by a full ``_changes`` page and
cleared by one that reached the end), a save is answered from this instance's
memory (the next read here gives it back, as for any save) and written to
CouchDB at most ``delay`` seconds later, the newest of that moment.  A save
made once the feed has nothing more (the last of a pull, every save of a push
or a live sync) is written before it is answered, as before, and carries every
save held for that checkpoint.

Why this loses nothing: a checkpoint only says where a replication resumes.
One not written yet when the phone turns to another instance, or lost with an
instance killed mid-pull, leaves CouchDB's previous checkpoint: the phone
resumes from there and is sent again what it already has; no change is
skipped.  A write that meets a newer save from elsewhere (CouchDB's 409) is
dropped, and this instance forgets what it held for that checkpoint, so the
phone's next save here is refused (409) and PouchDB reads CouchDB's.  While
CouchDB is away the write is tried again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from sync.errors import FieldsyncError

log = structlog.get_logger("fieldsync.store")

Key = tuple[str, str, str]  # (db, owner, checkpoint id)
CATCHING_UP_SECONDS = 30.0  # a hint older than this is ignored (a pull abandoned mid-way)
_OWNERS_KEPT = 10_000


@dataclass
class Unsaved:
    since: float  # when the oldest save not in CouchDB was answered
    rev: str  # the newest save's revision, as the phone knows it
    body: bytes


class LaterSaves:
    def __init__(
        self,
        write: Callable[[Key, Unsaved], Awaitable[None]],
        delay: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write  # one held save into CouchDB; raises what CouchDB answered
        self.delay = delay
        self._clock = clock
        self._catching: dict[tuple[str, str], float] = {}
        self.unsaved: dict[Key, Unsaved] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._writer: asyncio.Task[None] | None = None

    # -- the hint ----------------------------------------------------------------------
    def expect_more(self, db: str, owner: str, more: bool) -> None:
        """The changes feed just answered ``owner`` on ``db``: a full page (``more``) or
        the end of what there is."""
        if not more:
            self._catching.pop((db, owner), None)
            return
        if len(self._catching) >= _OWNERS_KEPT:
            self._catching.clear()
        self._catching[(db, owner)] = self._clock()

    def may_hold(self, db: str, owner: str) -> bool:
        at = self._catching.get((db, owner))
        return at is not None and self._clock() - at < CATCHING_UP_SECONDS

    # -- saves -------------------------------------------------------------------------
    def lock(self, key: Key) -> asyncio.Lock:
        """The one way to write ``key`` to CouchDB at a time (held saves and direct ones)."""
        found = self._locks.get(key)
        if found is None:
            if len(self._locks) >= _OWNERS_KEPT:
                for old in [k for k, one in self._locks.items() if not one.locked()]:
                    del self._locks[old]
            found = self._locks[key] = asyncio.Lock()
        return found

    def hold(self, key: Key, rev: str, body: bytes) -> None:
        """Answer a save now, write it within ``delay``."""
        held = self.unsaved.get(key)
        self.unsaved[key] = Unsaved(self._clock() if held is None else held.since, rev, body)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_when_due())

    def take(self, key: Key) -> Unsaved | None:
        """A direct save of ``key`` carries the newest: what was held is no longer due."""
        return self.unsaved.pop(key, None)

    def forget_db(self, db: str) -> None:
        for key in [k for k in self.unsaved if k[0] == db]:
            del self.unsaved[key]
        for owner in [k for k in self._catching if k[0] == db]:
            del self._catching[owner]

    async def _write_when_due(self) -> None:
        while self.unsaved:
            first = min(held.since for held in self.unsaved.values())
            await asyncio.sleep(max(0.0, first + self.delay - self._clock()))
            now = self._clock()
            for key in [k for k, held in self.unsaved.items() if now - held.since >= self.delay]:
                await self._write_held(key)

    async def _write_held(self, key: Key) -> None:
        async with self.lock(key):
            held = self.unsaved.pop(key, None)
            if held is None:
                return
            try:
                await self._write(key, held)
            except FieldsyncError as exc:  # CouchDB away: try again later
                log.warning("checkpoint_write_later", db=key[0], reason=exc.reason)
                if key not in self.unsaved:  # unless a newer save was held meanwhile
                    self.unsaved[key] = Unsaved(self._clock(), held.rev, held.body)

    async def flush(self) -> None:
        """Write everything held now (the server stops)."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        for key in list(self.unsaved):
            with contextlib.suppress(FieldsyncError):
                await self._write_held(key)
