"""The embedded adapter of the SMS port (sms_gateway.ports): the data dir's SQLite file.

Every write goes through the server's single writer (``SqliteStore.write_tx``),
so a round of the processor, a poll and a status update never interleave inside
a transaction; reads run on the store's reader threads.  One server process owns
a data dir, and the service's lock lets one processing round run at a time, so
:meth:`claim_incoming` needs no lease here: it hands out what is stored and due,
as before the port existed.  The SQL itself is in :mod:`sms_gateway.embedded_sql`.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Sequence
from functools import partial

from sms_gateway import embedded_sql
from sms_gateway.listing import Filters
from sms_gateway.outgoing import OutEvent, OutState, RetryPolicy
from sms_gateway.ports import (
    LEASE,
    Event,
    Finished,
    NewIncoming,
    NewOutgoing,
    Offered,
    Queue,
    Row,
    StoredIncoming,
)
from sync.store.sqlite import SqliteStore


class EmbeddedSms:
    def __init__(self, sqlite: SqliteStore) -> None:
        self.sqlite = sqlite

    async def open(self) -> None:
        await self.sqlite.write_tx(embedded_sql.create_tables)

    # -- incoming -------------------------------------------------------------------------
    async def receive(self, messages: Sequence[NewIncoming], now: dt.datetime) -> int:
        return await self.sqlite.write_tx(lambda c: embedded_sql.insert_incoming(c, messages, now))

    async def claim_incoming(
        self, owner: str, now: dt.datetime, limit: int, lease: dt.timedelta = LEASE
    ) -> list[StoredIncoming]:
        return await self.sqlite.read(partial(embedded_sql.unprocessed, now=now, limit=limit))

    async def assign_patient_ids(self, assigned: dict[int, str]) -> dict[int, str]:
        return await self.sqlite.write_tx(lambda c: embedded_sql.assign_patient_ids(c, assigned))

    async def postpone(self, incoming_id: int, retry_at: dt.datetime) -> int:
        return await self.sqlite.write_tx(lambda c: embedded_sql.postpone(c, incoming_id, retry_at))

    async def finish(
        self,
        done: Sequence[Finished],
        outgoing: Sequence[NewOutgoing],
        clear_reminders_of: Iterable[str],
        now: dt.datetime,
    ) -> None:
        clears = list(clear_reminders_of)
        await self.sqlite.write_tx(lambda c: embedded_sql.finish(c, done, outgoing, clears, now))

    async def noticed(self, phones: Iterable[str], since: dt.datetime) -> set[str]:
        numbers = set(phones)
        return await self.sqlite.read(lambda c: embedded_sql.noticed(c, numbers, since))

    # -- outgoing -------------------------------------------------------------------------
    async def take_due(
        self, channel: str, now: dt.datetime, limit: int, reminders: bool
    ) -> list[Offered]:
        return await self.sqlite.write_tx(
            lambda c: embedded_sql.take_due(c, channel, now, limit, reminders)
        )

    async def apply_events(
        self, events: Sequence[Event], policy: RetryPolicy, now: dt.datetime
    ) -> list[OutState | None]:
        def run(conn: sqlite3.Connection) -> list[OutState | None]:
            return [
                embedded_sql.apply_event(
                    conn, e.message_id, e.attempt, e.event, policy, now, e.reason
                )
                for e in events
            ]

        return await self.sqlite.write_tx(run)

    async def claim_tick(self, owner: str, seconds: float) -> bool:
        return True  # one server holds the data dir

    async def expire_silent(self, policy: RetryPolicy, now: dt.datetime) -> int:
        def run(conn: sqlite3.Connection) -> int:
            ids = embedded_sql.silent_since(conn, now - policy.offer_timeout)
            timeout = OutEvent.TIMEOUT
            return sum(
                embedded_sql.apply_event(conn, i, None, timeout, policy, now) is not None
                for i in ids
            )

        return await self.sqlite.write_tx(run)

    async def set_provider_id(self, message_id: str, provider_id: str) -> None:
        await self.sqlite.write_tx(
            lambda c: embedded_sql.set_provider_id(c, message_id, provider_id)
        )

    async def by_provider_id(self, provider_id: str) -> tuple[str, int] | None:
        return await self.sqlite.read(lambda c: embedded_sql.by_provider_id(c, provider_id))

    # -- workers ----------------------------------------------------------------------------
    async def set_language(self, worker: str, language: str) -> None:
        await self.sqlite.write_tx(lambda c: embedded_sql.set_language(c, worker, language))

    async def languages(self, workers: Iterable[str]) -> dict[str, str]:
        names = set(workers)
        return await self.sqlite.read(lambda c: embedded_sql.languages(c, names))

    # -- supervisors and metrics ---------------------------------------------------------
    async def queues(self, moment: dt.datetime) -> list[Queue]:
        return await self.sqlite.read(lambda c: embedded_sql.queues(c, moment))

    async def counts(self) -> dict[str, list[tuple[str, str, int]]]:
        return await self.sqlite.read(embedded_sql.counts)

    async def incoming_rows(self, filters: Filters, places: frozenset[str] | None) -> list[Row]:
        return await self.sqlite.read(lambda c: embedded_sql.incoming_rows(c, filters, places))

    async def outgoing_rows(
        self, filters: Filters, places: frozenset[str] | None, by_seq: bool = False
    ) -> list[Row]:
        return await self.sqlite.read(
            lambda c: embedded_sql.outgoing_rows(c, filters, places, by_seq)
        )

    async def incoming_one(self, message_id: int, places: frozenset[str] | None) -> Row | None:
        return await self.sqlite.read(lambda c: embedded_sql.incoming_one(c, message_id, places))

    async def caused_by(self, message_id: int) -> list[Row]:
        return await self.sqlite.read(lambda c: embedded_sql.caused_by(c, message_id))
