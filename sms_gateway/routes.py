"""What the app factory mounts for SMS: the gateway endpoints, the supervisor views, the workers.

    GET  /api/sms                              {"medic-gateway": true}
    POST /api/sms                              medic-gateway poll (HTTP Basic, role gateway)
    POST /api/v1/sms/webhook/africastalking    provider callbacks (shared secret, header)
    GET  /api/v1/sms/messages                  supervisors: incoming + outgoing, filtered
    GET  /supervisor/sms                       the same as a page (50 a page, by cursor)
    GET  /supervisor/sms/{id}                  one message: its parse, records, replies
    PUT  /api/v1/sms/workers/{name}/language   supervisors: {"language": "sw"}

:func:`extend` registers these routes, the ``sms`` commands, the sealed SMS
texts (re-sealed by ``fieldsync keys rotate``) and a worker
(:mod:`sync.extensions`): it opens the SMS store (sms_gateway.backends: SQLite,
or CouchDB shared with other instances), takes up every message stored but not
processed before the last stop, and runs the processor and the scheduler
(silent gateways, provider sending) until shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import Gauge

from barcode.backends import patient_id_store
from barcode.ports import PatientIdStore
from barcode.settings import BarcodeSettings
from device_registry import templates
from device_registry.pages import (
    Page,
    place_names,
    readable_places,
    shell_for,
    staff_page,
    workers_in_scope,
)
from forms.routes import forms_of
from sms_gateway import cli, listing, medic, provider, sealing
from sms_gateway import page as sms_page
from sms_gateway.backends import sms_store
from sms_gateway.outbox import Outbox
from sms_gateway.ports import SmsStore, iso
from sms_gateway.provider import webhook_window
from sms_gateway.replies import LANGUAGES
from sms_gateway.senders import SenderLookup, registry_lookup
from sms_gateway.service import Clock, SmsService, utcnow
from sms_gateway.settings import SETTINGS, SmsSettings, from_config
from sync.appkeys import ACCOUNTS, AUTH, CONFIG, STORE
from sync.audit import AUDIT
from sync.errors import BadRequest, FieldsyncError, Forbidden, NotFound
from sync.extensions import Extensions
from sync.http import json_response, read_form, read_object
from sync.metrics import METRICS
from sync.ratelimit import FailureWindow
from sync.replication.context import Caller
from sync.replication.routes import REPLICATION
from sync.scopes import Role

log = structlog.get_logger("fieldsync.sms")
STAFF = frozenset({Role.SUPERVISOR, Role.ADMIN})
GATEWAYS = frozenset({Role.GATEWAY})


@dataclass
class Sms:
    service: SmsService
    outbox: Outbox
    settings: SmsSettings
    provider: provider.AfricasTalking | None = None
    webhook_failures: FailureWindow = field(default_factory=webhook_window)


SMS = web.AppKey("sms", Sms)


@dataclass(frozen=True)
class Overrides:
    """Set under :data:`OVERRIDES` before start-up to replace the registry lookup or the clock."""

    lookup: SenderLookup | None = None
    clock: Clock | None = None


OVERRIDES = web.AppKey("sms_overrides", Overrides)


def extend(ext: Extensions) -> None:
    """Register the SMS routes, worker, sealed columns, settings and commands."""
    ext.routes.append(setup_routes)
    ext.workers.append(sms_worker)
    ext.sealed_blobs.extend(sealing.COLUMNS)
    ext.couch_sealed_blobs.append(sealing.COUCH_DOCS)
    ext.couch_databases.append(sealing.COUCH_DB)
    ext.settings.extend(SETTINGS)
    ext.cli_commands.append(cli.register)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/sms", gateway_hello)
    app.router.add_post("/api/sms", gateway_poll)
    app.router.add_post("/api/v1/sms/webhook/{provider}", webhook)
    app.router.add_get("/api/v1/sms/messages", list_messages)
    app.router.add_put("/api/v1/sms/workers/{name}/language", set_language)
    app.router.add_get("/supervisor/sms", supervisor_page)
    app.router.add_get("/supervisor/sms/{id}", message_page)


async def sms_worker(app: web.Application) -> AsyncIterator[None]:
    """Worker: the SMS service, its queue gauges, the processor and the scheduler."""
    async with (
        patient_id_store(app[CONFIG], app[STORE]) as patient_ids,
        sms_store(app[CONFIG], app[STORE]) as queues,
    ):
        async for _ in _sms_service(app, patient_ids, queues):
            yield


async def _sms_service(
    app: web.Application, patient_ids: PatientIdStore, queues: SmsStore
) -> AsyncIterator[None]:
    config = app[CONFIG]
    settings = from_config(config)
    forms = forms_of(app)
    overrides = app.get(OVERRIDES, Overrides())
    lookup = overrides.lookup or registry_lookup(app)
    clock = overrides.clock or utcnow
    id_format = BarcodeSettings.from_mapping(config.extra.get("barcode", {})).id_format
    service = SmsService(
        queues, app[REPLICATION], app[AUTH], forms, settings, lookup, id_format, patient_ids, clock
    )
    await service.open()
    sms = Sms(service, Outbox(queues, service.sealer, settings, clock), settings)
    session = aiohttp.ClientSession() if settings.provider else None
    if settings.provider and session is not None:
        sms.provider = provider.AfricasTalking(settings.provider, session)
    app[SMS] = sms
    _measure_queues(app, sms, clock)
    service.wake.set()  # recovery: whatever was stored but not processed before the last stop
    tasks = [
        asyncio.create_task(service.run_processor(), name="sms-processor"),
        asyncio.create_task(_scheduler(sms), name="sms-scheduler"),
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await service.close()
    if session is not None:
        await session.close()


def _measure_queues(app: web.Application, sms: Sms, clock: Clock) -> None:
    """``sms_queue_depth{queue}`` and ``sms_queue_oldest_age_seconds{queue}``, at each scrape."""
    registry = app[METRICS].registry
    depth = Gauge(
        "fieldsync_sms_queue_depth", "SMS messages waiting, per queue", ["queue"], registry=registry
    )
    age = Gauge(
        "fieldsync_sms_queue_oldest_age_seconds",
        "How long the oldest message of a queue has waited (0: none waits)",
        ["queue"],
        registry=registry,
    )

    async def read() -> None:
        moment = clock()
        for queue in await sms.service.store.queues(moment):
            depth.labels(queue.name).set(queue.depth)
            waited = 0.0 if queue.oldest is None else (moment - queue.oldest).total_seconds()
            age.labels(queue.name).set(max(0.0, waited))

    app[METRICS].add_source(read)


async def _scheduler(sms: Sms) -> None:
    """Every tick: offer silent messages again, and send through the provider if there is one.

    With several instances on one CouchDB, one of them does each tick's work: the one
    holding the scheduler's lease (``SmsStore.claim_tick``, renewed each tick; taken
    over by another within ``LEASE_TICKS`` ticks of its holder's death)."""
    lease_seconds = sms.settings.lease.total_seconds()
    while True:
        await asyncio.sleep(sms.settings.tick_seconds)
        try:
            if not await sms.service.store.claim_tick(sms.service.owner, lease_seconds):
                continue
            await sms.outbox.expire_silent()
            if sms.provider is not None:
                await send_through_provider(sms, sms.provider)
        except Exception:
            with contextlib.suppress(Exception):  # a broken log must not stop the scheduler
                log.exception("sms_scheduler_round_failed")


