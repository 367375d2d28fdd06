"""Outgoing messages: their states, and the transitions between them.

    pending ──forward──▶ forwarded ──sent──▶ sent ──delivered──▶ delivered
       │  ▲                  │  │                 │
       │  └──failed (retry)──┘  └──────failed─────┴──▶ failed   (attempts used up)
       │  ▲                  │
       │  └──timeout (offer again, same id)          (offers used up ──▶ failed)
       └──clear──▶ cleared   (a delivery report clears pending reminders)

A retry after a failure is a new *attempt* with a new gateway id, because
medic-gateway never re-sends an id it has seen; an offer after a timeout
(no status from the gateway) repeats the same id, which the gateway ignores
if it already has the message.  Status updates that are repeats or arrive
out of order find no transition and change nothing.  Statuses are
medic-gateway's (https://github.com/medic/cht-gateway#post).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass


class OutState(enum.Enum):
    PENDING = "pending"
    FORWARDED = "forwarded"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    CLEARED = "cleared"


class OutEvent(enum.Enum):
    FORWARD = "forward"  # handed to a gateway or provider
    ACCEPTED = "accepted"  # the gateway holds it (medic-gateway UNSENT / PENDING)
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    TIMEOUT = "timeout"  # forwarded, and no status came back in time
    CLEAR = "clear"


S, E = OutState, OutEvent
TRANSITIONS: dict[tuple[OutState, OutEvent], OutState] = {
    (S.PENDING, E.FORWARD): S.FORWARDED,
    (S.PENDING, E.CLEAR): S.CLEARED,
    # A status for the current id may overtake its own forward or timeout.
    (S.PENDING, E.ACCEPTED): S.FORWARDED,
    (S.PENDING, E.SENT): S.SENT,
    (S.PENDING, E.DELIVERED): S.DELIVERED,
    (S.PENDING, E.FAILED): S.PENDING,
    (S.FORWARDED, E.ACCEPTED): S.FORWARDED,
    (S.FORWARDED, E.SENT): S.SENT,
    (S.FORWARDED, E.DELIVERED): S.DELIVERED,
    (S.FORWARDED, E.FAILED): S.PENDING,
    (S.FORWARDED, E.TIMEOUT): S.PENDING,
    (S.SENT, E.DELIVERED): S.DELIVERED,
    (S.SENT, E.FAILED): S.PENDING,
    # We gave up, but the network says otherwise: believe the network.
    (S.FAILED, E.SENT): S.SENT,
    (S.FAILED, E.DELIVERED): S.DELIVERED,
}
del S, E

# medic-gateway's status words → events.
GATEWAY_STATUS: dict[str, OutEvent] = {
    "UNSENT": OutEvent.ACCEPTED,
    "PENDING": OutEvent.ACCEPTED,
    "SENT": OutEvent.SENT,
    "DELIVERED": OutEvent.DELIVERED,
    "FAILED": OutEvent.FAILED,
}


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3  # distinct sends (new ids) after failures
    max_offers: int = 5  # offers of one attempt to a gateway that stays silent
    offer_timeout: dt.timedelta = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Step:
    state: OutState
    new_attempt: bool = False  # a retry: the next forward uses a new id
    reason: str | None = None


def step(
    state: OutState, event: OutEvent, attempt: int, offers: int, policy: RetryPolicy
) -> Step | None:
    """Where ``event`` takes a message in ``state``; None when it changes nothing."""
    target = TRANSITIONS.get((state, event))
    if target is None:
        return None
    if event is OutEvent.FAILED:
        if attempt >= policy.max_attempts:
            return Step(OutState.FAILED, reason=f"failed after {attempt} attempts")
        return Step(OutState.PENDING, new_attempt=True)
    if event is OutEvent.TIMEOUT and offers >= policy.max_offers:
        return Step(OutState.FAILED, reason=f"no status from the gateway after {offers} offers")
    return Step(target)


def gateway_id(message_id: str, attempt: int) -> str:
    """The id a gateway sees for one attempt of a message."""
    return f"{message_id}-{attempt}"


def split_gateway_id(value: str) -> tuple[str, int] | None:
    message_id, sep, attempt = value.rpartition("-")
    if not sep or not message_id or not attempt.isdigit() or not attempt.isascii():
        return None
    return message_id, int(attempt)
