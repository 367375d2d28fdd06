"""HTML for the supervisor pages: plain functions returning strings, every value escaped.

No JavaScript and no framework: the pages must work on a cheap laptop and a
phone over a poor link.  Tables turn into one card per device on narrow screens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from device_registry import listing
from device_registry.csrf import FIELD
from device_registry.enrolment import IssuedCode
from device_registry.model import Device, HistoryEntry
from device_registry.status import TRANSITIONS, DeviceStatus, actions, label

STYLE = """
*{box-sizing:border-box}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2327;
background:#f4f6f8}
header{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;justify-content:space-between;
padding:.6rem 1rem;background:#0b5560;color:#fff}
header a{color:#fff;font-weight:600;text-decoration:none}
header form{margin:0}
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
@media (max-width:40rem){
 table.devices thead{display:none}
 table.devices,table.devices tbody,table.devices tr,table.devices td{display:block;width:100%}
 table.devices tr{border-bottom:2px solid #d5dbe0;padding:.4rem 0}
 table.devices td{border:0;padding:.15rem .75rem}
 table.devices td::before{content:attr(data-label) ": ";color:#4a555c;font-size:.85rem}
 dl{grid-template-columns:1fr}dt{margin-top:.4rem}
}
"""

STATUS_NAMES = {
    DeviceStatus.IN_STOCK: "In stock",
    DeviceStatus.ASSIGNED: "Assigned",
    DeviceStatus.LOST: "Lost",
    DeviceStatus.STOLEN: "Stolen",
    DeviceStatus.IN_REPAIR: "In repair",
    DeviceStatus.RETIRED: "Retired",
}
ASSIGNABLE = frozenset(s for s, to in TRANSITIONS.items() if DeviceStatus.ASSIGNED in to)
COLUMNS = (
    ("serial", "Serial"),
    ("status", "Status"),
    ("worker", "Worker"),
    ("model", "Model"),
    ("phone", "Phone"),
    ("last_sync", "Last sync"),
)


def e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def device_url(serial: str) -> str:
    return f"/supervisor/devices/{quote(serial, safe='')}"


def csrf_input(token: str) -> str:
    return f'<input type="hidden" name="{FIELD}" value="{e(token)}">'


def layout(title: str, body: str, user: str | None = None, csrf: str | None = None) -> str:
    account = ""
    if user is not None and csrf is not None:
        account = (
            f'<form method="post" action="/supervisor/logout" class="row">{csrf_input(csrf)}'
            f'<span>{e(user)}</span><button class="plain" type="submit">Log out</button></form>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{e(title)} · fieldsync</title><style>{STYLE}</style></head><body>"
        f'<header><a href="/supervisor/devices">fieldsync devices</a>{account}</header>'
        f"<main>{body}</main></body></html>"
    )


def message(text: str | None, error: bool = False) -> str:
    if not text:
        return ""
    return f'<p class="msg{" err" if error else ""}" role="status">{e(text)}</p>'


def status_badge(status: DeviceStatus) -> str:
    return f'<span class="status st-{status.value}">{e(STATUS_NAMES[status])}</span>'


# -- login ---------------------------------------------------------------------------
def login_page(csrf: str, next_url: str, name: str = "", error: str | None = None) -> str:
    body = (
        '<h1>Supervisor log in</h1><div class="card" style="max-width:24rem">'
        f"{message(error, error=True)}"
        f'<form method="post" action="/supervisor/login">{csrf_input(csrf)}'
        f'<input type="hidden" name="next" value="{e(next_url)}">'
        '<p><label for="name">User name</label>'
        f'<input id="name" name="name" autocomplete="username" required value="{e(name)}"></p>'
        '<p><label for="password">Password</label><input id="password" name="password" '
        'type="password" autocomplete="current-password" required></p>'
        '<button type="submit">Log in</button></form></div>'
    )
    return layout("Log in", body)


# -- device list ---------------------------------------------------------------------
@dataclass(frozen=True)
class ListView:
    user: str
    csrf: str
    query: listing.DeviceQuery
    devices: Sequence[Device]
    counts: Mapping[str, int]
    places: Sequence[tuple[str, str]]  # (id, name) the supervisor may filter by
    workers: Sequence[str]
    quiet_before: str  # devices last heard from before this are flagged


def list_page(view: ListView) -> str:
    query = view.query
    body = (
        f"<h1>Devices <span class=muted>({len(view.devices)})</span></h1>"
        f"{_status_chips(query, view.counts)}{_filters(view)}"
        f"{_to_collect(view)}{_device_table(view)}"
        f'<p class="row"><a href="/api/v1/devices?{_params(query, format="csv")}">'
        "Download CSV</a> · "
        f'<a href="/api/v1/devices?{_params(query)}">JSON</a></p>'
    )
    return layout("Devices", body, view.user, view.csrf)


def _to_collect(view: ListView) -> str:
    """A line over the list when phones listed are still with a disabled or removed worker."""
    count = sum(1 for d in view.devices if d.collect is not None)
    if not count or view.query.collect:
        return ""
    only = f"/supervisor/devices?{_params(replace(view.query, collect=True))}"
    return (
        f'<p class="msg err" role="status">{count} phone{"s" if count > 1 else ""} to collect: '
        "still assigned to a worker who was disabled or removed. "
        f'<a href="{only}">Show only them</a></p>'
    )


def _collect_badge(device: Device) -> str:
    if device.collect is None:
        return ""
    return f' <span class="collect" title="{e(device.collect)}">Collect this phone</span>'


def _params(query: listing.DeviceQuery, **extra: str) -> str:
    return e(urlencode([*listing.to_params(query), *extra.items()]))


def _status_chips(query: listing.DeviceQuery, counts: Mapping[str, int]) -> str:
    total = sum(counts.values())
    everything = replace(query, statuses=frozenset())
    chips = [
        f'<li><a class="{"" if query.statuses else "on"}" '
        f'href="/supervisor/devices?{_params(everything)}">All {total}</a></li>'
    ]
    for status in DeviceStatus:
        only = replace(query, statuses=frozenset({status}))
        on = "on" if query.statuses == {status} else ""
        chips.append(
            f'<li><a class="{on}" href="/supervisor/devices?{_params(only)}">'
            f"{e(STATUS_NAMES[status])} {counts.get(status.value, 0)}</a></li>"
        )
    return f'<ul class="chips" aria-label="Count per status">{"".join(chips)}</ul>'


def _options(values: Iterable[tuple[str, str]], chosen: str | None, empty: str) -> str:
    items = [f'<option value="">{e(empty)}</option>']
    for value, text in values:
        selected = " selected" if value == chosen else ""
        items.append(f'<option value="{e(value)}"{selected}>{e(text)}</option>')
    return "".join(items)


def _filters(view: ListView) -> str:
    query = view.query
    chosen = next(iter(query.statuses)).value if len(query.statuses) == 1 else None
    statuses = [(s.value, STATUS_NAMES[s]) for s in DeviceStatus]
    quiet = "" if query.quiet_days is None else str(query.quiet_days)
    return (
        '<form method="get" action="/supervisor/devices" class="card filters">'
        '<p style="margin:0"><label for="f-status">Status</label><select id="f-status" '
        f'name="status">{_options(statuses, chosen, "Any status")}</select></p>'
        '<p style="margin:0"><label for="f-worker">Worker</label><select id="f-worker" '
        f'name="worker">{_options(((w, w) for w in view.workers), query.worker, "Anyone")}'
        "</select></p>"
        '<p style="margin:0"><label for="f-place">Place</label><select id="f-place" '
        f'name="place">{_options(view.places, query.place, "All my places")}</select></p>'
        '<p style="margin:0"><label for="f-quiet">Not synced for (days)</label>'
        f'<input id="f-quiet" name="quiet_days" type="number" min="0" value="{e(quiet)}"></p>'
        f'<input type="hidden" name="sort" value="{e(query.sort)}">'
        f'<input type="hidden" name="order" value="{"desc" if query.descending else "asc"}">'
        '<p style="margin:0"><button type="submit">Filter</button></p></form>'
    )


def _device_table(view: ListView) -> str:
    if not view.devices:
        return '<p class="card">No devices match.</p>'
    heads = []
    for key, title in COLUMNS:
        arrow = ""
        if view.query.sort == key:
            arrow = " ▼" if view.query.descending else " ▲"
        link = f"/supervisor/devices?{_params(listing.with_sort(view.query, key))}"
        heads.append(f'<th scope="col"><a href="{link}">{e(title)}{arrow}</a></th>')
    rows = [_device_row(d, view.quiet_before) for d in view.devices]
    return (
        f'<table class="devices"><thead><tr>{"".join(heads)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _device_row(device: Device, quiet_before: str) -> str:
    quiet = device.status is DeviceStatus.ASSIGNED and (device.last_sync or "") < quiet_before
    last = e(_when(device.last_sync)) if device.last_sync else "never"
    last_cell = f'<span class="quiet">{last}</span>' if quiet else last
    worker = e(device.worker or "—")
    if device.worker and device.places:
        worker += f' <span class="muted">({e(", ".join(device.places))})</span>'
    worker += _collect_badge(device)
    return (
        f'<tr><td data-label="Serial"><a href="{device_url(device.serial)}">{e(device.serial)}'
        f'</a></td><td data-label="Status">{status_badge(device.status)}</td>'
        f'<td data-label="Worker">{worker}</td><td data-label="Model">{e(device.model or "—")}</td>'
        f'<td data-label="Phone">{e(device.phone or "—")}</td>'
        f'<td data-label="Last sync">{last_cell}</td></tr>'
    )


def _when(stamp: str | None) -> str:
    """An ISO timestamp as ``2024-05-01 14:03 UTC``."""
    if not stamp:
        return "—"
    return stamp[:16].replace("T", " ") + " UTC"


# -- one device ------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceView:
    user: str
    csrf: str
    device: Device
    history: Sequence[HistoryEntry]
    workers: Sequence[str]  # CHWs and supervisors this supervisor may assign it to
    can_manage: bool
    refusals: Sequence[Mapping[str, Any]] = ()
    notice: str | None = None
    error: str | None = None


def device_page(view: DeviceView) -> str:
    device = view.device
    body = (
        '<p><a href="/supervisor/devices">← All devices</a></p>'
        f"<h1>{e(device.serial)} {status_badge(device.status)}</h1>"
        f"{message(view.notice)}{message(view.error, error=True)}"
        f"{message(device.collect, error=True)}"
        f'<div class="card">{_details(device)}</div>'
    )
    if view.can_manage:
        body += _actions(view)
    body += _history(view.history) + _refusals(view.refusals)
    return layout(f"Device {device.serial}", body, view.user, view.csrf)


def _details(device: Device) -> str:
    pairs = [
        ("Status", STATUS_NAMES[device.status]),
        ("Worker", device.worker or "—"),
        *([("Worker account", device.worker_status.value)] if device.worker_status else []),
        ("Places", ", ".join(device.places) or "—"),
        ("Issued", device.issued or "—"),
        ("Last sync", _when(device.last_sync) if device.last_sync else "never"),
        ("Model", device.model or "—"),
        ("IMEI", device.imei + (f" / {device.imei2}" if device.imei2 else "")),
        ("SIM phone number", device.phone or "—"),
        ("OS version", device.os_version or "—"),
        ("App version", device.app_version or "—"),
        ("Notes", device.notes or "—"),
    ]
    return "<dl>" + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in pairs) + "</dl>"


def _actions(view: DeviceView) -> str:
    device, url = view.device, device_url(view.device.serial)
    parts = ['<h2>Actions</h2><div class="card">']
    if device.status in ASSIGNABLE:
        options = _options(((w, w) for w in view.workers if w != device.worker), None, "Choose…")
        verb = "Reassign to" if device.worker else "Assign to"
        parts.append(
            f'<form method="post" action="{url}/assign" class="filters">{csrf_input(view.csrf)}'
            f'<p style="margin:0"><label for="worker">{verb}</label>'
            f'<select id="worker" name="worker" required>{options}</select></p>'
            '<p style="margin:0"><label for="assign-reason">Reason</label>'
            '<input id="assign-reason" name="reason"></p>'
            f'<p style="margin:0"><button type="submit">{verb.split()[0]}</button></p></form>'
        )
    parts.append(_status_form(view, url))
    if device.status is DeviceStatus.ASSIGNED:
        parts.append(
            f'<form method="post" action="{url}/enrolment-code" style="margin-top:1rem">'
            f"{csrf_input(view.csrf)}<button type=submit class=plain>Issue enrolment code"
            "</button> <span class=muted>(for the app on this phone; replaces older codes)"
            "</span></form>"
        )
    parts.append("</div>")
    parts.append(_edit_form(view, url))
    return "".join(parts)


def _status_form(view: DeviceView, url: str) -> str:
    targets = actions(view.device.status)
    if not targets:
        return "<p>This device is retired; nothing more can change.</p>"
    buttons = []
    for target in targets:
        danger = " danger" if target in (DeviceStatus.LOST, DeviceStatus.STOLEN) else " plain"
        buttons.append(
            f'<button type="submit" name="status" value="{target.value}" class="{danger.strip()}">'
            f"{e(label(view.device.status, target))}</button>"
        )
    return (
        f'<form method="post" action="{url}/status" style="margin-top:1rem">'
        f'{csrf_input(view.csrf)}<p><label for="status-reason">Reason or note for the history'
        '</label><input id="status-reason" name="reason"></p>'
        f'<div class="row">{"".join(buttons)}</div>'
        '<p class="muted">Lost, stolen, in repair, retired or returned: the phone can no '
        "longer sync from its next request on.</p></form>"
    )


def _edit_form(view: DeviceView, url: str) -> str:
    device = view.device
    fields = (
        ("model", "Model", device.model),
        ("phone", "SIM phone number (+country code)", device.phone or ""),
        ("notes", "Notes", device.notes),
    )
    inputs = "".join(
        f'<p style="margin:0"><label for="edit-{k}">{e(t)}</label>'
        f'<input id="edit-{k}" name="{k}" value="{e(v)}"></p>'
        for k, t, v in fields
    )
    return (
        f'<h2>Details</h2><form method="post" action="{url}/edit" class="card filters">'
        f'{csrf_input(view.csrf)}{inputs}<p style="margin:0"><button type="submit" class="plain">'
        "Save details</button></p></form>"
    )


def _history(entries: Sequence[HistoryEntry]) -> str:
    if not entries:
        return ""
    rows = "".join(
        f'<tr><td data-label="When">{e(_when(h.at))}</td><td data-label="Who">{e(h.actor)}</td>'
        f'<td data-label="What">{e(h.action)}</td>'
        f'<td data-label="Status">{e(h.from_status or "—")} → {e(h.to_status)}</td>'
        f'<td data-label="Worker">{e(h.from_worker or "—")} → {e(h.to_worker or "—")}</td>'
        f'<td data-label="Reason">{e(h.reason)}</td></tr>'
        for h in entries
    )
    return (
        '<h2>History</h2><table class="devices"><thead><tr><th>When</th><th>Who</th>'
        "<th>What</th><th>Status</th><th>Worker</th><th>Reason</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _refusals(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    cells = "".join(
        f'<tr><td data-label="When">{e(_when(r["at"]))}</td><td data-label="Who">{e(r["user"])}'
        f'</td><td data-label="From">{e(r["ip"])}</td><td data-label="Answer">{e(r["status"])}'
        f'</td><td data-label="Why">{e(r["reason"])}</td></tr>'
        for r in rows
    )
    return (
        '<h2>Refused attempts (latest)</h2><table class="devices"><thead><tr><th>When</th>'
        "<th>Who</th><th>From</th><th>Answer</th><th>Why</th></tr></thead>"
        f"<tbody>{cells}</tbody></table>"
    )


# -- enrolment code -----------------------------------------------------------------------
def code_page(user: str, csrf: str, issued: IssuedCode, svg: str) -> str:
    body = (
        f'<p><a href="{device_url(issued.serial)}">← Device {e(issued.serial)}</a></p>'
        f"<h1>Enrolment code for {e(issued.serial)}</h1>"
        '<div class="card">'
        f"<p>For <strong>{e(issued.worker)}</strong>. In the app, scan the QR code or type "
        "the code. It works once, and expires at "
        f"<strong>{e(_when(issued.expires))}</strong>.</p>"
        f'<p class="code" id="enrolment-code">{e(issued.code)}</p>{svg}'
        '<p class="muted">This code is shown only now. Issuing another one voids it.</p></div>'
    )
    return layout("Enrolment code", body, user, csrf)


def error_page(title: str, text: str, user: str | None = None, csrf: str | None = None) -> str:
    body = f"<h1>{e(title)}</h1>{message(text, error=True)}"
    body += '<p><a href="/supervisor/devices">Back to the devices</a></p>'
    return layout(title, body, user, csrf)
