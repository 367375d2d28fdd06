"""The Workers section of the supervisor console (server-rendered HTML, no JavaScript).

    GET /supervisor/workers           the caller's workers: filters, sortable columns, badges, CSV
    GET /supervisor/workers/{name}    one worker: places, phones, 8 weeks of syncs and documents
                                      (SVG bar charts with a table), refused records

The rows come from :mod:`device_registry.workers` (the same as ``/api/v1/workers``).
A worker outside the caller's read scope is answered 404, as one that does not
exist, so a supervisor cannot learn another district's names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from urllib.parse import quote, urlencode

from aiohttp import web

from device_registry import console
from device_registry.console import Shell
from device_registry.pages import Page, shell_for, staff_page
from device_registry.refusal_pages import refusals_section
from device_registry.templates import device_url, e, status_badge
from device_registry.workers import (
    WorkerQuery,
    WorkerRow,
    activity_days,
    parse_query,
    select,
    worker_rows,
)
from sync.errors import BadRequest, FieldsyncError, NotFound
from sync.refusals import REFUSALS
from sync.refusals.ports import Refusal
from sync.refusals.routes import audit_read
from sync.replication.context import Caller

PAGE_SIZE = 100  # workers per page (the CSV and the API give every row)
QUIET_DAYS = 7  # the "not synced" badge when no quiet_days filter is given
HISTORY_DAYS = 56  # 8 weeks
REFUSALS_SHOWN = 50  # the newest refused records on a worker's page (all: /supervisor/refusals)
WORDS = {
    "Place": "Eneo",
    "All my places": "Maeneo yangu yote",
    "Not synced for (days)": "Hajasawazisha kwa (siku)",
    "Has refusals": "Ana rekodi zilizokataliwa",
    "Over the size warning": "Zaidi ya kiwango cha ukubwa",
    "Any": "Yoyote",
    "Yes": "Ndiyo",
    "No": "Hapana",
    "Filter": "Chuja",
    "Download CSV": "Pakua CSV",
    "Name": "Jina",
    "Places": "Maeneo",
    "Phones": "Simu",
    "Last sync": "Usawazishaji wa mwisho",
    "Documents in set": "Nyaraka kwenye seti",
    "Received (7 days)": "Zilizopokelewa (siku 7)",
    "Refused": "Zilizokataliwa",
    "App version": "Toleo la programu",
    "never": "hajawahi",
    "Never synced": "Hajawahi kusawazisha",
    "Not synced for {days}+ days": "Hajasawazisha kwa siku {days}+",
    "Over size": "Ukubwa umezidi",
    "No workers match.": "Hakuna mhudumu anayelingana.",
    "{count} workers": "Wahudumu {count}",
    "Syncs per day": "Usawazishaji kwa siku",
    "Documents per day": "Nyaraka kwa siku",
    "Last 8 weeks": "Wiki 8 zilizopita",
    "Week starting": "Wiki inayoanza",
    "Syncs": "Usawazishaji",
    "Documents": "Nyaraka",
    "No phone assigned.": "Hakuna simu aliyopewa.",
    "Serial": "Namba ya simu",
    "Status": "Hali",
    "None recorded.": "Hakuna iliyorekodiwa.",
    "Bad filter": "Kichujio kibaya",
    "Disabled account": "Akaunti imezimwa",
    "{total} in 8 weeks; the busiest day {day} with {most}.": (
        "{total} katika wiki 8; siku yenye shughuli nyingi {day} ikiwa na {most}."
    ),
    "None in the last 8 weeks.": "Hakuna katika wiki 8 zilizopita.",
    "Back to workers": "Rudi kwa wahudumu",
    "Workers {first} to {last} of {count}": "Wahudumu {first} hadi {last} kati ya {count}",
    "Previous": "Iliyotangulia",
    "Next": "Inayofuata",
    "Page {n} of {of}": "Ukurasa {n} kati ya {of}",
    "Pages": "Kurasa",
}
console.SWAHILI.update(WORDS)

COLUMNS = (
    ("name", "Name"),
    (None, "Places"),
    (None, "Phones"),
    ("last_sync", "Last sync"),
    ("docs_in_set", "Documents in set"),
    ("received_7d", "Received (7 days)"),
    ("refused", "Refused"),
    (None, "App version"),
)


def worker_url(name: str) -> str:
    return f"/supervisor/workers/{quote(name, safe='')}"


# -- the list -----------------------------------------------------------------------
@staff_page
async def workers_page(request: web.Request, page: Page, caller: Caller) -> web.StreamResponse:
    shell = shell_for(page, caller, "workers")
    try:
        query = parse_query(request.query, caller)
        number = _page_number(request.query.get("page"))
    except FieldsyncError as exc:
        body = f'<p class="msg err" role="alert">{e(exc.reason)}</p>'
        body += f'<p><a href="/supervisor/workers">{e(shell.t("Back to workers"))}</a></p>'
        return page.respond(console.page(shell, shell.t("Bad filter"), body), exc.status)
    moment = dt.datetime.now(dt.UTC)
    rows = select(await worker_rows(request.app, caller), query, caller.tree, moment)
    days = QUIET_DAYS if query.quiet_days is None else query.quiet_days
    quiet_before = (moment - dt.timedelta(days=days)).isoformat(timespec="seconds")
    places = sorted(
        ((p.name, p.id) for p in caller.tree.places.values() if caller.scope.can_read(p.id)),
    )
    last_page = max(1, -(-len(rows) // PAGE_SIZE))
    number = min(number, last_page)
    shown = rows[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
    csv_link = f"/api/v1/workers?{e(urlencode({**query.params(), 'format': 'csv'}))}"
    body = (
        _filters(shell, query, places)
        + f'<p class="row"><span role="status">{e(_showing(shell, number, len(rows)))}</span>'
        f'<a href="{csv_link}" download>{e(shell.t("Download CSV"))}</a></p>'
        + _table(shell, query, shown, quiet_before, days)
        + _pager(shell, query, number, last_page)
    )
    return page.respond(console.page(shell, shell.t("Workers"), body))


def _page_number(raw: str | None) -> int:
    if not raw:
        return 1
    if not raw.isdigit() or len(raw) > 6 or int(raw) < 1:
        raise BadRequest("page must be a whole number from 1 (or leave it out for the first)")
    return int(raw)


def _showing(shell: Shell, number: int, total: int) -> str:
    if total <= PAGE_SIZE:
        return shell.t("{count} workers").format(count=f"{total:,}")
    first = (number - 1) * PAGE_SIZE + 1
    last = min(total, number * PAGE_SIZE)
    text = shell.t("Workers {first} to {last} of {count}")
    return text.format(first=f"{first:,}", last=f"{last:,}", count=f"{total:,}")


def _pager(shell: Shell, query: WorkerQuery, number: int, last_page: int) -> str:
    if last_page == 1:
        return ""

    def link(to: int, text: str, rel: str) -> str:
        href = f"/supervisor/workers?{e(urlencode(query.params(page=str(to))))}"
        return f'<a href="{href}" rel="{rel}">{e(shell.t(text))}</a>'

    parts = []
    if number > 1:
        parts.append(link(number - 1, "Previous", "prev"))
    parts.append(f"<span>{e(shell.t('Page {n} of {of}').format(n=number, of=last_page))}</span>")
    if number < last_page:
        parts.append(link(number + 1, "Next", "next"))
    return f'<nav class="row" aria-label="{e(shell.t("Pages"))}">{"".join(parts)}</nav>'


def _options(shell: Shell, values: Sequence[tuple[str, str]], chosen: str, empty: str) -> str:
    items = [f'<option value="">{e(shell.t(empty))}</option>']
    for value, text in values:
        selected = " selected" if value == chosen else ""
        items.append(f'<option value="{e(value)}"{selected}>{e(text)}</option>')
    return "".join(items)


def _select(shell: Shell, name: str, label: str, options: str) -> str:
    return (
        f'<p style="margin:0"><label for="f-{name}">{e(shell.t(label))}</label>'
        f'<select id="f-{name}" name="{name}">{options}</select></p>'
    )


def _filters(shell: Shell, query: WorkerQuery, places: Sequence[tuple[str, str]]) -> str:
    chosen = query.params()
    yes_no = [("yes", shell.t("Yes")), ("no", shell.t("No"))]
    place_options = [(pid, name) for name, pid in places]
    quiet = chosen.get("quiet_days", "")
    return (
        '<form method="get" action="/supervisor/workers" class="card filters">'
        + _select(
            shell,
            "place",
            "Place",
            _options(shell, place_options, chosen.get("place", ""), "All my places"),
        )
        + '<p style="margin:0"><label for="f-quiet_days">'
        f"{e(shell.t('Not synced for (days)'))}</label>"
        f'<input id="f-quiet_days" name="quiet_days" type="number" min="0" max="3650" '
        f'inputmode="numeric" value="{e(quiet)}"></p>'
        + _select(
            shell,
            "has_refusals",
            "Has refusals",
            _options(shell, yes_no, chosen.get("has_refusals", ""), "Any"),
        )
        + _select(
            shell,
            "over_size",
            "Over the size warning",
            _options(shell, yes_no, chosen.get("over_size", ""), "Any"),
        )
        + f'<input type="hidden" name="sort" value="{e(chosen.get("sort", "name"))}">'
        f'<p style="margin:0"><button type="submit">{e(shell.t("Filter"))}</button></p></form>'
    )


def _table(
    shell: Shell, query: WorkerQuery, rows: Sequence[WorkerRow], quiet_before: str, days: int
) -> str:
    if not rows:
        return f'<p class="card">{e(shell.t("No workers match."))}</p>'
    heads = [_head(shell, query, key, title) for key, title in COLUMNS]
    labels = {title: f'<td data-label="{e(shell.t(title))}">' for _, title in COLUMNS}
    words = {w: e(shell.t(w)) for w in ("never", "No phone assigned.")}
    body = "".join(_row(shell, r, quiet_before, days, labels, words) for r in rows)
    return (
        f'<table class="devices workers"><thead><tr>{"".join(heads)}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _head(shell: Shell, query: WorkerQuery, key: str | None, title: str) -> str:
    if key is None:
        return f'<th scope="col">{e(shell.t(title))}</th>'
    current = query.sort == key
    descending = current and not query.descending
    sort = ("-" if descending else "") + key
    link = f"/supervisor/workers?{e(urlencode(query.params(sort=sort)))}"
    aria = ""
    if current:
        aria = f' aria-sort="{"descending" if query.descending else "ascending"}"'
    arrow = (" ▼" if query.descending else " ▲") if current else ""
    return f'<th scope="col"{aria}><a href="{link}">{e(shell.t(title))}{arrow}</a></th>'


def _row(
    shell: Shell,
    row: WorkerRow,
    quiet_before: str,
    days: int,
    labels: dict[str, str],
    words: dict[str, str],
) -> str:
    """One worker; ``labels`` open each cell (the card's label), ``words`` are translated."""
    phones = ", ".join(f'<a href="{device_url(d.serial)}">{e(d.serial)}</a>' for d in row.devices)
    cells = (
        ("Name", _name_cell(shell, row, quiet_before, days)),
        ("Places", e(", ".join(row.place_names))),
        ("Phones", phones or words["No phone assigned."]),
        ("Last sync", e(shell.when(row.last_sync)) if row.last_sync else words["never"]),
        ("Documents in set", f"{row.docs_in_set:,}"),
        ("Received (7 days)", f"{row.received_7d:,}"),
        ("Refused", f"{row.refused:,}"),
        ("App version", e(row.app_version or "—")),
    )
    return "<tr>" + "".join(f"{labels[k]}{html}</td>" for k, html in cells) + "</tr>"


def _name_cell(shell: Shell, row: WorkerRow, quiet_before: str, days: int) -> str:
    link = f'<a href="{worker_url(row.name)}">{e(row.name)}</a>'
    return link + _badges(shell, row, quiet_before, days)


def _badges(shell: Shell, row: WorkerRow, quiet_before: str, days: int) -> str:
    found = []
    if row.last_sync is None:
        found.append(f'<span class="quiet">{e(shell.t("Never synced"))}</span>')
    elif row.last_sync < quiet_before:
        text = shell.t("Not synced for {days}+ days").format(days=days)
        found.append(f'<span class="quiet">{e(text)}</span>')
    if row.over_size:
        found.append(f'<span class="collect">{e(shell.t("Over size"))}</span>')
    if row.account.value != "active":
        found.append(f'<span class="status">{e(shell.t("Disabled account"))}</span>')
    return f"<br>{' '.join(found)}" if found else ""


# -- one worker ---------------------------------------------------------------------
@staff_page
async def worker_page(request: web.Request, page: Page, caller: Caller) -> web.StreamResponse:
    name = request.match_info["name"]
    shell = shell_for(page, caller, "workers")
    found = [r for r in await worker_rows(request.app, caller, only=name) if r.name == name]
    if not found:
        raise NotFound(f"No worker {name!r} among your workers.")
    row = found[0]
    history = (await activity_days(request.app, [name], HISTORY_DAYS)).get(name, [])
    today = dt.datetime.now(dt.UTC).date()
    days = [
        (today - dt.timedelta(days=HISTORY_DAYS - 1 - i)).isoformat() for i in range(HISTORY_DAYS)
    ]
    syncs = {d: 0 for d in days}
    docs = {d: 0 for d in days}
    for bucket in history:
        if bucket.day in syncs:
            syncs[bucket.day] += bucket.syncs
            docs[bucket.day] += bucket.docs
    refused = await _refusals(request.app, caller, name)
    body = (
        _summary(shell, row)
        + _phones(shell, row)
        + f"<h2>{e(shell.t('Last 8 weeks'))}</h2>"
        + bar_chart(shell, "chart-syncs", shell.t("Syncs per day"), days, [syncs[d] for d in days])
        + bar_chart(
            shell, "chart-docs", shell.t("Documents per day"), days, [docs[d] for d in days]
        )
        + _weeks(shell, days, syncs, docs)
        + refusals_section(shell, refused)
    )
    return page.respond(console.page(shell, row.name, body))


def _summary(shell: Shell, row: WorkerRow) -> str:
    items = [
        ("Places", ", ".join(row.place_names) or "—"),
        ("Last sync", shell.when(row.last_sync) if row.last_sync else shell.t("never")),
        ("Documents in set", f"{row.docs_in_set:,}"),
        ("Received (7 days)", f"{row.received_7d:,}"),
        ("App version", row.app_version or "—"),
    ]
    dl = "".join(f"<dt>{e(shell.t(k))}</dt><dd>{e(v)}</dd>" for k, v in items)
    badges = _badges(shell, row, _week_ago(), QUIET_DAYS).removeprefix("<br>")
    return f'<div class="card"><dl>{dl}</dl>{f"<p>{badges}</p>" if badges else ""}</div>'


def _week_ago() -> str:
    moment = dt.datetime.now(dt.UTC) - dt.timedelta(days=QUIET_DAYS)
    return moment.isoformat(timespec="seconds")


def _phones(shell: Shell, row: WorkerRow) -> str:
    title = f"<h2>{e(shell.t('Phones'))}</h2>"
    if not row.devices:
        return title + f'<p class="card">{e(shell.t("No phone assigned."))}</p>'
    heads = "".join(
        f'<th scope="col">{e(shell.t(h))}</th>'
        for h in ("Serial", "Status", "Last sync", "App version")
    )
    rows = "".join(
        f'<tr><td data-label="{e(shell.t("Serial"))}"><a href="{device_url(d.serial)}">'
        f"{e(d.serial)}</a></td>"
        f'<td data-label="{e(shell.t("Status"))}">{status_badge(shell, d.status)}</td>'
        f'<td data-label="{e(shell.t("Last sync"))}">'
        f"{e(shell.when(d.last_sync) if d.last_sync else shell.t('never'))}</td>"
        f'<td data-label="{e(shell.t("App version"))}">{e(d.app_version or "—")}</td></tr>'
        for d in row.devices
    )
    table = f"<thead><tr>{heads}</tr></thead><tbody>{rows}</tbody>"
    return f'{title}<table class="devices">{table}</table>'


def bar_chart(
    shell: Shell, ident: str, title: str, days: Sequence[str], values: Sequence[int]
) -> str:
    """A bar per day, drawn on the server; its title and a one-line summary are its text."""
    width, height, top = 560, 120, 100
    step = width / max(len(values), 1)
    most = max(values, default=0)
    bars = []
    for i, (day, value) in enumerate(zip(days, values, strict=True)):
        tall = 0.0 if most == 0 else top * value / most
        bars.append(
            f'<rect x="{i * step + 1:.1f}" y="{top - tall:.1f}" width="{step - 2:.1f}" '
            f'height="{tall:.1f}" fill="#0b5560"><title>{e(day)}: {value}</title></rect>'
        )
    summary = _chart_summary(shell, days, values)
    first, last = (days[0], days[-1]) if days else ("", "")
    return (
        f'<figure class="card" style="margin:0 0 1rem"><svg role="img" '
        f'aria-labelledby="{ident}-t {ident}-d" viewBox="0 0 {width} {height}" '
        f'style="width:100%;max-width:44rem;height:auto;display:block">'
        f'<title id="{ident}-t">{e(title)}</title><desc id="{ident}-d">{e(summary)}</desc>'
        f'<line x1="0" y1="{top}.5" x2="{width}" y2="{top}.5" stroke="#4a555c"/>'
        f"{''.join(bars)}"
        f'<text x="0" y="{height - 4}" font-size="16" fill="#4a555c">{e(first)}</text>'
        f'<text x="{width}" y="{height - 4}" font-size="16" fill="#4a555c" '
        f'text-anchor="end">{e(last)}</text></svg>'
        f"<figcaption><strong>{e(title)}</strong>: {e(summary)}</figcaption></figure>"
    )


def _chart_summary(shell: Shell, days: Sequence[str], values: Sequence[int]) -> str:
    total = sum(values)
    if total == 0:
        return shell.t("None in the last 8 weeks.")
    most = max(values)
    day = days[list(values).index(most)]
    text = shell.t("{total} in 8 weeks; the busiest day {day} with {most}.")
    return text.format(total=total, day=day, most=most)


def _weeks(shell: Shell, days: Sequence[str], syncs: dict[str, int], docs: dict[str, int]) -> str:
    rows = []
    for start in range(0, len(days), 7):
        week = days[start : start + 7]
        rows.append(
            f'<tr><td data-label="{e(shell.t("Week starting"))}">{e(week[0])}</td>'
            f'<td data-label="{e(shell.t("Syncs"))}">{sum(syncs[d] for d in week)}</td>'
            f'<td data-label="{e(shell.t("Documents"))}">{sum(docs[d] for d in week)}</td></tr>'
        )
    heads = "".join(
        f'<th scope="col">{e(shell.t(h))}</th>' for h in ("Week starting", "Syncs", "Documents")
    )
    return (
        f'<table class="weeks"><caption class="muted">{e(shell.t("Last 8 weeks"))}</caption>'
        f"<thead><tr>{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


async def _refusals(app: web.Application, caller: Caller, name: str) -> Sequence[Refusal]:
    """The worker's newest refused records, read (and audited) for their page."""
    if REFUSALS not in app:
        return ()
    found = await app[REFUSALS].for_workers([name], REFUSALS_SHOWN)
    audit_read(app, caller, "refusals_read", found)
    return found


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/supervisor/workers", workers_page)
    app.router.add_get("/supervisor/workers/{name}", worker_page)
