"""The device port: what the registry needs from storage, in its own words.

    DeviceStore                     the port (a typing.Protocol)
    ├── device_registry.embedded    SQLite, inside the server's single writer
    └── device_registry.couchdb     CouchDB / Cloudant, safe with many instances
    RefusalLimits                   the guard's refused-attempt counters
                                    (device_registry.limits: this process's;
                                    device_registry.couchdb_limits: shared)

``device_registry.backends`` is the one place that picks them.  Whichever
adapter runs, these hold (tests/device_registry/test_device_store_contract.py
checks them against every adapter):

- **One serial, one IMEI, one number.**  A serial is in the inventory once; an
  IMEI (first or second) belongs to one device; a SIM number to one *active*
  device (in stock, assigned, in repair), however many callers or instances
  add or edit devices at the same time.
- **A code is used once.**  An enrolment code enrols at most one device, once,
  even when many requests (through any instances) redeem it at the same time;
  a newer code, or the device changing hands, voids it.  Only the SHA-256 of a
  code or a token is stored, never the code or token itself.
- **At most one live token per device; revocation counts at once.**
  :meth:`DeviceStore.binding` reads the token and its device as they are now,
  as far as any change already answered goes: a phone marked lost, given to
  someone else or enrolled again through any instance is refused at its next
  request through every instance once that change has returned.  (An adapter
  that answers a binding again for a moment, as the CouchDB one does, makes
  such changes wait that moment out before they return: docs/adr/0006.)
- **History is never lost.**  Every change of status or worker (and each
  enrolment) is recorded as an entry of its own; two changes at once both keep
  theirs.
- **Audited with the change.**  A change given a :class:`Note` records the
  note's entry: in the change's own transaction where the backend has
  transactions (embedded), otherwise right after the write, made safe before
  the answer goes out (the audit trail's own flush).

Scope: ``scope`` is the actor's.  A device outside their read scope does not
exist for them (404), one they only read cannot be changed by them (403);
management commands act with ``sync.scopes.UNLIMITED``.  Errors: the server's
:mod:`sync.errors` (BadRequest, NotFound, Conflict, Forbidden, and
StoreUnavailable when the storage fails), with the same reasons on every
adapter; :class:`device_registry.enrolment.EnrolmentRefused` and
:class:`~device_registry.enrolment.NotAssigned` for enrolment.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from device_registry.enrolment import Enrolment, IssuedCode, RefusedAttempt
from device_registry.model import Device, DeviceOwner, HistoryEntry, NewDevice
from device_registry.status import DeviceStatus
from device_registry.verdict import TokenBinding
from sync.audit import AuditLog
from sync.ratelimit import Reservation
from sync.scopes import Scope

DeviceKey = str  # what binding() names a device by, for heard(): opaque to callers
Bound = tuple[DeviceKey, TokenBinding]  # what binding() finds: the device's key, its binding


@dataclass(frozen=True)
class Note:
    """An admin change's audit entry: who (and from which device) did what."""

    log: AuditLog
    actor: str
    device: str | None
    action: str
    detail: str


@dataclass(frozen=True)
class Heard:
    """A device was heard from at ``at`` (versions empty when the app did not say them)."""

    at: str
    app_version: str = ""
    os_version: str = ""


class DeviceStore(Protocol):
    # -- reading -----------------------------------------------------------------------
    async def get(self, serial: str) -> Device | None:
        """The device with this serial (any case), its worker's places and status."""
        ...

    async def list_all(self) -> list[Device]:
        """Every device, by serial."""
        ...

    async def history(self, serial: str) -> list[HistoryEntry]:
        """The device's history, newest first."""
        ...

    async def owner_of_phone(self, phone: str) -> DeviceOwner | None:
        """Who texts from ``phone`` (see ``device_registry.lookup``)."""
        ...

    # -- changing the inventory ------------------------------------------------------------
    async def add(
        self, new: NewDevice, actor: str, scope: Scope, worker: str | None, note: Note | None
    ) -> Device:
        """Add a device in stock (then assign it to ``worker``, when given)."""
        ...

    async def edit(
        self,
        serial: str,
        changes: Mapping[str, str | None],
        actor: str,
        scope: Scope,
        note: Note | None,
    ) -> Device: ...

    async def assign(
        self, serial: str, worker: str, actor: str, scope: Scope, reason: str, note: Note | None
    ) -> Device: ...

    async def mark(
        self,
        serial: str,
        target: DeviceStatus,
        actor: str,
        scope: Scope,
        reason: str,
        note: Note | None,
    ) -> Device: ...

    # -- enrolment -------------------------------------------------------------------------
    async def issue_code(
        self, serial: str, actor: str, scope: Scope, now: dt.datetime | None, note: Note | None
    ) -> IssuedCode:
        """A new one-time code for the device's worker (older unused ones voided)."""
        ...

    async def check_known(self, code: str) -> None:
        """Refuse a malformed or unknown code (EnrolmentRefused)."""
        ...

    async def enrol(
        self,
        code: str,
        serial: str,
        worker: str,
        now: dt.datetime | None = None,
        versions: tuple[str, str] = ("", ""),
    ) -> Enrolment:
        """Exchange the code for the device's new token (its older token revoked)."""
        ...

    # -- every request ---------------------------------------------------------------------
    async def binding(self, token_hash: str) -> Bound | None:
        """The token and its device as they are now; None for an unknown token."""
        ...

    async def heard(self, heard: Mapping[DeviceKey, Heard]) -> None:
        """Record when devices were last heard from (and the versions they said)."""
        ...

    async def record_refusals(self, attempts: Sequence[RefusedAttempt]) -> None: ...

    async def refusals(self, serials: frozenset[str] | None, limit: int) -> list[dict[str, Any]]:
        """The latest refused attempts, newest first (only these serials' unless None)."""
        ...

    # -- moving a deployment ---------------------------------------------------------------
    async def export_all(self) -> dict[str, list[dict[str, Any]]]:
        """Everything stored, as plain JSON-able rows (see ``device_registry.dump``)."""
        ...

    async def import_all(self, dump: Mapping[str, Sequence[Mapping[str, Any]]]) -> int:
        """Store what :meth:`export_all` gave (idempotent: what is there is kept); how many
        rows were new."""
        ...


class RefusalLimits(Protocol):
    """Refused attempts counted per key (``device:SERIAL``, ``ip:ADDRESS``, ``user:NAME``)."""

    @property
    def limits(self) -> dict[str, Any]:
        """The limit per key prefix (``device``, ``ip``, ``user``), to adjust in place."""
        ...

    async def reserve(self, keys: tuple[str, ...]) -> Reservation:
        """Count an attempt on ``keys`` now; raise ``sync.ratelimit.Limited`` at a limit."""
        ...

    async def forgive(self, reservation: Reservation) -> None: ...

    async def fail(self, keys: tuple[str, ...]) -> int | None:
        """Count a refusal on ``keys``; the seconds to wait if a key was already limited."""
        ...
