"""The supervisor console's frame: one navigation, the signed-in user, language and time zone.

Every page under ``/supervisor/`` is drawn inside ``page(shell, title, body)``.  A
``Shell`` carries what the frame and the page body need to speak to this reader:
who is signed in (and the CSRF token of the log-out form), which section is open,
the reader's language (``en`` or ``sw``) and the programme's time zone.  Page
bodies translate their fixed words with ``shell.t("English text")`` and show
times with ``shell.when(iso)``; a word missing from the catalogue is shown in
English, never as a key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from device_registry.templates import STYLE, csrf_input, e

LANGUAGES = ("en", "sw")
NAV = (
    ("workers", "/supervisor/workers", "Workers"),
    ("devices", "/supervisor/devices", "Devices"),
    ("sms", "/supervisor/sms", "SMS"),
    ("refusals", "/supervisor/refusals", "Refused records"),
)
SWAHILI: dict[str, str] = {
    "Workers": "Wahudumu",
    "Devices": "Vifaa",
    "SMS": "SMS",
    "Refused records": "Rekodi zilizokataliwa",
    "Log out": "Toka",
    "Signed in as": "Umeingia kama",
}


@dataclass(frozen=True)
class Shell:
    """What the frame and the body of one page need to know about its reader."""

    user: str
    csrf: str
    active: str
    language: str = "en"
    zone: str = "UTC"

    def t(self, text: str) -> str:
        """``text`` in the reader's language (English when no translation is known)."""
        return SWAHILI.get(text, text) if self.language == "sw" else text

    def when(self, stamp: str | None) -> str:
        """An ISO timestamp (UTC) as ``2026-05-01 17:03`` in the programme's time zone."""
        if not stamp:
            return "—"
        try:
            moment = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return stamp
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(ZoneInfo(self.zone)).strftime("%Y-%m-%d %H:%M")


def _current(key: str, shell: Shell) -> str:
    return ' aria-current="page"' if key == shell.active else ""


def _nav(shell: Shell) -> str:
    links = "".join(
        f'<a href="{href}"{_current(key, shell)}>{e(shell.t(name))}</a>' for key, href, name in NAV
    )
    return f'<nav aria-label="{e(shell.t("Sections"))}">{links}</nav>'


def page(shell: Shell, title: str, body: str) -> str:
    """One whole console page: the header (sections, the reader, log out) and ``body``."""
    account = (
        f'<form method="post" action="/supervisor/logout" class="row">{csrf_input(shell.csrf)}'
        f"<span>{e(shell.t('Signed in as'))} {e(shell.user)}</span>"
        f'<button class="plain" type="submit">{e(shell.t("Log out"))}</button></form>'
    )
    return (
        f'<!doctype html><html lang="{e(shell.language)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{e(title)} · fieldsync</title><style>{STYLE}</style></head><body>"
        f"<header>{_nav(shell)}{account}</header><main><h1>{e(title)}</h1>{body}</main></body></html>"
    )
