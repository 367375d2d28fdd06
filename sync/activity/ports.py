"""The sync-activity port: how often each worker's devices synced, and what they sent, per day.

    ActivityStore                   the port (a typing.Protocol)
    ├── sync.activity.embedded      SQLite, one row per (worker, device, day)
    ├── sync.activity.couchdb       CouchDB ``<prefix>activity``, one document per instance
    │                               and (worker, device, day), summed on read
    └── sync.activity.memory        a dict, for tests
    (sync.activity.backends picks one from the configuration)

One :class:`DayActivity` is a day bucket: on UTC day ``day`` (``YYYY-MM-DD``), the
device ``device`` (its serial; ``""`` when the request came without one) of
``worker`` started ``syncs`` sync sessions and sent ``docs`` documents that the
server wrote.  What counts as a session is the recorder's (:mod:`sync.activity.recorder`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class DayActivity:
    worker: str
    device: str  # serial, "" when not device-bound
    day: str  # UTC date, YYYY-MM-DD
    syncs: int = 0
    docs: int = 0


class ActivityStore(Protocol):
    async def add(self, buckets: Sequence[DayActivity]) -> None:
        """Add each bucket's counts to what is stored for its (worker, device, day)."""
        ...

    async def days(self, since: str, workers: Collection[str] | None = None) -> list[DayActivity]:
        """The buckets of ``since`` (a UTC date) and later, of ``workers`` (None: everyone's),
        ordered by worker, day and device."""
        ...

    async def totals(self, since: str) -> dict[str, tuple[int, int]]:
        """(syncs, documents) of each worker from ``since`` (a UTC date) on, summed over
        days and devices (workers with nothing since are absent)."""
        ...
