"""The in-memory adapter of the refused-records port (sync.refusals.ports), for tests."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from sync.refusals.ports import Cursor, NewRefusal, Refusal, SealedBody

Key = tuple[str, str, str]  # worker, doc_id, rev


class MemoryRefusals:
    def __init__(self) -> None:
        self._rows: dict[Key, tuple[Refusal, SealedBody | None]] = {}
        self._dropped: dict[str, tuple[int, str]] = {}  # worker -> (count, last_at)
        self._next_id = 1

    async def record(self, refusals: Sequence[NewRefusal], per_worker: int) -> None:
        for new in refusals:
            key = (new.worker, new.doc_id, new.rev)
            found = self._rows.get(key)
            if found is None:
                self._rows[key] = (self._new(new), new.body)
            else:
                kept, body = found
                seen = replace(
                    kept, count=kept.count + new.times, last_at=max(kept.last_at, new.at)
                )
                self._rows[key] = (seen, body)
        for worker in {r.worker for r in refusals}:
            self._cut(worker, per_worker)

    def _new(self, new: NewRefusal) -> Refusal:
        refusal = Refusal(
            new.worker,
            new.device,
            new.doc_id,
            new.rev,
            new.reason,
            new.detail,
            new.at,
            new.at,
            new.times,
            self._next_id,
            new.body_bytes,
        )
        self._next_id += 1
        return refusal

    def _cut(self, worker: str, per_worker: int) -> None:
        mine = sorted(
            (r for r, _ in self._rows.values() if r.worker == worker),
            key=lambda r: (r.last_at, r.id),
            reverse=True,
        )
        for old in mine[per_worker:]:
            del self._rows[(old.worker, old.doc_id, old.rev)]
            count, at = self._dropped.get(worker, (0, old.last_at))
            self._dropped[worker] = (count + 1, max(at, old.last_at))

    async def counts(self, workers: Collection[str]) -> dict[str, int]:
        wanted = set(workers)
        found: dict[str, int] = {}
        for refusal, _ in self._rows.values():
            if refusal.worker in wanted:
                found[refusal.worker] = found.get(refusal.worker, 0) + 1
        for worker, (dropped, _) in self._dropped.items():
            if worker in wanted:
                found[worker] = found.get(worker, 0) + dropped
        return found

    async def for_workers(
        self, workers: Collection[str] | None, limit: int, before: str | None = None
    ) -> Sequence[Refusal]:
        wanted = None if workers is None else set(workers)
        cursor = None if before is None else Cursor.parse(before)
        rows = [
            r
            for r, _ in self._rows.values()
            if (wanted is None or r.worker in wanted)
            and (cursor is None or (r.last_at, r.id) < (cursor.last_at, cursor.id))
        ]
        rows.sort(key=lambda r: (r.last_at, r.id), reverse=True)
        return rows[:limit]

    async def get(self, refusal_id: int) -> tuple[Refusal, SealedBody | None] | None:
        return next((found for found in self._rows.values() if found[0].id == refusal_id), None)

    async def prune(self, older_than: str) -> int:
        old = [key for key, (r, _) in self._rows.items() if r.last_at < older_than]
        for key in old:
            del self._rows[key]
        for worker, (_, at) in list(self._dropped.items()):
            if at < older_than:
                del self._dropped[worker]
        return len(old)
