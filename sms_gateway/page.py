"""The supervisors' SMS page: server-rendered HTML, no JavaScript, every value escaped.

Sign-in is the device registry's ``/supervisor/login`` (the core's session
cookie); the page only reads, so its filter form is a plain GET.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

from aiohttp import web

from sms_gateway.listing import OUTCOMES, STATES

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1rem 2rem;color:#222}"
    "table{border-collapse:collapse;width:100%;margin-bottom:2rem}"
    "th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}"
    "th{background:#f4f4f4}.bad{color:#a00}.ok{color:#070}form label{margin-right:1rem}"
)
INCOMING_COLUMNS = (
    ("received_at", "Received"),
    ("phone", "From"),
    ("worker", "Worker"),
    ("place", "Place"),
    ("content", "Message"),
    ("form", "Form"),
    ("outcome", "Outcome"),
    ("patient_id", "Patient ID"),
    ("problems", "Problems"),
    ("reply", "Reply"),
)
OUTGOING_COLUMNS = (
    ("created_at", "Queued"),
    ("due_at", "Due"),
    ("phone", "To"),
    ("worker", "Worker"),
    ("kind", "Kind"),
    ("content", "Message"),
    ("state", "State"),
    ("attempt", "Attempt"),
    ("reason", "Reason"),
)
GOOD = {"registered", "recorded", "delivered", "sent"}


def respond(html: str, status: int = 200) -> web.Response:
    return web.Response(text=html, status=status, content_type="text/html", headers=HEADERS)


def to_login(path_qs: str) -> web.Response:
    location = f"/supervisor/login?next={quote(path_qs, safe='')}"
    return web.Response(status=303, headers={"Location": location, **HEADERS})


def layout(title: str, body: str, user: str) -> str:
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
        f'<meta name=viewport content="width=device-width"><style>{STYLE}</style></head><body>'
        f'<header><a href="/supervisor/devices">Devices</a> · <b>SMS</b> · '
        f"signed in as {escape(user)}</header><h1>{escape(title)}</h1>{body}</body></html>"
    )


def error(reason: str, user: str) -> str:
    return layout("SMS messages", f'<p class=bad>{escape(reason)}</p><a href="?">Reset</a>', user)


def _select(name: str, choices: Sequence[str], chosen: str) -> str:
    options = "".join(
        f"<option{' selected' if c == chosen else ''}>{escape(c)}</option>" for c in choices
    )
    return (
        f"<label>{name} <select name={name}><option value=''>any</option>{options}</select></label>"
    )


def _input(name: str, value: str) -> str:
    return f"<label>{name} <input name={name} value='{escape(value, quote=True)}' size=12></label>"


def filters_form(query: Mapping[str, str]) -> str:
    return (
        "<form method=get>"
        + _input("worker", query.get("worker", ""))
        + _input("place", query.get("place", ""))
        + _input("form", query.get("form", ""))
        + _select("outcome", OUTCOMES, query.get("outcome", ""))
        + _select("state", STATES, query.get("state", ""))
        + "<button>Filter</button></form>"
    )


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "<td></td>"
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    css = " class=ok" if value in GOOD else " class=bad" if key in ("outcome", "state") else ""
    return f"<td{css}>{escape(str(value))}</td>"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{escape(label)}</th>" for _, label in columns)
    body = "".join(
        "<tr>" + "".join(_cell(key, row.get(key)) for key, _ in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def messages_page(data: Mapping[str, Any], query: Mapping[str, str], user: str) -> str:
    body = (
        filters_form(query)
        + "<h2>Incoming</h2>"
        + table(data["incoming"], INCOMING_COLUMNS)
        + "<h2>Outgoing</h2>"
        + table(data["outgoing"], OUTGOING_COLUMNS)
    )
    return layout("SMS messages", body, user)
