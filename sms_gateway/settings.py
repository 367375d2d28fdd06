"""SMS settings: ``config.extra["sms"]`` (a dict: tests, embedding), then ``FIELDSYNC_SMS_*``.

:data:`SETTINGS` says what each ``FIELDSYNC_SMS_*`` variable does and its default
(read from :class:`SmsSettings`); ``fieldsync settings`` lists them with the core's.
"""

from __future__ import annotations

import datetime as dt
import os
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sms_gateway.outgoing import RetryPolicy
from sms_gateway.reminders import ANC_CONTACT_WEEKS, SendWindow
from sms_gateway.replies import DEFAULT_LANGUAGE, LANGUAGES
from sync.config import Config
from sync.settings import Setting, shown

PREFIX = "FIELDSYNC_SMS_"
# A claim on a received message lasts this many ticks (60 s at the default tick).
LEASE_TICKS = 12


@dataclass(frozen=True)
class ProviderSettings:
    url: str
    username: str
    api_key: str
    sender: str | None = None


@dataclass(frozen=True)
class SmsSettings:
    language: str = DEFAULT_LANGUAGE
    timezone: str = "UTC"
    send_hours: tuple[int, int] = (8, 18)
    anc_weeks: tuple[int, ...] = ANC_CONTACT_WEEKS
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    tick_seconds: float = 5.0
    webhook_secret: str | None = None
    provider: ProviderSettings | None = None
    poll_batch: int = 50  # outgoing messages handed to a gateway per poll
    process_batch: int = 100  # incoming messages processed per round
    max_processing_attempts: int = 5

    @property
    def lease(self) -> dt.timedelta:
        """How long an instance's claim on a received message lasts (sms_gateway.ports): a
        round of processing takes a few seconds; an instance that died is taken over after."""
        return dt.timedelta(seconds=LEASE_TICKS * self.tick_seconds)

    @property
    def zone(self) -> dt.tzinfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def window(self) -> SendWindow:
        start, end = self.send_hours
        return SendWindow(dt.time(start % 24), dt.time(end % 24), self.zone)


_DEFAULTS = SmsSettings()
_HOURS = "{:02d}-{:02d}".format(*_DEFAULTS.send_hours)
_RETRY = _DEFAULTS.retry
# What each FIELDSYNC_SMS_<KEY> does, and its default: the keys from_config reads.
_MEANINGS: dict[str, tuple[str, str]] = {
    "LANGUAGE": (_DEFAULTS.language, f"default language of replies: {', '.join(LANGUAGES)}"),
    "TIMEZONE": (_DEFAULTS.timezone, "the time zone of report days and sending hours"),
    "SEND_HOURS": (_HOURS, "the daytime window reminders are sent in, `HH-HH`"),
    "ANC_WEEKS": (
        ",".join(str(w) for w in _DEFAULTS.anc_weeks),
        "weeks of pregnancy of the ANC contact reminders",
    ),
    "MAX_ATTEMPTS": (shown(_RETRY.max_attempts), "sends (new ids) of a message that fails"),
    "MAX_OFFERS": (shown(_RETRY.max_offers), "offers of one send to a gateway that stays silent"),
    "OFFER_TIMEOUT": (
        shown(_RETRY.offer_timeout.total_seconds()),
        "seconds before a send a gateway did not confirm is offered again",
    ),
    "TICK": (shown(_DEFAULTS.tick_seconds), "seconds between the SMS scheduler's rounds"),
    "WEBHOOK_SECRET": (
        "none",
        "the shared secret an SMS provider's callbacks carry in `X-Webhook-Secret`; unset: "
        "the webhook is off",
    ),
    "PROVIDER_URL": (
        "none",
        "an Africa's Talking-style send API (e.g. "
        "`https://api.africastalking.com/version1/messaging`); unset: nothing is sent "
        "through a provider (replies to its messages wait, pending)",
    ),
    "PROVIDER_USERNAME": ("none", "the provider account's user name"),
    "PROVIDER_API_KEY": ("none", "the provider account's API key (sent as its `apiKey` header)"),
    "PROVIDER_SENDER": ("none", "the sender id or short code replies come from"),
}
ENV_KEYS = tuple(_MEANINGS)
SETTINGS = tuple(
    Setting(PREFIX + key, default, meaning) for key, (default, meaning) in _MEANINGS.items()
)


def _hours(text: str) -> tuple[int, int]:
    start, _, end = text.partition("-")
    return int(start), int(end)


def _weeks(text: str) -> tuple[int, ...]:
    return tuple(sorted({int(w) for w in text.split(",") if w.strip()}))


def from_config(config: Config, env: Mapping[str, str] | None = None) -> SmsSettings:
    """Settings from the environment, overridden by ``config.extra["sms"]``."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    for key in ENV_KEYS:
        if env.get(PREFIX + key):
            raw[key.lower()] = env[PREFIX + key]
    raw.update(config.extra.get("sms", {}))
    return build(raw)


def build(raw: Mapping[str, Any]) -> SmsSettings:
    """Settings from a flat mapping of the names above (lower case, without the prefix)."""
    base = SmsSettings()
    language = str(raw.get("language", base.language))
    if language not in LANGUAGES:
        raise ValueError(f"SMS language {language!r}: use one of {', '.join(LANGUAGES)}")
    hours = raw.get("send_hours", base.send_hours)
    weeks = raw.get("anc_weeks", base.anc_weeks)
    retry = RetryPolicy(
        max_attempts=int(raw.get("max_attempts", base.retry.max_attempts)),
        max_offers=int(raw.get("max_offers", base.retry.max_offers)),
        offer_timeout=dt.timedelta(
            seconds=float(raw.get("offer_timeout", base.retry.offer_timeout.total_seconds()))
        ),
    )
    settings = SmsSettings(
        language=language,
        timezone=str(raw.get("timezone", base.timezone)),
        send_hours=_hours(hours) if isinstance(hours, str) else (int(hours[0]), int(hours[1])),
        anc_weeks=_weeks(weeks) if isinstance(weeks, str) else tuple(weeks),
        retry=retry,
        tick_seconds=float(raw.get("tick", base.tick_seconds)),
        webhook_secret=raw.get("webhook_secret") or None,
        provider=_provider(raw),
    )
    settings.window  # noqa: B018 - fails early on an unknown time zone
    return settings


def _provider(raw: Mapping[str, Any]) -> ProviderSettings | None:
    url = raw.get("provider_url")
    if not url:
        return None
    return ProviderSettings(
        url=str(url),
        username=str(raw.get("provider_username", "")),
        api_key=str(raw.get("provider_api_key", "")),
        sender=raw.get("provider_sender") or None,
    )
