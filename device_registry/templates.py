"""HTML for the supervisor pages: plain functions returning strings, every value escaped.

No JavaScript and no framework: the pages must work on a cheap laptop and a
phone over a poor link.  Tables turn into one card per row on narrow screens
(``table.devices``).  Every page is drawn inside the console's frame
(:func:`device_registry.console.page`): its fixed words go through ``shell.t``,
its times through ``shell.when``, and places are shown by name (``names``: place
id -> name, from the caller's place tree).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlencode

from device_registry import listing
from device_registry.console import STYLE as STYLE
from device_registry.console import Shell, page
from device_registry.console import csrf_input as csrf_input
from device_registry.console import e as e
from device_registry.enrolment import IssuedCode
from device_registry.model import Device, HistoryEntry
from device_registry.status import TRANSITIONS, DeviceStatus, actions, label

STATUS_NAMES = {
    DeviceStatus.IN_STOCK: "In stock",
    DeviceStatus.ASSIGNED: "Assigned",
    DeviceStatus.LOST: "Lost",
    DeviceStatus.STOLEN: "Stolen",
    DeviceStatus.IN_REPAIR: "In repair",
    DeviceStatus.RETIRED: "Retired",
}
# Changes that end a phone's working life or report it gone: a reason and a tick first.
GRAVE = (DeviceStatus.LOST, DeviceStatus.STOLEN, DeviceStatus.RETIRED)
ASSIGNABLE = frozenset(s for s, to in TRANSITIONS.items() if DeviceStatus.ASSIGNED in to)
COLUMNS = (
    ("serial", "Serial"),
    ("status", "Status"),
    ("worker", "Worker"),
    ("model", "Model"),
    ("phone", "Phone"),
    ("last_sync", "Last sync"),
)
Names = Mapping[str, str]


def device_url(serial: str) -> str:
    return f"/supervisor/devices/{quote(serial, safe='')}"


def message(text: str | None, error: bool = False) -> str:
    if not text:
        return ""
    return f'<p class="msg{" err" if error else ""}" role="status">{e(text)}</p>'


def status_badge(shell: Shell, status: DeviceStatus) -> str:
    return f'<span class="status st-{status.value}">{e(shell.t(STATUS_NAMES[status]))}</span>'


def place_names(places: Iterable[str], names: Names) -> str:
    """Places by name (an id only when the tree has no name for it)."""
    return ", ".join(names.get(p, p) for p in places)


def field(ident: str, text: str, control: str) -> str:
    """A labelled form control, in a grid cell."""
    return f'<p class="field"><label for="{ident}">{e(text)}</label>{control}</p>'


# -- login and errors ---------------------------------------------------------------------
def login_page(shell: Shell, next_url: str, name: str = "", error: str | None = None) -> str:
    body = (
        '<div class="card" style="max-width:24rem">'
        f"{message(shell.t(error) if error else None, error=True)}"
        f'<form method="post" action="/supervisor/login">{csrf_input(shell.csrf)}'
        f'<input type="hidden" name="next" value="{e(next_url)}">'
        f'<p><label for="name">{e(shell.t("User name"))}</label>'
        f'<input id="name" name="name" autocomplete="username" required value="{e(name)}"></p>'
        f'<p><label for="password">{e(shell.t("Password"))}</label><input id="password" '
        'name="password" type="password" autocomplete="current-password" required></p>'
        f'<button type="submit">{e(shell.t("Log in"))}</button></form></div>'
    )
    return page(shell, shell.t("Supervisor log in"), body)


def error_page(shell: Shell, title: str, text: str) -> str:
    body = message(shell.t(text), error=True)
    if shell.user is not None:
        body += f'<p><a href="/supervisor/devices">{e(shell.t("Back to the devices"))}</a></p>'
    return page(shell, shell.t(title), body)


# -- device list ---------------------------------------------------------------------
@dataclass(frozen=True)
class ListView:
    query: listing.DeviceQuery
    devices: Sequence[Device]
    counts: Mapping[str, int]
    places: Sequence[tuple[str, str]]  # (id, name) the supervisor may filter by
    workers: Sequence[str]
    quiet_before: str  # devices last heard from before this are flagged
    names: Names  # place id -> name


def list_page(shell: Shell, view: ListView) -> str:
    query = view.query
    body = (
        f"{_search(shell, query)}{_status_chips(shell, query, view.counts)}{_filters(shell, view)}"
        f"{_to_collect(shell, view)}{_device_table(shell, view)}"
        f'<p class="row"><a href="/api/v1/devices?{_params(query, format="csv")}">'
        f"{e(shell.t('Download CSV'))}</a> · "
        f'<a href="/api/v1/devices?{_params(query)}">JSON</a></p>'
    )
    title = shell.t("Devices")
    return page(shell, title, body, f'{e(title)} <span class="muted">({len(view.devices)})</span>')


def _search(shell: Shell, query: listing.DeviceQuery) -> str:
    """One box for a serial, an IMEI or a phone number (the other filters are kept)."""
    kept = "".join(
        f'<input type="hidden" name="{e(k)}" value="{e(v)}">'
        for k, v in listing.to_params(replace(query, search=None))
    )
    return (
        f'<form method="get" action="/supervisor/devices" class="search" role="search">{kept}'
        + field(
            "f-search",
            shell.t("Serial, IMEI or phone number"),
            f'<input id="f-search" name="q" type="search" value="{e(query.search or "")}">',
        )
        + f'<button type="submit">{e(shell.t("Search"))}</button></form>'
    )


def _to_collect(shell: Shell, view: ListView) -> str:
    """A line over the list when phones listed are still with a disabled or removed worker."""
    count = sum(1 for d in view.devices if d.collect is not None)
    if not count or view.query.collect:
        return ""
    only = f"/supervisor/devices?{_params(replace(view.query, collect=True))}"
    text = shell.t("Phones to collect (still with a worker who was disabled or removed)")
    return (
        f'<p class="msg err" role="status">{e(text)}: {count}. '
        f'<a href="{only}">{e(shell.t("Show only them"))}</a></p>'
    )


def _collect_badge(shell: Shell, device: Device) -> str:
    if device.collect is None:
        return ""
    return (
        f' <span class="collect" title="{e(device.collect)}">'
        f"{e(shell.t('Collect this phone'))}</span>"
    )


def _params(query: listing.DeviceQuery, **extra: str) -> str:
    return e(urlencode([*listing.to_params(query), *extra.items()]))


def _status_chips(shell: Shell, query: listing.DeviceQuery, counts: Mapping[str, int]) -> str:
    total = sum(counts.values())
    everything = replace(query, statuses=frozenset())
    current = ' aria-current="true"'
    chips = [
        f'<li><a class="{"" if query.statuses else "on"}"{"" if query.statuses else current} '
        f'href="/supervisor/devices?{_params(everything)}">{e(shell.t("All"))} {total}</a></li>'
    ]
    for status in DeviceStatus:
        only = replace(query, statuses=frozenset({status}))
        on = query.statuses == {status}
        chips.append(
            f'<li><a class="{"on" if on else ""}"{current if on else ""} '
            f'href="/supervisor/devices?{_params(only)}">'
            f"{e(shell.t(STATUS_NAMES[status]))} {counts.get(status.value, 0)}</a></li>"
        )
    return f'<ul class="chips" aria-label="{e(shell.t("Count per status"))}">{"".join(chips)}</ul>'


def options(values: Iterable[tuple[str, str]], chosen: str | None, empty: str | None) -> str:
    """``<option>``s for ``(value, text)`` pairs, ``chosen`` selected; ``empty`` first if given."""
    items = [] if empty is None else [f'<option value="">{e(empty)}</option>']
    for value, text in values:
        selected = " selected" if value == chosen else ""
        items.append(f'<option value="{e(value)}"{selected}>{e(text)}</option>')
    return "".join(items)


def _filters(shell: Shell, view: ListView) -> str:
    query, t = view.query, shell.t
    chosen = next(iter(query.statuses)).value if len(query.statuses) == 1 else None
    statuses = [(s.value, t(STATUS_NAMES[s])) for s in DeviceStatus]
    quiet = "" if query.quiet_days is None else str(query.quiet_days)
    workers = ((w, w) for w in view.workers)
    search = ""
    if query.search is not None:
        search = f'<input type="hidden" name="q" value="{e(query.search)}">'
    return (
        '<form method="get" action="/supervisor/devices" class="card filters">'
        + field(
            "f-status",
            t("Status"),
            f'<select id="f-status" name="status">{options(statuses, chosen, t("Any status"))}'
            "</select>",
        )
        + field(
            "f-worker",
            t("Worker"),
            f'<select id="f-worker" name="worker">{options(workers, query.worker, t("Anyone"))}'
            "</select>",
        )
        + field(
            "f-place",
            t("Place"),
            f'<select id="f-place" name="place">'
            f"{options(view.places, query.place, t('All my places'))}</select>",
        )
        + field(
            "f-quiet",
            t("Not synced for (days)"),
            f'<input id="f-quiet" name="quiet_days" type="number" min="0" value="{e(quiet)}">',
        )
        + search
        + f'<input type="hidden" name="sort" value="{e(query.sort)}">'
        f'<input type="hidden" name="order" value="{"desc" if query.descending else "asc"}">'
        f'<p class="field"><button type="submit">{e(t("Filter"))}</button></p></form>'
    )


def _device_table(shell: Shell, view: ListView) -> str:
    if not view.devices:
        return f'<p class="card">{e(shell.t("No devices match."))}</p>'
    heads = []
    for key, title in COLUMNS:
        arrow, sort = "", ""
        if view.query.sort == key:
            arrow = " ▼" if view.query.descending else " ▲"
            sort = f' aria-sort="{"descending" if view.query.descending else "ascending"}"'
        link = f"/supervisor/devices?{_params(listing.with_sort(view.query, key))}"
        heads.append(f'<th scope="col"{sort}><a href="{link}">{e(shell.t(title))}{arrow}</a></th>')
    rows = [_device_row(shell, d, view) for d in view.devices]
    return (
        f'<table class="devices"><thead><tr>{"".join(heads)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _device_row(shell: Shell, device: Device, view: ListView) -> str:
    t = shell.t
    quiet = device.status is DeviceStatus.ASSIGNED and (device.last_sync or "") < view.quiet_before
    last = e(shell.when(device.last_sync)) if device.last_sync else e(t("never"))
    last_cell = f'<span class="quiet">{last}</span>' if quiet else last
    worker = e(device.worker or "—")
    if device.places:
        worker += f' <span class="muted">({e(place_names(device.places, view.names))})</span>'
    worker += _collect_badge(shell, device)
    return (
        f'<tr><td data-label="{e(t("Serial"))}"><a href="{device_url(device.serial)}">'
        f"{e(device.serial)}</a></td>"
        f'<td data-label="{e(t("Status"))}">{status_badge(shell, device.status)}</td>'
        f'<td data-label="{e(t("Worker"))}">{worker}</td>'
        f'<td data-label="{e(t("Model"))}">{e(device.model or "—")}</td>'
        f'<td data-label="{e(t("Phone"))}">{e(device.phone or "—")}</td>'
        f'<td data-label="{e(t("Last sync"))}">{last_cell}</td></tr>'
    )


# -- one device ------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceView:
    device: Device
    history: Sequence[HistoryEntry]
    workers: Sequence[str]  # CHWs and supervisors this supervisor may assign it to
    can_manage: bool
    names: Names  # place id -> name
    refusals: Sequence[Mapping[str, Any]] = ()
    notice: str | None = None
    error: str | None = None


def device_page(shell: Shell, view: DeviceView) -> str:
    device = view.device
    body = (
        f'<p><a href="/supervisor/devices">← {e(shell.t("All devices"))}</a></p>'
        f"{message(shell.t(view.notice) if view.notice else None)}"
        f"{message(view.error, error=True)}"
        f"{message(device.collect, error=True)}"
        f'<div class="card">{_details(shell, view)}</div>'
    )
    if view.can_manage:
        body += _actions(shell, view)
    body += _history(shell, view.history) + _refusals(shell, view.refusals)
    heading = f"{e(device.serial)} {status_badge(shell, device.status)}"
    return page(shell, f"{shell.t('Device')} {device.serial}", body, heading)


def _details(shell: Shell, view: DeviceView) -> str:
    device, t = view.device, shell.t
    pairs = [
        ("Status", t(STATUS_NAMES[device.status])),
        ("Worker", device.worker or "—"),
        *([("Worker account", t(device.worker_status.value))] if device.worker_status else []),
        ("Places", place_names(device.places, view.names) or "—"),
        ("Issued", device.issued or "—"),
        ("Last sync", shell.when(device.last_sync) if device.last_sync else t("never")),
        ("Model", device.model or "—"),
        ("IMEI", device.imei + (f" / {device.imei2}" if device.imei2 else "")),
        ("SIM phone number", device.phone or "—"),
        ("OS version", device.os_version or "—"),
        ("App version", device.app_version or "—"),
        ("Notes", device.notes or "—"),
    ]
    return "<dl>" + "".join(f"<dt>{e(t(k))}</dt><dd>{e(v)}</dd>" for k, v in pairs) + "</dl>"


def _actions(shell: Shell, view: DeviceView) -> str:
    device, url, t = view.device, device_url(view.device.serial), shell.t
    parts = [f'<h2>{e(t("Actions"))}</h2><div class="card">']
    if device.status in ASSIGNABLE:
        workers = ((w, w) for w in view.workers if w != device.worker)
        verb = "Reassign to" if device.worker else "Assign to"
        parts.append(
            f'<form method="post" action="{url}/assign" class="filters">{csrf_input(shell.csrf)}'
            + field(
                "worker",
                t(verb),
                f'<select id="worker" name="worker" required>{options(workers, None, t("Choose…"))}'
                "</select>",
            )
            + field("assign-reason", t("Reason"), '<input id="assign-reason" name="reason">')
            + f'<p class="field"><button type="submit">{e(t(verb.split(" to")[0]))}</button></p>'
            "</form>"
        )
    parts.append(_status_forms(shell, view, url))
    if device.status is DeviceStatus.ASSIGNED:
        parts.append(
            f'<form method="post" action="{url}/enrolment-code" style="margin-top:1rem">'
            f"{csrf_input(shell.csrf)}<button type=submit class=plain>"
            f"{e(t('Issue enrolment code'))}</button> <span class=muted>"
            f"{e(t('(for the app on this phone; replaces older codes)'))}</span></form>"
        )
    parts.append("</div>")
    parts.append(_edit_form(shell, view, url))
    return "".join(parts)


def _status_forms(shell: Shell, view: DeviceView, url: str) -> str:
    """Two forms: lost, stolen and retired ask for a reason and a confirming tick; the others
    (found, repaired, back to stock...) take an optional note."""
    targets = actions(view.device.status)
    if not targets:
        return f"<p>{e(shell.t('This device is retired; nothing more can change.'))}</p>"
    grave = [s for s in targets if s in GRAVE]
    light = [s for s in targets if s not in GRAVE]
    html = ""
    if light:
        html += (
            f'<form method="post" action="{url}/status" style="margin-top:1rem">'
            f"{csrf_input(shell.csrf)}"
            + field(
                "status-reason",
                shell.t("Reason or note for the history"),
                '<input id="status-reason" name="reason">',
            )
            + f'<div class="row">{_buttons(shell, view, light, "plain")}</div></form>'
        )
    if grave:
        html += (
            f'<form method="post" action="{url}/status" class="card" style="margin-top:1rem">'
            f"<h3>{e(shell.t('Report lost, stolen or retire'))}</h3>{csrf_input(shell.csrf)}"
            + field(
                "grave-reason",
                shell.t("Say why (required)"),
                '<input id="grave-reason" name="reason" required>',
            )
            + '<p><input type="checkbox" id="grave-confirm" name="confirm" value="yes" required '
            'style="width:auto"> <label for="grave-confirm" style="display:inline">'
            f"{e(shell.t('Yes, I am sure: this phone stops syncing at once.'))}</label></p>"
            f'<div class="row">{_buttons(shell, view, grave, "danger")}</div></form>'
        )
    note = shell.t(
        "Lost, stolen, in repair, retired or returned: the phone can no longer sync from its "
        "next request on."
    )
    return html + f'<p class="muted">{e(note)}</p>'


def _buttons(shell: Shell, view: DeviceView, targets: Sequence[DeviceStatus], css: str) -> str:
    return "".join(
        f'<button type="submit" name="status" value="{target.value}" class="{css}">'
        f"{e(shell.t(label(view.device.status, target)))}</button>"
        for target in targets
    )


def _edit_form(shell: Shell, view: DeviceView, url: str) -> str:
    device = view.device
    fields = (
        ("model", "Model", device.model),
        ("phone", "SIM phone number (+country code)", device.phone or ""),
        ("notes", "Notes", device.notes),
    )
    inputs = "".join(
        field(f"edit-{k}", shell.t(t), f'<input id="edit-{k}" name="{k}" value="{e(v)}">')
        for k, t, v in fields
    )
    return (
        f"<h2>{e(shell.t('Details'))}</h2>"
        f'<form method="post" action="{url}/edit" class="card filters">'
        f'{csrf_input(shell.csrf)}{inputs}<p class="field"><button type="submit" class="plain">'
        f"{e(shell.t('Save details'))}</button></p></form>"
    )


def _history(shell: Shell, entries: Sequence[HistoryEntry]) -> str:
    if not entries:
        return ""
    t = shell.t
    rows = "".join(
        f'<tr><td data-label="{e(t("When"))}">{e(shell.when(h.at))}</td>'
        f'<td data-label="{e(t("Who"))}">{e(h.actor)}</td>'
        f'<td data-label="{e(t("What"))}">{e(h.action)}</td>'
        f'<td data-label="{e(t("Status"))}">{e(_status_word(shell, h.from_status))} → '
        f"{e(_status_word(shell, h.to_status))}</td>"
        f'<td data-label="{e(t("Worker"))}">{e(h.from_worker or "—")} → {e(h.to_worker or "—")}'
        f'</td><td data-label="{e(t("Reason"))}">{e(h.reason)}</td></tr>'
        for h in entries
    )
    heads = "".join(
        f'<th scope="col">{e(t(h))}</th>'
        for h in ("When", "Who", "What", "Status", "Worker", "Reason")
    )
    return (
        f'<h2>{e(t("History"))}</h2><table class="devices"><thead><tr>{heads}</tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def _status_word(shell: Shell, value: str | None) -> str:
    """A stored status value (``in_stock``) in the reader's words (``In stock``)."""
    if value is None:
        return "—"
    try:
        return shell.t(STATUS_NAMES[DeviceStatus(value)])
    except ValueError:
        return value


