"""The outgoing side: due messages handed to gateways, and what gateways report back.

Each hand-over marks the messages ``forwarded`` before they are handed over
(sms_gateway.ports: one caller gets each, whichever instance asks); a status
update moves a message along the table in :mod:`sms_gateway.outgoing`.
Reminders are handed over only inside the daytime window; replies go at once.
A gateway that stays silent about a forwarded message gets it offered again
after the timeout (same id).

"Sent once": for medic-gateway, a message is sent when it is in a poll's
answer; it is marked ``forwarded`` first, so no other poll (on any instance)
gets it, and a poll answer lost with a killed instance is offered again only
after the offer timeout, under the same gateway id, which medic-gateway
ignores if it did get it.  For a provider's send API (sms_gateway.provider)
the one window left is a kill between the provider accepting a message and
:meth:`Outbox.sent_to_provider` recording its id: the message stays
``forwarded`` with no provider id, so after the offer timeout it is offered,
and sent, again (Africa's Talking's send API takes no idempotency key).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from sms_gateway import ports
from sms_gateway.outgoing import GATEWAY_STATUS, OutEvent, gateway_id, split_gateway_id
from sms_gateway.ports import Event, SmsStore
from sms_gateway.sealing import Sealer
from sms_gateway.settings import SmsSettings

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
        sms_store: SmsStore,
        sealer: Sealer,
        settings: SmsSettings,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.store = sms_store
        self.sealer = sealer
        self.settings = settings
        self.clock = clock

    async def take(self, channel: str, limit: int) -> list[OutgoingSms]:
        """Due messages of ``channel``, now ``forwarded`` (to this caller only)."""
        now = self.clock()
        reminders = self.settings.window.contains(now)
        offered = await self.store.take_due(channel, now, limit, reminders)
        return [self._opened(o) for o in offered]

    def _opened(self, offered: ports.Offered) -> OutgoingSms:
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
            events.append(Event(target[0], target[1], event, update.reason))
        return await self._apply(events)

    async def provider_report(self, provider_id: str, event: OutEvent, reason: str | None) -> int:
        found = await self.store.by_provider_id(provider_id)
        if found is None:
            return 0
        return await self._apply([Event(found[0], found[1], event, reason)])

    async def sent_to_provider(self, message_id: str, provider_id: str) -> None:
        """Record the provider's id of a message it accepted (its reports name that id)."""
        await self.store.set_provider_id(message_id, provider_id)

    async def failed(self, message_id: str, attempt: int, reason: str) -> int:
        return await self._apply([Event(message_id, attempt, OutEvent.FAILED, reason)])

    async def expire_silent(self) -> int:
        """Offer again what a gateway has not reported on within the timeout."""
        return await self.store.expire_silent(self.settings.retry, self.clock())

    async def _apply(self, events: list[Event]) -> int:
        if not events:
            return 0
        cut = [
            Event(e.message_id, e.attempt, e.event, e.reason[:200] if e.reason else None)
            for e in events
        ]
        moved = await self.store.apply_events(cut, self.settings.retry, self.clock())
        return sum(state is not None for state in moved)
