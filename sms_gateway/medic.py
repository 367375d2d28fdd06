"""The medic-gateway poll protocol, as plain data (https://github.com/medic/cht-gateway#api).

    GET  /api/sms  -> {"medic-gateway": true}
    POST /api/sms  {"messages": [{id, from, content, sms_sent, sms_received}],
                    "updates":  [{id, status, reason?}]}
                -> {"messages": [{id, to, content}]}

Lists may be missing or null.  A gateway repeats messages and status updates
until it has seen an answer, so both are idempotent by ``id``.  Entries are
read leniently: a message without an id gets one derived from its content, a
missing field becomes empty, so that nothing a gateway sends is dropped; an
entry that is not an object at all is counted and skipped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from sms_gateway.outbox import OutgoingSms, StatusUpdate
from sms_gateway.service import Received

CHANNEL = "gateway"
MAX_ID = 200
MAX_PHONE = 32
MAX_CONTENT = 2000  # many concatenated SMS; a longer text is cut, not refused


@dataclass
class Poll:
    messages: list[Received] = field(default_factory=list)
    updates: list[StatusUpdate] = field(default_factory=list)
    skipped: int = 0


def read_poll(body: dict[str, Any]) -> Poll:
    poll = Poll()
    for entry in _list(body.get("messages")):
        if isinstance(entry, dict):
            poll.messages.append(_message(entry))
        else:
            poll.skipped += 1
    for entry in _list(body.get("updates")):
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            poll.updates.append(_update(entry))
        else:
            poll.skipped += 1
    return poll


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: object, limit: int) -> str:
    if value is None:
        return ""
    return (value if isinstance(value, str) else str(value))[:limit]


def _message(entry: dict[str, Any]) -> Received:
    phone = _text(entry.get("from"), MAX_PHONE)
    content = _text(entry.get("content"), MAX_CONTENT)
    sent, received = _moment(entry.get("sms_sent")), _moment(entry.get("sms_received"))
    external = _text(entry.get("id"), MAX_ID) or _derived_id(phone, content, entry)
    return Received(CHANNEL, external, phone, content, sent, received)


def _derived_id(phone: str, content: str, entry: dict[str, Any]) -> str:
    raw = "\x1f".join((phone, content, str(entry.get("sms_sent")), str(entry.get("sms_received"))))
    return "derived-" + hashlib.sha256(raw.encode()).hexdigest()[:32]


def _moment(value: object) -> dt.datetime | None:
    """Milliseconds since the epoch, as the gateway sends them; None when not that."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _update(entry: dict[str, Any]) -> StatusUpdate:
    reason = entry.get("reason")
    return StatusUpdate(
        _text(entry["id"], MAX_ID),
        _text(entry.get("status"), 20),
        None if reason is None else _text(reason, 200),
    )


def answer(messages: list[OutgoingSms]) -> dict[str, Any]:
    return {"messages": [{"id": m.id, "to": m.to, "content": m.content} for m in messages]}


def error(message: str) -> dict[str, Any]:
    """medic-gateway's error shape (it shows ``message`` to the phone's user)."""
    return {"error": True, "message": message}
