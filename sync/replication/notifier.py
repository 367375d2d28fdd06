"""Waking long-polling ``_changes`` requests when what they read changes.

A waiter names the places it reads (``None``: every place, an admin's feed);
a write names the places it changed.  Only the waiters of those places wake,
so a write costs the requests that can see it, not every open long poll: on
CouchDB each woken request reads its places' logs again, and an instance
holding thousands of live phones would otherwise read every one of their
scopes for every write anywhere (ADR 0001, *Long polls*).

A notification that cannot name its places (``places=None``: a database
deleted, a watcher that saw more changes than it lists) wakes every waiter of
the database, and :meth:`Notifier.wake_all` (a user or place changed: each
waiter checks its caller again) every waiter of every database.

A database is *announced* while something reports every write to it, whoever
made it: on CouchDB, the watcher of the deployment's database, from its first
answer on (:meth:`Notifier.announcing`).  A waiter whose read began after that
need not read again at a heartbeat when nothing woke it (ADR 0001, *Long
polls*).  The embedded store is never announced: a management command writes
into its file without telling the server, and only a read sees that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

_EVERY_PLACE = None  # the bucket of waiters that read every place


class Notifier:
    """Long polls wait on :meth:`watch`; writes call :meth:`notify`.

    :meth:`close` (server shutdown) wakes every waiter for good, so open
    long-polls answer at once instead of holding the shutdown up.
    """

    def __init__(self) -> None:
        # database -> place (None: waiters of every place) -> events of the waiters
        self._waiting: dict[str, dict[str | None, set[asyncio.Event]]] = {}
        # database -> since when (event loop time) every write to it is announced here
        self._announced: dict[str, float] = {}
        self.closed = False

    @contextmanager
    def watch(self, db: str, places: Iterable[str] | None) -> Iterator[asyncio.Event]:
        """An event set by the next write to ``db`` in one of ``places`` (None: any).

        Enter it before reading what the write would change, so that a write made
        between the read and the wait still wakes it."""
        woken = asyncio.Event()
        if self.closed:
            woken.set()
            yield woken
            return
        keys: list[str | None] = [_EVERY_PLACE] if places is None else list(dict.fromkeys(places))
        buckets = self._waiting.setdefault(db, {})
        for key in keys:
            buckets.setdefault(key, set()).add(woken)
        try:
            yield woken
        finally:
            self._forget(db, keys, woken)

    def _forget(self, db: str, keys: list[str | None], woken: asyncio.Event) -> None:
        buckets = self._waiting.get(db)
        if buckets is None:
            return
        for key in keys:
            bucket = buckets.get(key)
            if bucket is not None:
                bucket.discard(woken)
                if not bucket:
                    del buckets[key]
        if not buckets:
            del self._waiting[db]

    def notify(self, db: str, places: Iterable[str] | None = None) -> None:
        """``db`` changed in ``places`` (None: somewhere, or everywhere)."""
        buckets = self._waiting.get(db)
        if not buckets:
            return
        if places is None:
            keys: list[str | None] = list(buckets)
        else:
            keys = [_EVERY_PLACE, *places]
        for key in keys:
            for event in buckets.get(key, ()):
                event.set()

    def announcing(self, db: str, since: float) -> None:
        """Every write to ``db`` after ``since`` (event loop time) is notified here."""
        self._announced.setdefault(db, since)

    def unannounced(self, db: str) -> None:
        """Writes to ``db`` may go unnotified for a while (its watcher failed, or starts
        again from now): every waiter reads again, and at every heartbeat until announced."""
        if self._announced.pop(db, None) is not None:
            self.notify(db)

    def announced(self, db: str, read_at: float) -> bool:
        """Was every write to ``db`` after a read begun at ``read_at`` notified here?"""
        since = self._announced.get(db)
        return since is not None and since <= read_at

    def waiting(self, db: str) -> int:
        """How many long polls wait on ``db`` now (each counted once)."""
        return len({e for bucket in self._waiting.get(db, {}).values() for e in bucket})

    def wake_all(self) -> None:
        """Wake every waiter once: who may see what changed, so each checks its caller again."""
        for db in list(self._waiting):
            self.notify(db)

    def close(self) -> None:
        self.closed = True
        self.wake_all()
