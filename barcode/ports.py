"""The patient-ID port: what the barcode package needs from storage, in its own words.

    PatientIdStore                  the port (a typing.Protocol)
    ├── barcode.embedded            SQLite, inside the server's single writer
    ├── barcode.couchdb             CouchDB / Cloudant, safe with many instances
    └── barcode.memory              a dict, for tests

Whichever adapter runs, these hold (tests/barcode/test_patient_id_store_contract.py
checks each of them against every adapter):

- **Unique.**  No ID is ever handed out twice, by :meth:`allocate` or inside a
  block, however many callers (or server instances sharing the adapter's
  storage) ask at the same time.
- **Never reused.**  A retired ID is never handed out again, nor is an ID
  that was retired before it was ever handed out.  Sequence numbers may be
  skipped (a crash, a lost race): a gap costs nothing, a duplicate would put
  two patients on one card.
- **Recorded before returned.**  An ID is returned only once its record
  (issued or reserved, who asked and when) is stored.

IDs are spelt by :class:`barcode.ids.IdFormat`; the adapters only choose which
sequence numbers to spell.  Errors: ``ValueError`` for bad input (a count below
1, an ID whose check digit fails, an empty device), the server's
:mod:`sync.errors` when the storage fails.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from barcode.checkdigit import validate
from barcode.ids import IdFormat


class Status(enum.Enum):
    ISSUED = "issued"  # handed out online (API, CLI, SMS registration)
    RESERVED = "reserved"  # in a device's block, handed out on the device
    RETIRED = "retired"  # never to be handed out again


@dataclass(frozen=True)
class Block:
    """IDs reserved for one device to hand out offline."""

    id: int
    device: str
    requested_by: str
    created: str  # UTC ISO 8601, seconds
    ids: tuple[str, ...]


class PatientIdStore(Protocol):
    async def allocate(self, fmt: IdFormat, count: int, by: str) -> list[str]:
        """``count`` (at least 1) new IDs, recorded as issued to ``by``, never given before."""
        ...

    async def reserve_block(self, fmt: IdFormat, size: int, device: str, by: str) -> Block:
        """A block of ``size`` new IDs recorded as reserved for ``device`` (asked by ``by``)."""
        ...

    async def blocks_of(self, device: str) -> list[Block]:
        """The blocks reserved for ``device``, oldest first."""
        ...

    async def retire(self, fmt: IdFormat, patient_id: str, by: str, reason: str) -> str:
        """Retire ``patient_id`` for good (never allocated afterwards); the normalised ID.

        An ID never allocated here is recorded as retired too (a card printed
        elsewhere).  An ID whose check digit fails raises ``ValueError``: retiring
        a typo would be recorded against the wrong number.
        """
        ...

    async def status_of(self, patient_id: str) -> Status | None:
        """What became of ``patient_id``; None if it was never recorded here."""
        ...


def check_count(name: str, value: int) -> None:
    """Refuse a count or size below 1 (each adapter's first line)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")


def check_device(device: str) -> None:
    if not isinstance(device, str) or not device.strip():
        raise ValueError("device must name the device the block is for (a non-empty string)")


def normalised(fmt: IdFormat, patient_id: str) -> str:
    """``patient_id`` as stored (spaces, hyphens and case removed), or ValueError."""
    result = validate(patient_id, fmt.scheme)
    if not result.valid:
        raise ValueError(f"{patient_id!r}: {result.reason}")
    return result.id
