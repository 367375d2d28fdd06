"""The in-memory adapter of the patient-ID port (barcode.ports), for tests.

Each call runs without awaiting anything, so on one event loop it is atomic:
the same guarantees as the other adapters, for as long as the process lives.
"""

from __future__ import annotations

from dataclasses import dataclass

from barcode.embedded import now
from barcode.ids import IdFormat
from barcode.ports import Block, Status, check_count, check_device, normalised


@dataclass
class _Record:
    status: Status
    by: str
    block: int | None = None


class MemoryPatientIds:
    def __init__(self) -> None:
        self._next: dict[str, int] = {}  # scheme -> next sequence number
        self._records: dict[str, _Record] = {}
        self._blocks: list[Block] = []

    async def allocate(self, fmt: IdFormat, count: int, by: str) -> list[str]:
        check_count("count", count)
        return self._take(fmt, count, by, Status.ISSUED, None)

    async def reserve_block(self, fmt: IdFormat, size: int, device: str, by: str) -> Block:
        check_count("size", size)
        check_device(device)
        block_id = len(self._blocks) + 1
        ids = self._take(fmt, size, by, Status.RESERVED, block_id)
        block = Block(block_id, device, by, now(), tuple(ids))
        self._blocks.append(block)
        return block

    async def blocks_of(self, device: str) -> list[Block]:
        return [b for b in self._blocks if b.device == device]

    async def retire(self, fmt: IdFormat, patient_id: str, by: str, reason: str) -> str:
        patient_id = normalised(fmt, patient_id)
        record = self._records.setdefault(patient_id, _Record(Status.RETIRED, by))
        record.status = Status.RETIRED
        return patient_id

    async def status_of(self, patient_id: str) -> Status | None:
        record = self._records.get(patient_id)
        return None if record is None else record.status

    def _take(
        self, fmt: IdFormat, count: int, by: str, status: Status, block: int | None
    ) -> list[str]:
        number = max(self._next.get(fmt.scheme.value, 0), fmt.first_number)
        ids: list[str] = []
        while len(ids) < count:
            candidate = fmt.id_for(number)
            number += 1
            if candidate not in self._records:  # retired before it was reached: skipped
                self._records[candidate] = _Record(status, by, block)
                ids.append(candidate)
        self._next[fmt.scheme.value] = number
        return ids
