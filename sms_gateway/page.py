"""The supervisors' SMS pages, in the console's frame: server-rendered, no JavaScript.

    /supervisor/sms              received (or sent: ``box=out``) messages, 50 a page,
                                 newest first; filters are choices, never free text
    /supervisor/sms/{id}         one received message: its parse, the records it
                                 created, the replies and reminders it caused

Sign-in, the CSRF token of the header's forms, the reader's language and the
time zone come from the device registry's pages (``staff_page``, ``shell_for``);
these functions only draw.  Every value is escaped; times go through
``shell.when``; places are shown by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from device_registry.console import Shell, e, page
from device_registry.templates import device_url, field, message, options, place_names
from sms_gateway.listing import KINDS, OUTCOMES, STATES

PAGE_SIZE = 50
GOOD = frozenset({"registered", "recorded", "delivered", "sent"})
BOXES = (("in", "Received"), ("out", "Sent"))
# The page's own filters, kept in the links that page and switch boxes.
KEPT = ("box", "outcome", "state", "kind", "form", "place", "worker", "from", "to")


@dataclass(frozen=True)
class ListView:
    box: str  # "in": received messages; "out": replies, notices and reminders
    rows: Sequence[Mapping[str, Any]]
    query: Mapping[str, str]  # the filters asked for (kept in links)
    places: Sequence[tuple[str, str]]  # (id, name) the reader may choose
    workers: Sequence[str]
    forms: Sequence[str]
    names: Mapping[str, str]  # place id -> name
    newer: int | None = None  # cursors of the neighbouring pages
    older: int | None = None


def message_url(message_id: object) -> str:
    return f"/supervisor/sms/{e(message_id)}"


def _link(query: Mapping[str, str], **changes: str | None) -> str:
    kept = {k: query[k] for k in KEPT if query.get(k)}
    kept.update({k: v for k, v in changes.items() if v is not None})
    for key in [k for k, v in changes.items() if v is None]:
        kept.pop(key, None)
    return e(f"/supervisor/sms?{urlencode(kept)}")


def _outcome(shell: Shell, outcome: str | None, problems: Sequence[str] = ()) -> str:
    if outcome is None:
        return e(shell.t("Received"))
    css = "good" if outcome in GOOD else "bad"
    text = f'<span class="{css}">{e(shell.t(outcome))}</span>'
    if outcome == "lost_phone":
        gone = ", ".join(shell.t(p.capitalize()) for p in problems if p in ("lost", "stolen"))
        text = f'<span class="flag">{e(shell.t("Lost or stolen phone"))}</span>'
        text += f" ({e(gone)})" if gone else ""
    return text


def _worker(row: Mapping[str, Any], names: Mapping[str, str]) -> str:
    worker = e(row.get("worker") or "—")
    if row.get("place"):
        worker += f' <span class="muted">({e(place_names([row["place"]], names))})</span>'
    return worker


# -- the list ----------------------------------------------------------------------------
def list_page(shell: Shell, view: ListView) -> str:
    body = (
        _boxes(shell, view)
        + _filters(shell, view)
        + (_incoming(shell, view) if view.box == "in" else _outgoing(shell, view))
        + _pager(shell, view)
    )
    return page(shell, shell.t("SMS messages"), body)


def _boxes(shell: Shell, view: ListView) -> str:
    items = []
    for box, name in BOXES:
        on = box == view.box
        current = ' aria-current="true"' if on else ""
        href = _link({"box": box}, box=box)
        css = "on" if on else ""
        items.append(f'<li><a class="{css}"{current} href="{href}">{e(shell.t(name))}</a></li>')
    return f'<ul class="chips" aria-label="{e(shell.t("SMS messages"))}">{"".join(items)}</ul>'


def _select(ident: str, name: str, text: str, choices: Any, chosen: str | None, any_: str) -> str:
    control = f'<select id="{ident}" name="{name}">{options(choices, chosen, any_)}</select>'
    return field(ident, text, control)


def _filters(shell: Shell, view: ListView) -> str:
    t, q = shell.t, view.query
    if view.box == "in":
        kind = _select(
            "s-outcome",
            "outcome",
            t("Outcome"),
            ((o, t(o)) for o in OUTCOMES),
            q.get("outcome"),
            t("Any"),
        ) + _select(
            "s-form",
            "form",
            t("Form"),
            ((f, f) for f in view.forms),
            q.get("form"),
            t("Any form"),
        )
    else:
        kind = _select(
            "s-state", "state", t("State"), ((s, t(s)) for s in STATES), q.get("state"), t("Any")
        ) + _select(
            "s-kind", "kind", t("Kind"), ((k, t(k)) for k in KINDS), q.get("kind"), t("Any")
        )
    who = _select(
        "s-place", "place", t("Place"), view.places, q.get("place"), t("All my places")
    ) + _select(
        "s-worker",
        "worker",
        t("Worker"),
        ((w, w) for w in view.workers),
        q.get("worker"),
        t("Anyone"),
    )
    dates = "".join(
        field(
            f"s-{name}",
            t(text),
            f'<input id="s-{name}" name="{name}" type="date" value="{e(q.get(name, ""))}">',
        )
        for name, text in (("from", "From date"), ("to", "To date"))
    )
    return (
        '<form method="get" action="/supervisor/sms" class="card filters">'
        f'<input type="hidden" name="box" value="{e(view.box)}">{kind}{who}{dates}'
        f'<p class="field"><button type="submit">{e(t("Filter"))}</button></p></form>'
    )


def _incoming(shell: Shell, view: ListView) -> str:
    t = shell.t
    if not view.rows:
        return f'<p class="card">{e(t("No messages match."))}</p>'
    heads = ("Received", "From", "Worker", "Message", "Form", "Outcome", "Reply")
    rows = "".join(
        f'<tr><td data-label="{e(t("Received"))}"><a href="{message_url(r["id"])}">'
        f"{e(shell.when(r['received_at']))}</a></td>"
        f'<td data-label="{e(t("From"))}">{e(r["phone"] or "—")}</td>'
        f'<td data-label="{e(t("Worker"))}">{_worker(r, view.names)}</td>'
        f'<td data-label="{e(t("Message"))}">{e(r["content"])}</td>'
        f'<td data-label="{e(t("Form"))}">{e(r["form"] or "—")}</td>'
        f'<td data-label="{e(t("Outcome"))}">{_outcome(shell, r["outcome"], r["problems"])}</td>'
        f'<td data-label="{e(t("Reply"))}">{e(r.get("reply") or "—")}</td></tr>'
        for r in view.rows
    )
    return _table(shell, heads, rows)


def _outgoing(shell: Shell, view: ListView) -> str:
    t = shell.t
    if not view.rows:
        return f'<p class="card">{e(t("No messages match."))}</p>'
    heads = ("Due", "To", "Worker", "Kind", "Message", "State", "Reason")
    rows = "".join(
        f'<tr><td data-label="{e(t("Due"))}">{e(shell.when(r["due_at"]))}</td>'
        f'<td data-label="{e(t("To"))}">{e(r["phone"] or "—")}</td>'
        f'<td data-label="{e(t("Worker"))}">{_worker(r, view.names)}</td>'
        f'<td data-label="{e(t("Kind"))}">{e(t(r["kind"]))}</td>'
        f'<td data-label="{e(t("Message"))}">{e(r["content"])}</td>'
        f'<td data-label="{e(t("State"))}">{_outcome(shell, r["state"])}</td>'
        f'<td data-label="{e(t("Reason"))}">{e(r["reason"] or "—")}</td></tr>'
        for r in view.rows
    )
    return _table(shell, heads, rows)


def _table(shell: Shell, heads: Sequence[str], rows: str) -> str:
    cells = "".join(f'<th scope="col">{e(shell.t(h))}</th>' for h in heads)
    return f'<table class="devices"><thead><tr>{cells}</tr></thead><tbody>{rows}</tbody></table>'


def _pager(shell: Shell, view: ListView) -> str:
    newer = older = "<span></span>"
    if view.newer is not None:
        href = _link(view.query, after=str(view.newer), before=None)
        newer = f'<a href="{href}" rel="prev">← {e(shell.t("Newer"))}</a>'
    if view.older is not None:
        href = _link(view.query, before=str(view.older), after=None)
        older = f'<a href="{href}" rel="next">{e(shell.t("Older"))} →</a>'
    return f'<nav class="pager" aria-label="{e(shell.t("Pages"))}">{newer}{older}</nav>'


# -- one message --------------------------------------------------------------------------
def message_page(
    shell: Shell,
    row: Mapping[str, Any],
    caused: Sequence[Mapping[str, Any]],
    names: Mapping[str, str],
) -> str:
    t = shell.t
    device = (
        f'<a href="{device_url(row["device"])}">{e(row["device"])}</a>' if row["device"] else "—"
    )
    pairs = [
        ("Received", e(shell.when(row["received_at"]))),
        ("From", e(row["phone"] or "—")),
        ("Worker", e(row["worker"] or "—")),
        ("Device", device),
        ("Place", e(place_names([row["place"]], names) if row["place"] else "—")),
        ("Message", f"<pre>{e(row['content'])}</pre>"),
        ("Form", e(row["form"] or "—")),
        ("Outcome", _outcome(shell, row["outcome"], row["problems"])),
        ("Patient ID", e(row["patient_id"] or "—")),
        ("Problems", e(", ".join(row["problems"]) or "—")),
        ("Detail", e(row.get("detail") or "—")),
        ("Reply", e(row.get("reply") or "—")),
    ]
    details = "".join(f"<dt>{e(t(k))}</dt><dd>{v}</dd>" for k, v in pairs)
    docs = "".join(f"<li><code>{e(d)}</code></li>" for d in row["docs"])
    body = (
        f'<p><a href="/supervisor/sms">← {e(t("All messages"))}</a></p>'
        + (message(t("Lost or stolen phone"), error=True) if row["outcome"] == "lost_phone" else "")
        + f'<h2>{e(t("Parse"))}</h2><div class="card"><dl>{details}</dl></div>'
        + f"<h2>{e(t('Records created'))}</h2>"
        + (f'<ul class="card">{docs}</ul>' if docs else f'<p class="card">{e(t("None."))}</p>')
        + f"<h2>{e(t('Replies and reminders'))}</h2>"
        + _caused(shell, caused)
    )
    return page(shell, f"{t('Message')} {row['id']}", body)


def _caused(shell: Shell, rows: Sequence[Mapping[str, Any]]) -> str:
    t = shell.t
    if not rows:
        return f'<p class="card">{e(t("None."))}</p>'
    heads = ("Due", "Kind", "Message", "State", "Attempt", "Reason")
    cells = "".join(
        f'<tr><td data-label="{e(t("Due"))}">{e(shell.when(r["due_at"]))}</td>'
        f'<td data-label="{e(t("Kind"))}">{e(t(r["kind"]))}</td>'
        f'<td data-label="{e(t("Message"))}">{e(r["content"])}</td>'
        f'<td data-label="{e(t("State"))}">{_outcome(shell, r["state"])}</td>'
        f'<td data-label="{e(t("Attempt"))}">{e(r["attempt"])}</td>'
        f'<td data-label="{e(t("Reason"))}">{e(r["reason"] or "—")}</td></tr>'
        for r in rows
    )
    return _table(shell, heads, cells)
