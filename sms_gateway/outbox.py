"""The outgoing side: due messages handed to gateways, and what gateways report back.

Each hand-over marks the messages ``forwarded`` in the same transaction that
selects them; a status update moves a message along the table in
:mod:`sms_gateway.outgoing`.  Reminders are handed over only inside the
daytime window; replies go at once.  A gateway that stays silent about a
forwarded message gets it offered again after the timeout (same id).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from sms_gateway import store
from sms_gateway.outgoing import GATEWAY_STATUS, OutEvent, gateway_id, split_gateway_id
from sms_gateway.sealing import Sealer
from sms_gateway.settings import SmsSettings
from sync.store.sqlite import SqliteStore

log = structlog.get_logger("fieldsync.sms")


@dataclass(frozen=True)
class OutgoingSms:
    id: str  # as the gateway must echo it in status updates
    to: str
    content: str


@dataclass(frozen=True)
class StatusUpdate:
    id: str
    status: str
    reason: str | None = None


class Outbox:
    def __init__(
        self,
        sqlite: SqliteStore,
        sealer: Sealer,
        settings: SmsSettings,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.sqlite = sqlite
        self.sealer = sealer
        self.settings = settings
        self.clock = clock

    async def take(self, channel: str, limit: int) -> list[OutgoingSms]:
        """Due messages of ``channel``, now ``forwarded``."""
        now = self.clock()
        reminders = self.settings.window.contains(now)
        offered = await self.sqlite.write_tx(
            lambda c: store.take_due(c, channel, now, limit, reminders)
        )
        return [self._opened(o) for o in offered]

    def _opened(self, offered: store.Offered) -> OutgoingSms:
        content = self.sealer.open(f"out:{offered.id}", offered.key_ref, offered.content)
        return OutgoingSms(
            gateway_id(offered.id, offered.attempt), offered.phone, content["content"]
        )

    async def gateway_updates(self, updates: Sequence[StatusUpdate]) -> int:
        """Apply medic-gateway status updates; repeats and unknown ids change nothing."""
        events = []
        for update in updates:
            event = GATEWAY_STATUS.get(update.status.upper())
            target = split_gateway_id(update.id)
            if event is None or target is None:
                log.warning("sms_update_ignored", id=update.id[:80], status=update.status[:20])
                continue
            events.append((target[0], target[1], event, update.reason))
        return await self._apply(events)

    async def provider_report(self, provider_id: str, event: OutEvent, reason: str | None) -> int:
        def find(conn: sqlite3.Connection) -> tuple[str, int] | None:
            return store.by_provider_id(conn, provider_id)

        found = await self.sqlite.read(find)
        if found is None:
            return 0
        return await self._apply([(found[0], found[1], event, reason)])

    async def failed(self, message_id: str, attempt: int, reason: str) -> int:
        return await self._apply([(message_id, attempt, OutEvent.FAILED, reason)])

    async def expire_silent(self) -> int:
        """Offer again what a gateway has not reported on within the timeout."""
        now = self.clock()
        policy = self.settings.retry

        def run(conn: sqlite3.Connection) -> int:
            ids = store.silent_since(conn, now - policy.offer_timeout)
            timeout = OutEvent.TIMEOUT
            return sum(
                store.apply_event(conn, i, None, timeout, policy, now) is not None for i in ids
            )

        return await self.sqlite.write_tx(run)

    async def _apply(self, events: list[tuple[str, int, OutEvent, str | None]]) -> int:
        if not events:
            return 0
        now, policy = self.clock(), self.settings.retry

        def run(conn: sqlite3.Connection) -> int:
            moved = 0
            for message_id, attempt, event, reason in events:
                reason = reason[:200] if reason else None
                state = store.apply_event(conn, message_id, attempt, event, policy, now, reason)
                moved += state is not None
            return moved

        return await self.sqlite.write_tx(run)