async def send_through_provider(sms: Sms, sender: provider.AfricasTalking) -> int:
    """Hand due messages to the provider: each is ``forwarded`` (ours alone) before it is sent,
    and its provider id recorded after (see sms_gateway.outbox for the one window left)."""
    messages = await sms.outbox.take(sender.name, sms.settings.poll_batch)
    for message in messages:
        message_id, attempt = message.id.rsplit("-", 1)
        try:
            provider_id = await sender.send(message.to, message.content)
        except provider.ProviderError as exc:
            await sms.outbox.failed(message_id, int(attempt), str(exc))
            continue
        await sms.outbox.sent_to_provider(message_id, provider_id)
    return len(messages)


# -- medic-gateway ---------------------------------------------------------------------------------
async def gateway_hello(request: web.Request) -> web.Response:
    return json_response({"medic-gateway": True})


async def gateway_poll(request: web.Request) -> web.Response:
    """Messages and status updates in (stored first), due outgoing messages out."""
    try:
        await _role(request, GATEWAYS, "Only a gateway account may use the SMS gateway API.")
        poll = medic.read_poll(await read_object(request))
        sms = request.app[SMS]
        await sms.service.receive(poll.messages)
        await sms.outbox.gateway_updates(poll.updates)
        if poll.skipped:
            log.warning("sms_poll_entries_skipped", count=poll.skipped)
        outgoing = await sms.outbox.take(medic.CHANNEL, sms.settings.poll_batch)
    except FieldsyncError as exc:
        return json_response(medic.error(exc.reason), status=exc.status)
    return json_response(medic.answer(outgoing))


