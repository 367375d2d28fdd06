"""The in-memory adapter of the sync-activity port (tests, and a store without SQLite)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sync.activity.ports import DayActivity


class MemoryActivity:
    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str], tuple[int, int]] = {}

    async def add(self, buckets: Sequence[DayActivity]) -> None:
        for b in buckets:
            key = (b.worker, b.day, b.device)
            syncs, docs = self._rows.get(key, (0, 0))
            self._rows[key] = (syncs + b.syncs, docs + b.docs)

    async def days(self, since: str, workers: Collection[str] | None = None) -> list[DayActivity]:
        wanted = None if workers is None else frozenset(workers)
        return [
            DayActivity(worker, device, day, syncs, docs)
            for (worker, day, device), (syncs, docs) in sorted(self._rows.items())
            if day >= since and (wanted is None or worker in wanted)
        ]

    async def totals(self, since: str) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        for (worker, day, _), (syncs, docs) in self._rows.items():
            if day >= since:
                before = found.get(worker, (0, 0))
                found[worker] = (before[0] + syncs, before[1] + docs)
        return found