def _refusals(shell: Shell, rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    t = shell.t
    cells = "".join(
        f'<tr><td data-label="{e(t("When"))}">{e(shell.when(r["at"]))}</td>'
        f'<td data-label="{e(t("Who"))}">{e(r["user"])}</td>'
        f'<td data-label="{e(t("From"))}">{e(r["ip"])}</td>'
        f'<td data-label="{e(t("Answer"))}">{e(r["status"])}</td>'
        f'<td data-label="{e(t("Why"))}">{e(r["reason"])}</td></tr>'
        for r in rows
    )
    heads = "".join(
        f'<th scope="col">{e(t(h))}</th>' for h in ("When", "Who", "From", "Answer", "Why")
    )
    return (
        f'<h2>{e(t("Refused attempts (latest)"))}</h2><table class="devices"><thead><tr>'
        f"{heads}</tr></thead><tbody>{cells}</tbody></table>"
    )


# -- enrolment code -----------------------------------------------------------------------
def code_page(shell: Shell, issued: IssuedCode, svg: str) -> str:
    t = shell.t
    how = t("In the app, scan the QR code or type the code. It works once, and expires at")
    once = t("This code is shown only now. Issuing another one voids it.")
    body = (
        f'<p><a href="{device_url(issued.serial)}">← {e(t("Device"))} {e(issued.serial)}</a></p>'
        f'<div class="card"><p>{e(t("For"))} <strong>{e(issued.worker)}</strong>. {e(how)} '
        f"<strong>{e(shell.when(issued.expires))}</strong>.</p>"
        f'<p class="code" id="enrolment-code">{e(issued.code)}</p>{svg}'
        f'<p class="muted">{e(once)}</p></div>'
    )
    return page(shell, f"{shell.t('Enrolment code')} {issued.serial}", body)
