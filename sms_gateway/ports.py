"""The SMS port: what the SMS gateway needs from storage, in its own words.

    SmsStore                        the port (a typing.Protocol)
    ├── sms_gateway.embedded        SQLite, inside the server's single writer (SQL in store.py)
    └── sms_gateway.couchdb         CouchDB / Cloudant, safe with many instances

Whichever adapter runs, these hold (tests/sms_gateway/test_sms_store_contract.py
checks each against every adapter):

- **Stored before answered.**  :meth:`receive` returns once every message is
  durably stored; a message already stored (same channel and gateway id) is a
  repeat and changes nothing.
- **Claimed, never shared.**  :meth:`claim_incoming` hands a stored message to
  one claimer at a time, under a lease (``owner`` until ``lease`` runs out).
  Two claimers, in one process or in several instances on one database, never
  hold the same message; a message whose lease ran out (its claimer died) is
  claimed again by the next caller.  The embedded adapter has one process and
  one writer: the service's lock serialises its rounds, so it needs no lease.
- **Processed once.**  :meth:`finish` marks a message processed only if it is
  still stored, and creates its outgoing messages by their ids (derived from
  the message): a message taken over and finished twice leaves one outcome and
  one copy of each reply.
- **Handed over once.**  :meth:`take_due` marks each message it returns
  ``forwarded`` before returning it; two callers never get the same message.
  A forwarded message comes back (:meth:`expire_silent`) only after the
  gateway stayed silent for the offer timeout, with the same gateway id,
  which medic-gateway ignores if it already has it.
- **Stale events change nothing.**  :meth:`apply_event` about an attempt other
  than the current one, or with no transition from the current state
  (sms_gateway.outgoing), is ignored.

Texts stay sealed (sms_gateway.sealing): the adapters store ``key_ref`` and
the sealed bytes as they are given.  Times are UTC ISO strings (:func:`iso`).
Errors: the server's :mod:`sync.errors` when the storage fails.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sms_gateway.listing import Filters
from sms_gateway.outgoing import OutEvent, OutState, RetryPolicy

# A claim lasts this long unless the service asks otherwise; a round takes seconds.
LEASE = dt.timedelta(seconds=60)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_iso(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


# -- incoming ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewIncoming:
    key: str
    channel: str
    external_id: str
    phone: str
    key_ref: str
    content: bytes
    sent_at: dt.datetime | None
    received_at: dt.datetime


@dataclass(frozen=True)
class StoredIncoming:
    id: int
    key: str
    channel: str
    phone: str
    key_ref: str
    content: bytes
    received_at: dt.datetime
    attempts: int
    patient_id: str | None


@dataclass(frozen=True)
class Finished:
    """What processing one message came to (written with its outgoing messages)."""

    incoming_id: int
    outcome: str
    form: str | None
    worker: str | None
    device: str | None
    place: str | None
    patient_id: str | None
    problems: tuple[str, ...]
    details_ref: str
    details: bytes
    docs: tuple[str, ...]


# -- outgoing ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewOutgoing:
    id: str
    channel: str
    phone: str
    kind: str  # reply | reminder | notice (to an unknown number)
    key_ref: str
    content: bytes
    due_at: dt.datetime
    incoming_id: int | None
    worker: str | None
    place: str | None
    patient_id: str | None


@dataclass(frozen=True)
class Offered:
    id: str
    attempt: int
    phone: str
    key_ref: str
    content: bytes


@dataclass(frozen=True)
class Event:
    """A status about one attempt of an outgoing message (attempt None: whichever is current)."""

    message_id: str
    attempt: int | None
    event: OutEvent
    reason: str | None = None


@dataclass(frozen=True)
class Queue:
    name: str
    depth: int
    oldest: dt.datetime | None  # when the oldest message waiting joined the queue


Row = dict[str, Any]  # a message as the listing shows it (sms_gateway.listing's columns)


class SmsStore(Protocol):
    async def open(self) -> None:
        """Create what the adapter needs (tables, database, views); safe to repeat."""
        ...

    # -- incoming -------------------------------------------------------------------------
    async def receive(self, messages: Sequence[NewIncoming], now: dt.datetime) -> int:
        """Store messages not seen before (by channel and gateway id); how many were new."""
        ...

    async def claim_incoming(
        self, owner: str, now: dt.datetime, limit: int, lease: dt.timedelta = LEASE
    ) -> list[StoredIncoming]:
        """Up to ``limit`` stored messages due by ``now``, oldest first, now held by ``owner``
        until ``now + lease``; none held by another claimer whose lease still runs."""
        ...

    async def assign_patient_ids(self, assigned: dict[int, str]) -> dict[int, str]:
        """Record a new patient ID on each message (incoming id -> ID) that has none yet; the
        ID each message carries afterwards (an earlier one wins: one patient per message,
        even when two claimers allocated for it)."""
        ...

    async def postpone(self, incoming_id: int, retry_at: dt.datetime) -> int:
        """Count a failed attempt and release the message until ``retry_at``; the attempts."""
        ...

    async def finish(
        self,
        done: Sequence[Finished],
        outgoing: Sequence[NewOutgoing],
        clear_reminders_of: Iterable[str],
        now: dt.datetime,
    ) -> None:
        """Create ``outgoing`` (repeats by id ignored), mark ``done`` processed (if still
        stored), and clear the pending reminders of the patients named."""
        ...

    async def noticed(self, phones: Iterable[str], since: dt.datetime) -> set[str]:
        """Which of ``phones`` were sent a notice (kind ``notice``) since ``since``."""
        ...

    # -- outgoing -------------------------------------------------------------------------
    async def take_due(
        self, channel: str, now: dt.datetime, limit: int, reminders: bool
    ) -> list[Offered]:
        """Pending messages of ``channel`` due by ``now`` (reminders only when ``reminders``),
        each marked ``forwarded`` before it is returned (to this caller only)."""
        ...

    async def apply_events(
        self, events: Sequence[Event], policy: RetryPolicy, now: dt.datetime
    ) -> list[OutState | None]:
        """Move each message on its event; None for an unknown, stale or unchanged one."""
        ...

    async def claim_tick(self, owner: str, seconds: float) -> bool:
        """Should ``owner`` (this instance) do the scheduler's work this tick?  One instance
        at a time does: it holds a lease of ``seconds`` it renews each tick; when it dies,
        another takes over once the lease ran out.  (Embedded: always, one process.)"""
        ...

    async def expire_silent(self, policy: RetryPolicy, now: dt.datetime) -> int:
        """Forwarded messages with no status for ``policy.offer_timeout``: offered again (or
        failed when out of offers); how many moved."""
        ...

    async def set_provider_id(self, message_id: str, provider_id: str) -> None:
        """The provider's id of the attempt just handed to it (for its delivery reports)."""
        ...

    async def by_provider_id(self, provider_id: str) -> tuple[str, int] | None:
        """The message and attempt a provider's id names; None when unknown."""
        ...

    # -- workers ----------------------------------------------------------------------------
    async def set_language(self, worker: str, language: str) -> None: ...

    async def languages(self, workers: Iterable[str]) -> dict[str, str]: ...

    # -- supervisors and metrics ---------------------------------------------------------
    async def queues(self, moment: dt.datetime) -> list[Queue]:
        """Messages waiting: received not processed (``incoming``), due not handed over
        (``outgoing_due``), handed over not confirmed (``outgoing_forwarded``)."""
        ...

    async def counts(self) -> dict[str, list[tuple[str, str, int]]]:
        """``incoming``: (state, outcome or '-', count); ``outgoing``: (kind, state, count)."""
        ...

    async def incoming_rows(self, filters: Filters, places: frozenset[str] | None) -> list[Row]:
        """Incoming messages for the listing (sms_gateway.listing), newest first."""
        ...

    async def outgoing_rows(
        self, filters: Filters, places: frozenset[str] | None, by_seq: bool = False
    ) -> list[Row]:
        """Outgoing messages for the listing, newest first (by ``seq`` when ``by_seq``)."""
        ...

    async def incoming_one(self, message_id: int, places: frozenset[str] | None) -> Row | None:
        """One incoming message, if ``places`` (None: all) may see it."""
        ...

    async def caused_by(self, message_id: int) -> list[Row]:
        """The replies and reminders an incoming message caused, in the order they are due."""
        ...
