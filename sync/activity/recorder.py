"""Counting sync sessions and received documents in memory, written every few seconds.

What is counted (per worker, device and UTC day):

- a **sync** is one replication *session*: the first request of a device on the
  replication surface (``/{db}...``) after at least :data:`SESSION_GAP` seconds of
  silence, or the first on a new UTC day.  One PouchDB ``sync()`` makes dozens of
  requests (db info, checkpoints, ``_changes``, ``_revs_diff``, ``_bulk_docs``) in
  both directions: together they are one sync.  A live (continuous) sync keeps
  its session open, so it counts once a day.
- **documents received** are the documents the server wrote for the device through
  ``_bulk_docs``, ``PUT``/``POST``/``DELETE`` of a document or an attachment
  (refused ones and ``_local`` checkpoints are not counted).

A request costs a few dictionary operations, never a write: the counts gather in
memory and :meth:`ActivityRecorder.flush` adds them to the store (one upsert per
bucket) every :data:`FLUSH_EVERY` seconds and when the server stops cleanly.  A
failed write keeps the counts for the next flush.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import OrderedDict
from collections.abc import Callable

import structlog

from sync.activity.ports import ActivityStore, DayActivity

SESSION_GAP = 300.0
FLUSH_EVERY = 5.0
_MAX_DEVICES = 100_000  # sessions remembered; the oldest is forgotten beyond this
log = structlog.get_logger("fieldsync.activity")


def utc_day() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


class ActivityRecorder:
    def __init__(
        self,
        store: ActivityStore,
        session_gap: float = SESSION_GAP,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], str] = utc_day,
    ) -> None:
        self.store = store
        self._gap = session_gap
        self._clock = clock
        self._today = today
        self._heard: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()
        self._pending: dict[tuple[str, str, str], list[int]] = {}
        self._lock = asyncio.Lock()

    def heard(self, worker: str, device: str | None) -> None:
        """A replication request from ``worker``'s ``device``: a new session starts a sync."""
        key = (worker, device or "")
        moment, day = self._clock(), self._today()
        last = self._heard.get(key)
        self._heard[key] = (moment, day)
        self._heard.move_to_end(key)
        if len(self._heard) > _MAX_DEVICES:
            self._heard.popitem(last=False)
        if last is None or moment - last[0] >= self._gap or last[1] != day:
            self._bucket(key, day)[0] += 1

    def received(self, worker: str, device: str | None, count: int) -> None:
        """``count`` documents from ``worker``'s ``device`` were written."""
        if count > 0:
            self._bucket((worker, device or ""), self._today())[1] += count

    def _bucket(self, key: tuple[str, str], day: str) -> list[int]:
        return self._pending.setdefault((key[0], key[1], day), [0, 0])

    @property
    def pending(self) -> int:
        """Buckets counted in memory and not yet written."""
        return len(self._pending)

    async def flush(self) -> None:
        """Add what was counted so far to the store (kept for the next flush if it fails)."""
        async with self._lock:
            taken, self._pending = self._pending, {}
            if not taken:
                return
            buckets = [DayActivity(w, d, day, c[0], c[1]) for (w, d, day), c in taken.items()]
            try:
                await self.store.add(buckets)
            except Exception:
                log.exception("activity_write_failed", buckets=len(buckets))
                for key, counts in taken.items():
                    again = self._pending.setdefault(key, [0, 0])
                    again[0] += counts[0]
                    again[1] += counts[1]
                raise

    async def run(self, every: float | None = None) -> None:
        """Flush every ``every`` seconds (:data:`FLUSH_EVERY`) until cancelled; a failed
        flush is logged and retried on the next turn."""
        while True:
            await asyncio.sleep(FLUSH_EVERY if every is None else every)
            try:
                await self.flush()
            except Exception:
                continue  # logged by flush; the counts wait for the next turn
