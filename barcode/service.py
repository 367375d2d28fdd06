"""The barcode service layer: allocation through the port, scans off the event loop, lookups.

Patient lookup follows the convention the SMS registration uses too: a
patient's person document has the id ``person-<patient ID>`` (``person-10000X``)
and a ``name`` field, in the deployment database (``Config.db_name``).  It is
read through the replication reader with the caller's scope, so a patient
outside the caller's document set is indistinguishable from no patient.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from barcode import cards, sheet
from barcode.checkdigit import CheckResult, validate
from barcode.ports import Block, PatientIdStore
from barcode.settings import BarcodeSettings
from barcode.zbar import Zbar, load_zbar
from sync.errors import BadRequest, NotFound
from sync.replication.context import Caller
from sync.replication.reads import Reader, ReadOptions

if TYPE_CHECKING:
    from barcode.decode import Decoded

PERSON_PREFIX = "person-"


def person_doc_id(patient_id: str) -> str:
    return PERSON_PREFIX + patient_id


@dataclass(frozen=True)
class Patient:
    doc_id: str
    name: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.doc_id, "name": self.name}


@dataclass(frozen=True)
class ScanResult:
    check: CheckResult
    symbology: str
    patient: Patient | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.check.id,
            "valid": self.check.valid,
            "reason": self.check.reason,
            "patient": None if self.patient is None else self.patient.to_json(),
            "symbology": self.symbology,
        }


class Patients:
    """Looks patients up by ID within a caller's scope."""

    def __init__(self, reader: Reader, db: str) -> None:
        self._reader = reader
        self._db = db

    async def find(self, caller: Caller, patient_id: str) -> Patient | None:
        try:
            doc = await self._reader.get_doc(
                self._db, caller, person_doc_id(patient_id), None, ReadOptions()
            )
        except NotFound:
            return None
        name = doc.get("name")
        return Patient(str(doc["_id"]), name if isinstance(name, str) else None)


class PatientIds:
    """Allocation through the patient-ID port, in the configured format, within limits."""

    def __init__(self, store: PatientIdStore, settings: BarcodeSettings) -> None:
        self.store = store
        self._settings = settings

    async def allocate(self, count: int, by: str) -> list[str]:
        self._check_batch("count", count)
        return await self.store.allocate(self._settings.id_format, count, by)

    async def reserve_block(self, size: int, device: str, by: str) -> Block:
        self._check_batch("size", size)
        fmt = self._settings.id_format
        try:
            return await self.store.reserve_block(fmt, size, device, by)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc

    async def retire(self, patient_id: str, by: str, reason: str) -> str:
        fmt = self._settings.id_format
        try:
            return await self.store.retire(fmt, patient_id, by, reason)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc

    def _check_batch(self, field: str, value: int) -> None:
        if not 1 <= value <= self._settings.max_batch:
            raise BadRequest(f"{field} must be between 1 and {self._settings.max_batch}")


class Scanner:
    """Decodes photos on its own threads (OpenCV and zbar release the GIL).

    OpenCV and numpy are imported by the first scan, on those threads: they are a
    third of what a ``fieldsync`` process loads, and no command and no other route
    needs them.
    """

    def __init__(self, settings: BarcodeSettings) -> None:
        self._settings = settings
        self._executor = ThreadPoolExecutor(settings.decode_workers, "barcode-decode")
        self._zbar: Zbar | None = None

    async def decode(self, data: bytes) -> Decoded:
        """The ID in the photo ``data`` (errors: barcode.errors)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._decode, data)

    async def available(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._load)
        except Exception:
            return False
        return True

    def _load(self) -> Zbar:
        # pyzbar's import probes for the library (ldconfig), so it runs here, not on the loop.
        if self._zbar is None:
            self._zbar = load_zbar()
        return self._zbar

    def _decode(self, data: bytes) -> Decoded:
        from barcode.decode import decode_photo  # the image stack, at the first scan
        from barcode.images import Limits

        settings = self._settings
        limits = Limits(settings.max_image_bytes, settings.max_image_pixels)
        return decode_photo(data, limits, settings.scheme, self._load(), settings.decode_seconds)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


async def scan(scanner: Scanner, patients: Patients, caller: Caller, data: bytes) -> ScanResult:
    """Decode the photo, then look the patient up only if the check digit holds."""
    decoded = await scanner.decode(data)
    patient = await patients.find(caller, decoded.check.id) if decoded.check.valid else None
    return ScanResult(decoded.check, decoded.symbology, patient)


async def card_layouts(
    patients: Patients, caller: Caller, ids: Sequence[str], settings: BarcodeSettings
) -> list[cards.CardLayout]:
    """Cards for ``ids``, with the name of each patient the caller may see (else a blank)."""
    layouts = []
    for raw in ids:
        check = validate(raw, settings.scheme)
        if not check.valid:
            raise BadRequest(f"{raw!r} is not a patient ID: {check.reason}")
        patient = await patients.find(caller, check.id)
        layouts.append(cards.layout(check.id, patient.name if patient else None))
    return layouts


async def render_sheet(layouts: Sequence[cards.CardLayout]) -> bytes:
    return await asyncio.to_thread(sheet.render_pdf, layouts)