# -- provider webhook --------------------------------------------------------------------------
async def webhook(request: web.Request) -> web.Response:
    sms = request.app[SMS]
    if request.match_info["provider"] != provider.NAME or not sms.settings.webhook_secret:
        raise NotFound("No such SMS provider webhook here.")
    if "secret" in request.query:
        raise BadRequest(
            f"Send the webhook secret in the {provider.SECRET_HEADER} header, never in the "
            "query string (query strings end up in proxy and access logs)."
        )
    provider.check_secret(
        sms.webhook_failures, sms.settings.webhook_secret, request.headers, request.remote
    )
    form = {k: str(v) for k, v in (await read_form(request)).items()}
    received = provider.incoming(form, sms.service.clock())
    if received is not None:
        await sms.service.receive([received])
        return json_response({"ok": True})
    report = provider.delivery_report(form)
    if report is None:
        raise BadRequest("Neither an incoming message nor a delivery report.")
    await sms.outbox.provider_report(report.provider_id, report.event, report.reason)
    return json_response({"ok": True})


# -- supervisors ---------------------------------------------------------------------------
async def _role(request: web.Request, roles: frozenset[Role], refusal: str) -> Caller:
    caller = await request.app[AUTH].require(request)
    if caller.user.role not in roles:
        raise Forbidden(refusal)
    return caller


def _places(caller: Caller, filters: listing.Filters) -> frozenset[str] | None:
    """The places whose messages ``caller`` sees under ``filters`` (None: every place)."""
    places = caller.scope.read
    if filters.place is not None:
        below = caller.tree.descendants([filters.place])
        places = below if places is None else below & places
    return places


def _audit_read(request: web.Request, caller: Caller, ids: list[str]) -> None:
    """On disk before the texts go out (sync.audit)."""
    audit = request.app.get(AUDIT)
    if audit is not None and ids:
        audit.record(caller.name, "sms_read", None, ids, device=caller.device)


async def messages_for(request: web.Request, caller: Caller) -> dict[str, Any]:
    sms = request.app[SMS]
    filters = listing.Filters.from_query(request.query)
    places = _places(caller, filters)
    sealer, queues = sms.service.sealer, sms.service.store
    rows = {
        "incoming": await queues.incoming_rows(filters, places),
        "outgoing": await queues.outgoing_rows(filters, places),
    }
    ids = [f"in:{r['id']}" for r in rows["incoming"]] + [f"out:{r['id']}" for r in rows["outgoing"]]
    _audit_read(request, caller, ids)
    return {
        "incoming": [listing.open_incoming(r, sealer) for r in rows["incoming"]],
        "outgoing": [listing.open_outgoing(r, sealer) for r in rows["outgoing"]],
    }


async def list_messages(request: web.Request) -> web.Response:
    caller = await _role(request, STAFF, "SMS messages are for supervisors and admins.")
    return json_response(await messages_for(request, caller))


def _day(value: str | None, zone: str, name: str, days: int = 0) -> str | None:
    """The start of a date (plus ``days``) in the programme's zone, as a stored UTC time."""
    if not value:
        return None
    try:
        day = dt.date.fromisoformat(value) + dt.timedelta(days=days)
        return iso(dt.datetime.combine(day, dt.time(), ZoneInfo(zone)))
    except (ValueError, OverflowError) as exc:  # not a date; or the year 1 or 9999
        raise BadRequest(f"{name} must be a date such as 2026-05-01") from exc


