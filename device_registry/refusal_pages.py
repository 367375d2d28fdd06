"""The Refused records pages: what phones sent that the server would not take, and why.

    GET /supervisor/refusals          the list (newest first): ?worker= (a select), ?before=
    GET /supervisor/refusals/{id}     one refused record, its body opened (audited)

Both are for supervisors (their workers: :func:`sync.refusals.routes.visible_workers`)
and admins.  A record of a worker the reader may not see is answered exactly as
a missing one (404).  The list is audited as ``refusals_read``; opening a record,
which shows the refused body (sealed at rest, possibly patient data), as
``refusal_opened``.

:func:`refusals_section` draws a worker's refused records for the worker's page
(``/supervisor/workers/{name}``): ``refusals_section(shell, refusals)`` with the
refusals from ``app[REFUSALS].for_workers([name], limit)``.

The fixed words are in :data:`SWAHILI_REFUSALS`, merged into the console's
catalogue at import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from urllib.parse import urlencode

import orjson
from aiohttp import web

from device_registry import console, templates
from device_registry.console import Shell
from device_registry.pages import Page, shell_for, staff_page
from device_registry.templates import e
from sync.appkeys import ACCOUNTS
from sync.errors import BadRequest, NotFound
from sync.refusals import REFUSALS
from sync.refusals.ports import Refusal
from sync.refusals.reasons import words
from sync.refusals.routes import (
    DEFAULT_LIMIT,
    RECORDER,
    Query,
    audit_read,
    next_cursor,
    refusals_for,
    visible_workers,
)
from sync.replication.context import Caller

SWAHILI_REFUSALS: dict[str, str] = {
    "When": "Lini",
    "Worker": "Mhudumu",
    "Device": "Kifaa",
    "Document": "Hati",
    "Reason": "Sababu",
    "What to do": "Cha kufanya",
    "Times": "Mara",
    "Everyone": "Wote",
    "Show": "Onyesha",
    "Older records": "Rekodi za zamani zaidi",
    "Newest records": "Rekodi mpya zaidi",
    "No refused records.": "Hakuna rekodi zilizokataliwa.",
    "Refused record": "Rekodi iliyokataliwa",
    "Revision": "Toleo",
    "Details": "Maelezo",
    "First refused": "Ilikataliwa mara ya kwanza",
    "Last refused": "Ilikataliwa mara ya mwisho",
    "What the phone sent": "Kile simu ilichotuma",
    "No body was kept.": "Hakuna maudhui yaliyohifadhiwa.",
    "Only the first part was kept": "Sehemu ya kwanza tu ilihifadhiwa",
    "bytes in all": "baiti kwa jumla",
    "Back to the refused records": "Rudi kwenye rekodi zilizokataliwa",
    "Records a phone sent that the server would not take. The phone keeps them and sends "
    "them again at each sync until they are corrected.": "Rekodi ambazo simu ilituma lakini "
    "seva haikuzipokea. Simu inazihifadhi na kuzituma tena kila inaposawazisha hadi "
    "zitakaporekebishwa.",
    "Outside the worker's area": "Nje ya eneo la mhudumu",
    "Unknown place": "Mahali pasipojulikana",
    "Place retired": "Mahali pamestaafishwa",
    "No place given": "Hakuna mahali palipotajwa",
    "Does not match its form": "Hailingani na fomu yake",
    "Refused by a check": "Imekataliwa na ukaguzi",
    "Too large": "Kubwa mno",
    "Not a valid record": "Si rekodi halali",
    "Photo or file missing": "Picha au faili haipo",
    "Unreadable request": "Ombi lisilosomeka",
    "Refused": "Imekataliwa",
    "The record names a place this worker may not write to. Check the worker's places on "
    "their account; if the record is right, a supervisor of that place must enter it.": (
        "Rekodi inataja mahali ambapo mhudumu huyu hawezi kuandika. Angalia maeneo ya "
        "mhudumu kwenye akaunti yake; kama rekodi ni sahihi, msimamizi wa mahali hapo "
        "aiingize."
    ),
    "The record names a place the server does not know. Update the app's place list (sync "
    "again), or ask the administrator to add the place.": (
        "Rekodi inataja mahali ambapo seva haipajui. Sasisha orodha ya maeneo ya programu "
        "(sawazisha tena), au muombe msimamizi wa mfumo aongeze mahali hapo."
    ),
    "The record names a place that is retired. Enter the record again under the place that "
    "replaced it.": (
        "Rekodi inataja mahali palipostaafishwa. Ingiza rekodi tena chini ya mahali "
        "palipochukua nafasi yake."
    ),
    "The record has no place. Update the app; if it still happens, report it to the "
    "administrator with the document id.": (
        "Rekodi haina mahali. Sasisha programu; ikiendelea, mjulishe msimamizi wa mfumo "
        "pamoja na kitambulisho cha hati."
    ),
    "A field breaks the form's rule shown above. Ask the worker to correct the record on "
    "the phone; it is sent again at the next sync.": (
        "Sehemu moja inavunja kanuni ya fomu iliyoonyeshwa hapo juu. Mwombe mhudumu "
        "arekebishe rekodi kwenye simu; itatumwa tena wakati wa kusawazisha ujao."
    ),
    "The server's check shown above refused the record. Ask the worker to correct it on "
    "the phone.": (
        "Ukaguzi wa seva ulioonyeshwa hapo juu ulikataa rekodi. Mwombe mhudumu "
        "airekebishe kwenye simu."
    ),
    "The record (with its photos) is larger than the server takes. Ask the worker to "
    "remove or shrink large photos, or the administrator to raise the limit.": (
        "Rekodi (pamoja na picha zake) ni kubwa kuliko seva inavyopokea. Mwombe mhudumu "
        "aondoe au apunguze picha kubwa, au msimamizi wa mfumo aongeze kikomo."
    ),
    "The app sent something the server cannot store. Update the app; if it still happens, "
    "report it to the administrator with the document id.": (
        "Programu ilituma kitu ambacho seva haiwezi kuhifadhi. Sasisha programu; ikiendelea, "
        "mjulishe msimamizi wa mfumo pamoja na kitambulisho cha hati."
    ),
    "The record points to a photo or file the phone did not send. Ask the worker to open "
    "the record and attach it again.": (
        "Rekodi inaelekeza kwenye picha au faili ambayo simu haikutuma. Mwombe mhudumu "
        "afungue rekodi na aiambatishe tena."
    ),
    "The phone sent data the server could not read at all. Check the phone's connection "
    "and app version; report it to the administrator if it repeats.": (
        "Simu ilituma data ambayo seva haikuweza kusoma kabisa. Angalia muunganisho wa simu "
        "na toleo la programu; mjulishe msimamizi wa mfumo ikijirudia."
    ),
    "Report it to the administrator with the document id.": (
        "Mjulishe msimamizi wa mfumo pamoja na kitambulisho cha hati."
    ),
}
console.SWAHILI.update(SWAHILI_REFUSALS)

CELL = ' style="overflow-wrap:anywhere"'  # long document ids must not widen a phone's page
HOME = "/supervisor/refusals"


def refusal_url(refusal: Refusal) -> str:
    return f"{HOME}/{refusal.id}"


def refusals_table(shell: Shell, refusals: Sequence[Refusal]) -> str:
    """The refusals as a table (cards on a phone), each linking to its record."""
    if not refusals:
        return f'<p class="card">{e(shell.t("No refused records."))}</p>'
    heads = ("When", "Worker", "Device", "Document", "Reason", "What to do", "Times")
    head = "".join(f'<th scope="col">{e(shell.t(h))}</th>' for h in heads)
    rows = "".join(_row(shell, r) for r in refusals)
    return (
        f'<table class="devices refusals"><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def _row(shell: Shell, r: Refusal) -> str:
    said = words(r.reason)

    def cell(label: str, html: str) -> str:
        return f'<td data-label="{e(shell.t(label))}"{CELL}>{html}</td>'

    reason = f"<strong>{e(shell.t(said.title))}</strong><br>{e(r.detail)}"
    return (
        "<tr>"
        + cell("When", e(shell.when(r.last_at)))
        + cell("Worker", e(r.worker))
        + cell("Device", e(r.device or "—"))
        + cell("Document", f'<a href="{refusal_url(r)}">{e(r.doc_id)}</a>')
        + cell("Reason", reason)
        + cell("What to do", e(shell.t(said.advice)))
        + cell("Times", e(r.count))
        + "</tr>"
    )


def refusals_section(shell: Shell, refusals: Sequence[Refusal]) -> str:
    """A worker's refused records, for the worker's page: a heading and the table.

    ``refusals`` come from ``app[REFUSALS].for_workers([worker], limit)`` (newest
    first).  Drawing them reads what phones sent: the caller audits the read
    (:func:`sync.refusals.routes.audit_read`, action ``refusals_read``).
    """
    return f'<h2 id="refused">{e(shell.t("Refused records"))}</h2>' + refusals_table(
        shell, refusals
    )


def _filter(shell: Shell, workers: Sequence[str], chosen: str | None) -> str:
    options = [f'<option value="">{e(shell.t("Everyone"))}</option>']
    for name in workers:
        selected = " selected" if name == chosen else ""
        options.append(f'<option value="{e(name)}"{selected}>{e(name)}</option>')
    return (
        f'<form method="get" action="{HOME}" class="card filters">'
        f'<p style="margin:0"><label for="f-worker">{e(shell.t("Worker"))}</label>'
        f'<select id="f-worker" name="worker">{"".join(options)}</select></p>'
        f'<p style="margin:0"><button type="submit">{e(shell.t("Show"))}</button></p></form>'
    )


def _pager(shell: Shell, query: Query, cursor: str | None) -> str:
    links = []
    if query.before is not None:
        newest = {"worker": query.worker} if query.worker else {}
        links.append(f'<a href="{HOME}?{urlencode(newest)}">{e(shell.t("Newest records"))}</a>')
    if cursor is not None:
        older = {**({"worker": query.worker} if query.worker else {}), "before": cursor}
        links.append(f'<a href="{HOME}?{urlencode(older)}">{e(shell.t("Older records"))} →</a>')
    return f'<p class="row">{" ".join(links)}</p>' if links else ""


@staff_page
async def refusals_page(request: web.Request, page: Page, caller: Caller) -> web.StreamResponse:
    shell = shell_for(page, caller, "refusals")
    try:
        asked = Query.parse(request.query)
    except BadRequest as exc:
        html = console.page(shell, shell.t("Refused records"), templates.message(exc.reason, True))
        return page.respond(html, 400)
    query = Query(asked.worker, DEFAULT_LIMIT, asked.before)
    found = await refusals_for(request.app, caller, query)
    audit_read(request.app, caller, "refusals_read", found)
    workers = await visible_workers(request.app, caller)
    names = sorted(workers) if workers is not None else await _everyone(request)
    intro = e(
        shell.t(
            "Records a phone sent that the server would not take. The phone keeps them and "
            "sends them again at each sync until they are corrected."
        )
    )
    body = (
        f'<p class="muted">{intro}</p>'
        + _filter(shell, names, query.worker)
        + refusals_table(shell, found)
        + _pager(shell, query, next_cursor(found, query.limit))
    )
    return page.respond(console.page(shell, shell.t("Refused records"), body))


async def _everyone(request: web.Request) -> list[str]:
    return [u.name for u in await request.app[ACCOUNTS].list_users()]


@staff_page
async def refusal_page(request: web.Request, page: Page, caller: Caller) -> web.StreamResponse:
    shell = shell_for(page, caller, "refusals")
    refusal, body = await _opened(request, caller, shell)
    said = words(refusal.reason)
    facts = (
        ("Worker", refusal.worker),
        ("Device", refusal.device or "—"),
        ("Document", refusal.doc_id),
        ("Revision", refusal.rev or "—"),
        ("Reason", shell.t(said.title)),
        ("Details", refusal.detail),
        ("What to do", shell.t(said.advice)),
        ("First refused", shell.when(refusal.first_at)),
        ("Last refused", shell.when(refusal.last_at)),
        ("Times", str(refusal.count)),
    )
    rows = "".join(f"<dt>{e(shell.t(k))}</dt><dd>{e(v)}</dd>" for k, v in facts)
    html = (
        f'<p><a href="{HOME}">← {e(shell.t("Back to the refused records"))}</a></p>'
        f'<div class="card"><dl>{rows}</dl></div>'
        f"<h2>{e(shell.t('What the phone sent'))}</h2>{body}"
    )
    return page.respond(console.page(shell, shell.t("Refused record"), html))


async def _opened(request: web.Request, caller: Caller, shell: Shell) -> tuple[Refusal, str]:
    """The record (404 when missing or not the caller's to see) and its body as HTML."""
    raw_id = request.match_info["id"]
    store, recorder = request.app.get(REFUSALS), request.app.get(RECORDER)
    found = await store.get(int(raw_id)) if raw_id.isdigit() and store is not None else None
    workers = await visible_workers(request.app, caller)
    if found is None or (workers is not None and found[0].worker not in workers):
        raise NotFound("No such refused record, or not one of your workers'.")
    refusal, sealed = found
    if sealed is None or recorder is None:
        body = f'<p class="card">{e(shell.t("No body was kept."))}</p>'
    else:
        data = await recorder.sealer.open(refusal.worker, refusal.doc_id, refusal.rev, sealed)
        body = _shown(shell, data, sealed.truncated, refusal.body_bytes)
    audit_read(request.app, caller, "refusal_opened", [refusal])
    return refusal, body


def _shown(shell: Shell, data: bytes, truncated: bool, size: int) -> str:
    """The refused body: pretty JSON when it is whole JSON, else its text; escaped."""
    note = ""
    text = data.decode("utf-8", errors="replace")
    if truncated:
        kept, whole = shell.t("Only the first part was kept"), shell.t("bytes in all")
        said = f"{kept} ({len(data)} / {size} {whole})."
        note = f'<p class="muted">{e(said)}</p>'
    else:
        with contextlib.suppress(orjson.JSONDecodeError):
            text = orjson.dumps(orjson.loads(data), option=orjson.OPT_INDENT_2).decode()
    pre = f'<pre class="card" style="white-space:pre-wrap;overflow-wrap:anywhere">{e(text)}</pre>'
    return note + pre


def setup_routes(app: web.Application) -> None:
    app.router.add_get(HOME, refusals_page)
    app.router.add_get(HOME + "/{id}", refusal_page)
