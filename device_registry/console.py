"""The supervisor console's frame: one navigation, the signed-in user, language and time zone.

Every page under ``/supervisor/`` is drawn inside ``page(shell, title, body)``: a
skip link, the header (the sections, the reader's language switch, who is
signed in and log out), the page's ``<main>`` and a footer naming the time zone.
A ``Shell`` carries what the frame and the page body need to speak to this
reader: who is signed in (None on the login page: no sections, no log out) and
the CSRF token of the header's forms, which section is open, the page's own
address (the language switch comes back to it), the reader's language (``en``
or ``sw``) and the programme's time zone (``FIELDSYNC_TIME_ZONE``).  Page bodies
translate their fixed words with ``shell.t("English text")`` and show times with
``shell.when(iso)``; a word missing from the catalogue is shown in English,
never as a key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from html import escape
from zoneinfo import ZoneInfo

from device_registry.csrf import FIELD

STYLE = """
*{box-sizing:border-box}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2327;
background:#f4f6f8}
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;justify-content:space-between;
padding:.6rem 1rem;background:#0b5560;color:#fff}
header a{color:#fff;font-weight:600;text-decoration:none;padding:.2rem .1rem}
header nav{display:flex;flex-wrap:wrap;gap:.2rem 1rem}
header nav a[aria-current]{text-decoration:underline;text-underline-offset:.3em}
header form{margin:0}
header label.inline{color:#fff;display:inline;margin:0;font-size:.9rem}
select.narrow{width:auto;padding:.3rem}
.brand{font-size:1.1rem}
.skip{position:absolute;left:-100vw;top:0;background:#fff;color:#0b5560;padding:.5rem 1rem;
z-index:2}
.skip:focus{left:0}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,
textarea:focus-visible,main:focus-visible{outline:3px solid #f0b400;outline-offset:2px}
footer{max-width:72rem;margin:0 auto;padding:0 1rem 2rem}
main{max-width:72rem;margin:0 auto;padding:1rem}
h1{font-size:1.35rem;margin:.2rem 0 1rem}
h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
a{color:#0b5560}
.card{background:#fff;border:1px solid #d5dbe0;border-radius:6px;padding:1rem;margin-bottom:1rem}
label{display:block;font-size:.85rem;color:#4a555c;margin-bottom:.2rem}
input,select,textarea{font:inherit;padding:.45rem;border:1px solid #aab4bb;border-radius:4px;
width:100%;background:#fff}
button{font:inherit;padding:.5rem .9rem;border:1px solid #0b5560;border-radius:4px;
background:#0b5560;color:#fff;cursor:pointer;min-height:2.6rem}
button.plain{background:#fff;color:#0b5560}
button.danger{background:#a1261b;border-color:#a1261b}
.filters{display:grid;grid-template-columns:repeat(auto-fit,minmax(8.5rem,1fr));gap:.75rem;
align-items:end}
.row{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center}
.chips{display:flex;flex-wrap:wrap;gap:.4rem;margin:.5rem 0 1rem;padding:0;list-style:none}
.chips a{display:inline-block;padding:.25rem .65rem;border-radius:999px;background:#fff;
border:1px solid #aab4bb;text-decoration:none;color:#1d2327;font-size:.9rem}
.chips a.on{background:#0b5560;color:#fff;border-color:#0b5560}
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid #d5dbe0}
th,td{text-align:left;padding:.5rem .6rem;border-bottom:1px solid #e3e7ea;vertical-align:top}
th a{text-decoration:none;color:#1d2327}
.status{display:inline-block;padding:.1rem .5rem;border-radius:4px;font-size:.85rem;
font-weight:600;background:#e3e7ea}
.st-assigned{background:#d7efe0;color:#14532d}.st-lost,.st-stolen{background:#f9d6d2;color:#7f1d1d}
.st-in_repair{background:#fdecc8;color:#713f12}.st-retired{background:#e3e7ea;color:#4a555c}
.st-in_stock{background:#dbe8f7;color:#1e3a5f}
.quiet{color:#a1261b;font-weight:600}
.collect{display:inline-block;padding:.1rem .5rem;border-radius:4px;font-size:.85rem;
font-weight:600;background:#fdecc8;color:#713f12}
.msg{padding:.6rem .8rem;border-radius:4px;margin-bottom:1rem;background:#d7efe0}
.err{background:#f9d6d2}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:0}
dt{color:#4a555c}dd{margin:0;overflow-wrap:anywhere}
.code{font:700 2rem/1.2 ui-monospace,Menlo,Consolas,monospace;letter-spacing:.08em}
svg.qr{width:min(70vw,16rem);height:auto;background:#fff}
.muted{color:#4a555c;font-size:.9rem}
.flag{display:inline-block;padding:.1rem .5rem;border-radius:4px;font-size:.85rem;font-weight:600;
background:#f9d6d2;color:#7f1d1d}
.good{color:#14532d;font-weight:600}.bad{color:#a1261b;font-weight:600}
.pager{display:flex;justify-content:space-between;gap:1rem;margin:1rem 0}
.search{display:flex;gap:.5rem;align-items:end;margin-bottom:1rem}
.search p{flex:1;margin:0}
.field{margin:0}
h3{font-size:1rem;margin:0 0 .5rem}
code{overflow-wrap:anywhere}
pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:0;font:inherit}
@media (max-width:40rem){
 table.devices thead{display:none}
 table.devices,table.devices tbody,table.devices tr,table.devices td{display:block;width:100%}
 table.devices tr{border-bottom:2px solid #d5dbe0;padding:.4rem 0}
 table.devices td{border:0;padding:.15rem .75rem;overflow-wrap:anywhere}
 table.devices td::before{content:attr(data-label) ": ";color:#4a555c;font-size:.85rem}
 header{flex-direction:column;align-items:flex-start}
 dl{grid-template-columns:1fr}dt{margin-top:.4rem}
}
"""
LANGUAGES = ("en", "sw")
LANGUAGE_NAMES = {"en": "English", "sw": "Kiswahili"}
NAV = (
    ("workers", "/supervisor/workers", "Workers"),
    ("devices", "/supervisor/devices", "Devices"),
    ("sms", "/supervisor/sms", "SMS"),
    ("refusals", "/supervisor/refusals", "Refused records"),
)
SWAHILI: dict[str, str] = {
    # the frame
    "Workers": "Wahudumu",
    "Devices": "Vifaa",
    "SMS": "SMS",
    "Refused records": "Rekodi zilizokataliwa",
    "Log out": "Toka",
    "Signed in as": "Umeingia kama",
    "Sections": "Sehemu",
    "Skip to the content": "Ruka hadi maudhui",
    "Language": "Lugha",
    "Change": "Badilisha",
    "Times are shown in": "Nyakati zinaonyeshwa kwa saa za",
    # log in, errors
    "Log in": "Ingia",
    "Supervisor log in": "Kuingia kwa msimamizi",
    "User name": "Jina la mtumiaji",
    "Password": "Nenosiri",
    "Wrong user name or password.": "Jina la mtumiaji au nenosiri si sahihi.",
    "Not found": "Haipatikani",
    "Form expired": "Fomu imepitwa na muda",
    "This form has expired. Go back, reload the page and try again.": (
        "Fomu hii imepitwa na muda. Rudi nyuma, pakia ukurasa upya na ujaribu tena."
    ),
    "Bad filter": "Kichujio si sahihi",
    "Back to the devices": "Rudi kwenye vifaa",
    # the device list
    "Search": "Tafuta",
    "Serial, IMEI or phone number": "Namba ya kifaa, IMEI au namba ya simu",
    "Status": "Hali",
    "Any status": "Hali yoyote",
    "Worker": "Mhudumu",
    "Anyone": "Yeyote",
    "Place": "Eneo",
    "All my places": "Maeneo yangu yote",
    "Not synced for (days)": "Haijasawazisha kwa (siku)",
    "Filter": "Chuja",
    "All": "Vyote",
    "Count per status": "Idadi kwa kila hali",
    "Serial": "Namba ya kifaa",
    "Model": "Aina",
    "Phone": "Simu",
    "Last sync": "Usawazishaji wa mwisho",
    "never": "haijawahi",
    "No devices match.": "Hakuna kifaa kinacholingana.",
    "Download CSV": "Pakua CSV",
    "In stock": "Ghalani",
    "Assigned": "Imekabidhiwa",
    "Lost": "Imepotea",
    "Stolen": "Imeibiwa",
    "In repair": "Matengenezoni",
    "Retired": "Imestaafishwa",
    "Collect this phone": "Rudisha simu hii",
    "Show only them": "Onyesha hizo tu",
    # one device
    "All devices": "Vifaa vyote",
    "Device": "Kifaa",
    "Worker account": "Akaunti ya mhudumu",
    "Places": "Maeneo",
    "Issued": "Ilitolewa",
    "SIM phone number": "Namba ya simu ya laini",
    "OS version": "Toleo la mfumo",
    "App version": "Toleo la programu",
    "Notes": "Maelezo",
    "Actions": "Vitendo",
    "Assign to": "Mkabidhi",
    "Reassign to": "Mkabidhi mwingine",
    "Assign": "Kabidhi",
    "Reassign": "Kabidhi upya",
    "Choose…": "Chagua…",
    "Reason": "Sababu",
    "Reason or note for the history": "Sababu au maelezo ya historia",
    "Issue enrolment code": "Toa msimbo wa usajili",
    "Details": "Taarifa",
    "Save details": "Hifadhi taarifa",
    "Model name": "Aina ya simu",
    "SIM phone number (+country code)": "Namba ya simu ya laini (+msimbo wa nchi)",
    "History": "Historia",
    "When": "Lini",
    "Who": "Nani",
    "What": "Nini",
    "From": "Kutoka",
    "Answer": "Jibu",
    "Why": "Kwa nini",
    "Refused attempts (latest)": "Majaribio yaliyokataliwa (ya karibuni)",
    "Report lost, stolen or retire": "Ripoti imepotea, imeibiwa au istaafishe",
    "Yes, I am sure: this phone stops syncing at once.": (
        "Ndiyo, nina uhakika: simu hii itaacha kusawazisha mara moja."
    ),
    "Say why (required)": "Eleza kwa nini (lazima)",
    "Other changes": "Mabadiliko mengine",
    "Enrolment code": "Msimbo wa usajili",
    # SMS
    "SMS messages": "Ujumbe wa SMS",
    "Message": "Ujumbe",
    "Received": "Ulipokelewa",
    "Form": "Fomu",
    "Outcome": "Matokeo",
    "Patient ID": "Namba ya mgonjwa",
    "Problems": "Matatizo",
    "Reply": "Jibu",
    "Any": "Yoyote",
    "Any form": "Fomu yoyote",
    "From date": "Kuanzia tarehe",
    "To date": "Hadi tarehe",
    "Newer": "Mpya zaidi",
    "Older": "Za zamani zaidi",
    "No messages match.": "Hakuna ujumbe unaolingana.",
    "Lost or stolen phone": "Simu iliyopotea au kuibiwa",
    "Unknown sender": "Mtumaji asiyejulikana",
    "Open": "Fungua",
    "Parse": "Uchambuzi",
    "Records created": "Rekodi zilizoundwa",
    "Replies and reminders": "Majibu na vikumbusho",
    "None.": "Hakuna.",
    "Due": "Inatakiwa",
    "Kind": "Aina",
    "State": "Hali",
    "Attempt": "Jaribio",
    "All messages": "Ujumbe wote",
    "Detail": "Maelezo zaidi",
    "registered": "imesajiliwa",
    "recorded": "imerekodiwa",
    "invalid": "si sahihi",
    "unknown_sender": "mtumaji asiyejulikana",
    "unknown_patient": "mgonjwa asiyejulikana",
    "no_place": "hakuna eneo",
    "failed": "imeshindwa",
    "lost_phone": "simu iliyopotea au kuibiwa",
    "Sent": "Zilizotumwa",
    "To": "Kwa",
    "Pages": "Kurasa",
    "reply": "jibu",
    "reminder": "kikumbusho",
    "notice": "taarifa",
    "pending": "inasubiri",
    "forwarded": "imepelekwa",
    "sent": "imetumwa",
    "delivered": "imefika",
    "cleared": "imefutwa",
    "Found": "Imepatikana",
    "Recovered": "Imerejeshwa",
    "Repaired": "Imetengenezwa",
    "Returned to stock": "Imerudishwa ghalani",
    "Bad request": "Ombi si sahihi",
    "Phones to collect (still with a worker who was disabled or removed)": (
        "Simu za kurudisha (bado ziko kwa mhudumu aliyezimwa au kuondolewa)"
    ),
    "(for the app on this phone; replaces older codes)": (
        "(kwa programu kwenye simu hii; unachukua nafasi ya misimbo ya zamani)"
    ),
    "This device is retired; nothing more can change.": (
        "Kifaa hiki kimestaafishwa; hakuna kinachoweza kubadilika tena."
    ),
    "Lost, stolen, in repair, retired or returned: the phone can no longer sync from its "
    "next request on.": (
        "Imepotea, imeibiwa, iko matengenezoni, imestaafishwa au imerudishwa: simu haiwezi "
        "tena kusawazisha kuanzia ombi lake lijalo."
    ),
    "For": "Kwa",
    "In the app, scan the QR code or type the code. It works once, and expires at": (
        "Katika programu, changanua msimbo wa QR au andika msimbo. Unafanya kazi mara moja, "
        "na unaisha muda saa"
    ),
    "This code is shown only now. Issuing another one voids it.": (
        "Msimbo huu unaonyeshwa sasa tu. Kutoa mwingine kunaubatilisha."
    ),
    "The form expired; try again.": "Fomu imepitwa na muda; jaribu tena.",
    "These pages are for supervisors and admins; CHWs use the app.": (
        "Kurasa hizi ni za wasimamizi na wasimamizi wakuu; wahudumu wa afya hutumia programu."
    ),
    "Details saved.": "Taarifa zimehifadhiwa.",
    "active": "inatumika",
    "disabled": "imezimwa",
    "removed": "imeondolewa",
    "Assigned. Issue an enrolment code so the app on this phone can sync.": (
        "Imekabidhiwa. Toa msimbo wa usajili ili programu kwenye simu hii iweze kusawazisha."
    ),
    "Back in stock. Its token no longer works; assign and enrol it again to use it.": (
        "Imerudi ghalani. Tokeni yake haifanyi kazi tena; ikabidhi na uisajili upya ili uitumie."
    ),
    "Status changed to lost. Its token no longer works.": (
        "Hali imebadilishwa kuwa imepotea. Tokeni yake haifanyi kazi tena."
    ),
    "Status changed to stolen. Its token no longer works.": (
        "Hali imebadilishwa kuwa imeibiwa. Tokeni yake haifanyi kazi tena."
    ),
    "Status changed to in repair. Its token no longer works.": (
        "Hali imebadilishwa kuwa matengenezoni. Tokeni yake haifanyi kazi tena."
    ),
    "Status changed to retired. Its token no longer works.": (
        "Hali imebadilishwa kuwa imestaafishwa. Tokeni yake haifanyi kazi tena."
    ),
}


def e(value: object) -> str:
    """``value`` as HTML text or attribute value (None: empty)."""
    return escape("" if value is None else str(value), quote=True)


def csrf_input(token: str) -> str:
    return f'<input type="hidden" name="{FIELD}" value="{e(token)}">'


@dataclass(frozen=True)
class Shell:
    """What the frame and the body of one page need to know about its reader."""

    user: str | None
    csrf: str
    active: str
    language: str = "en"
    zone: str = "UTC"
    here: str = "/supervisor/devices"

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


def _language_form(shell: Shell) -> str:
    """Switch the reader's language: a form post (with CSRF) that comes back to this page."""
    options = "".join(
        f'<option value="{code}" lang="{code}"{" selected" if code == shell.language else ""}>'
        f"{e(name)}</option>"
        for code, name in LANGUAGE_NAMES.items()
    )
    return (
        f'<form method="post" action="/supervisor/language" class="row">{csrf_input(shell.csrf)}'
        f'<input type="hidden" name="next" value="{e(shell.here)}">'
        f'<label for="console-language" class="inline">{e(shell.t("Language"))}</label>'
        f'<select id="console-language" name="language" class="narrow">{options}</select>'
        f'<button class="plain" type="submit">{e(shell.t("Change"))}</button></form>'
    )


def _account(shell: Shell) -> str:
    return (
        f'<form method="post" action="/supervisor/logout" class="row">{csrf_input(shell.csrf)}'
        f"<span>{e(shell.t('Signed in as'))} <strong>{e(shell.user)}</strong></span>"
        f'<button class="plain" type="submit">{e(shell.t("Log out"))}</button></form>'
    )


def page(shell: Shell, title: str, body: str, heading: str | None = None) -> str:
    """One whole console page: the header (sections, language, the reader, log out), ``body``
    under an ``<h1>`` (``heading``: its HTML, when it holds more than the title) and the footer.
    """
    top = '<a class="brand" href="/supervisor/">fieldsync</a>'
    if shell.user is not None:
        top += f'{_nav(shell)}<div class="row">{_language_form(shell)}{_account(shell)}</div>'
    h1 = heading if heading is not None else e(title)
    footer = f"{e(shell.t('Times are shown in'))} {e(shell.zone)}."
    return (
        f'<!doctype html><html lang="{e(shell.language)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{e(title)} · fieldsync</title><style>{STYLE}</style></head><body>"
        f'<a class="skip" href="#main">{e(shell.t("Skip to the content"))}</a>'
        f"<header>{top}</header>"
        f'<main id="main" tabindex="-1"><h1>{h1}</h1>{body}</main>'
        f'<footer class="muted">{footer}</footer></body></html>'
    )
