"""One SMS provider: Africa's Talking (form-encoded callbacks; a form-encoded send API).

Incoming-message callback fields: ``id``, ``from``, ``to``, ``text``, ``date``
(and ``linkId``).  Delivery-report callback fields: ``id`` (the provider's
message id, as the send API answered it), ``status``, ``failureReason``,
``phoneNumber``.  The send API takes ``username``, ``to``, ``message`` and
``from`` with an ``apiKey`` header and answers
``{"SMSMessageData": {"Recipients": [{"statusCode", "messageId", "status"}]}}``.
The webhook is authenticated with a shared secret (the provider cannot sign
its callbacks) in the ``X-Webhook-Secret`` header; never in the query string,
which proxies and access logs keep.  Wrong secrets are limited per address,
each attempt counted before the secret is compared (``sync.ratelimit``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from sms_gateway.outgoing import OutEvent
from sms_gateway.service import Received
from sms_gateway.settings import ProviderSettings
from sync.errors import Forbidden, TooManyRequests
from sync.ratelimit import FailureWindow, Limit, Limited

NAME = "africastalking"
SECRET_HEADER = "X-Webhook-Secret"
# Wrong webhook secrets per address before further callbacks from it get 429.
WEBHOOK_LIMITS = {"ip": Limit(20, 600.0)}
ACCEPTED_CODES = frozenset({100, 101, 102})  # processed, sent, queued
SEND_TIMEOUT = aiohttp.ClientTimeout(total=30)

DELIVERY_STATUS: dict[str, OutEvent] = {
    "submitted": OutEvent.SENT,
    "buffered": OutEvent.SENT,
    "sent": OutEvent.SENT,
    "success": OutEvent.DELIVERED,
    "rejected": OutEvent.FAILED,
    "failed": OutEvent.FAILED,
    "absentsubscriber": OutEvent.FAILED,
    "expired": OutEvent.FAILED,
}


class ProviderError(Exception):
    """The provider did not take a message."""


@dataclass(frozen=True)
class DeliveryReport:
    provider_id: str
    event: OutEvent
    reason: str | None


def webhook_window() -> FailureWindow:
    return FailureWindow(dict(WEBHOOK_LIMITS))


def check_secret(
    failures: FailureWindow, expected: str | None, headers: Mapping[str, str], remote: str | None
) -> None:
    """Raise unless the header holds the secret: 403, or 429 once an address guessed too often."""
    try:
        reservation = failures.reserve(f"ip:{remote or '-'}")
    except Limited as exc:
        raise TooManyRequests(
            f"Too many wrong webhook secrets; try again in {exc.wait} s."
        ) from exc
    if not secret_matches(expected, headers.get(SECRET_HEADER)):
        raise Forbidden(f"Wrong or missing webhook secret (send it in {SECRET_HEADER}).")
    failures.forgive(reservation)


def secret_matches(expected: str | None, given: str | None) -> bool:
    if not expected or given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def incoming(form: Mapping[str, str], now: dt.datetime) -> Received | None:
    """An incoming-message callback as a :class:`Received`; None when it is not one."""
    phone, text = form.get("from"), form.get("text")
    if phone is None or text is None:
        return None
    external = form.get("id") or _digest(phone, text, form.get("date", ""))
    return Received(NAME, external[:200], phone[:32], text, None, _date(form.get("date")) or now)


def delivery_report(form: Mapping[str, str]) -> DeliveryReport | None:
    provider_id, status = form.get("id"), form.get("status")
    if not provider_id or not status:
        return None
    event = DELIVERY_STATUS.get(status.replace(" ", "").lower())
    if event is None:
        return None
    return DeliveryReport(provider_id, event, form.get("failureReason") or None)


def _digest(*parts: str) -> str:
    return "h" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _date(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class AfricasTalking:
    name = NAME

    def __init__(self, settings: ProviderSettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.session = session

    async def send(self, to: str, content: str) -> str:
        """Hand one message to the provider; its message id, or ProviderError."""
        data = {"username": self.settings.username, "to": to, "message": content}
        if self.settings.sender:
            data["from"] = self.settings.sender
        headers = {"apiKey": self.settings.api_key, "Accept": "application/json"}
        try:
            async with self.session.post(
                self.settings.url, data=data, headers=headers, timeout=SEND_TIMEOUT
            ) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ProviderError(f"provider unreachable: {type(exc).__name__}") from exc
        try:
            recipient = body["SMSMessageData"]["Recipients"][0]
            code, message_id = int(recipient["statusCode"]), str(recipient["messageId"])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ProviderError("provider answer without a recipient") from exc
        if code not in ACCEPTED_CODES:
            raise ProviderError(f"provider refused: {recipient.get('status', code)}")
        return message_id