def page_filters(query: Any, zone: str) -> tuple[str, listing.Filters]:
    """The page's box (``in`` or ``out``) and filters: a page and one row (is there more?)."""
    box = query.get("box") or "in"
    if box not in ("in", "out"):
        raise BadRequest("box must be in (received) or out (sent)")
    filters = listing.Filters.from_query(query)
    since, until = _day(query.get("from"), zone, "from"), _day(query.get("to"), zone, "to", 1)
    return box, replace(filters, limit=sms_page.PAGE_SIZE + 1, since=since, until=until)


def _one_page(
    rows: list[dict[str, Any]], filters: listing.Filters
) -> tuple[list[dict[str, Any]], int | None, int | None]:
    """Rows (newest first, one too many when there is more) cut to a page, and the cursors
    of the newer and older pages (None: no such page)."""
    size = sms_page.PAGE_SIZE
    if filters.after is not None:  # paging towards the newest: the extra row is the newest
        more, rows = len(rows) > size, rows[-size:]
        return rows, rows[0]["seq"] if more and rows else None, rows[-1]["seq"] if rows else None
    more, rows = len(rows) > size, rows[:size]
    newer = rows[0]["seq"] if filters.before is not None and rows else None
    return rows, newer, rows[-1]["seq"] if more else None


@staff_page
async def supervisor_page(request: web.Request, page: Page, caller: Caller) -> web.Response:
    shell = shell_for(page, caller, "sms")
    try:
        box, filters = page_filters(request.query, shell.zone)
    except BadRequest as exc:
        return page.respond(templates.error_page(shell, "Bad filter", exc.reason), 400)
    sms, places = request.app[SMS], _places(caller, filters)
    queues = sms.service.store
    if box == "in":
        found = await queues.incoming_rows(filters, places)
    else:
        found = await queues.outgoing_rows(filters, places, by_seq=True)
    rows, newer, older = _one_page(found, filters)
    _audit_read(request, caller, [f"{box}:{r['id']}" for r in rows])
    opened = listing.open_incoming if box == "in" else listing.open_outgoing
    view = sms_page.ListView(
        box=box,
        rows=[opened(r, sms.service.sealer) for r in rows],
        query={k: v for k, v in request.query.items() if k in sms_page.KEPT},
        places=readable_places(caller),
        workers=await workers_in_scope(request, caller, writable=False),
        forms=forms_of(request.app).codes,
        names=place_names(caller),
        newer=newer,
        older=older,
    )
    return page.respond(sms_page.list_page(shell, view))


@staff_page
async def message_page(request: web.Request, page: Page, caller: Caller) -> web.Response:
    """One received message, if the caller may see it (else 404, as for a missing one)."""
    raw = request.match_info["id"]
    if not raw.isdigit() or not 1 <= int(raw) <= listing.MAX_ID:
        raise NotFound("No such message.")
    sms, message_id = request.app[SMS], int(raw)

    row = await sms.service.store.incoming_one(message_id, caller.scope.read)
    if row is None:
        raise NotFound("No such message in your places.")
    caused = await sms.service.store.caused_by(message_id)
    _audit_read(request, caller, [f"in:{message_id}", *(f"out:{r['id']}" for r in caused)])
    sealer = sms.service.sealer
    html = sms_page.message_page(
        shell_for(page, caller, "sms"),
        listing.open_incoming(row, sealer),
        [listing.open_outgoing(r, sealer) for r in caused],
        place_names(caller),
    )
    return page.respond(html)


async def set_language(request: web.Request) -> web.Response:
    caller = await _role(request, STAFF, "Only supervisors and admins set a worker's language.")
    name = request.match_info["name"]
    body = await read_object(request)
    language = body.get("language")
    if language not in LANGUAGES:
        raise BadRequest(f"language must be one of {', '.join(LANGUAGES)}")
    sms = request.app[SMS]
    user = await request.app[ACCOUNTS].get_user(name)  # the accounts port: every instance's
    if user is None:
        raise NotFound(f"user {name!r} does not exist")
    reach = caller.tree.descendants(user.places)
    if caller.scope.capture is not None and not reach <= caller.scope.capture:
        raise Forbidden(f"{name} works outside your area.")
    await sms.service.store.set_language(name, language)
    audit = request.app.get(AUDIT)
    if audit is not None:  # after the change it records; on disk before the answer (sync.audit)
        detail = f"user {name}: language {language}"
        audit.record(caller.name, "user_language", None, (), caller.device, detail=detail)
    return json_response({"ok": True, "worker": name, "language": language})
