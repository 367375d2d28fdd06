"""What the app factory mounts for SMS: the gateway endpoints, the supervisor views, the workers.

    GET  /api/sms                              {"medic-gateway": true}
    POST /api/sms                              medic-gateway poll (HTTP Basic, role gateway)
    POST /api/v1/sms/webhook/africastalking    provider callbacks (shared secret, header)
    GET  /api/v1/sms/messages                  supervisors: incoming + outgoing, filtered
    GET  /supervisor/sms                       the same as a page
    PUT  /api/v1/sms/workers/{name}/language   supervisors: {"language": "sw"}

:func:`extend` registers these routes, the ``sms`` commands, the sealed SMS
texts (re-sealed by ``fieldsync keys rotate``) and a worker
(:mod:`sync.extensions`): it creates the SMS tables, takes up every message
stored but not processed before the last stop, and runs the processor and the
scheduler (silent gateways, provider sending) until shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import Gauge

from barcode.backends import patient_id_store
from barcode.ports import PatientIdStore
from barcode.settings import BarcodeSettings
from forms.routes import forms_of
from sms_gateway import cli, listing, medic, page, provider, sealing, store
from sms_gateway.outbox import Outbox
from sms_gateway.provider import webhook_window
from sms_gateway.replies import LANGUAGES
from sms_gateway.senders import SenderLookup, registry_lookup
from sms_gateway.service import Clock, SmsService, utcnow
from sms_gateway.settings import SETTINGS, SmsSettings, from_config
from sync import accounts
from sync.appkeys import AUTH, CONFIG, STORE
from sync.audit import AUDIT
from sync.errors import BadRequest, FieldsyncError, Forbidden, NotFound, Unauthorized
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
    ext.settings.extend(SETTINGS)
    ext.cli_commands.append(cli.register)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/sms", gateway_hello)
    app.router.add_post("/api/sms", gateway_poll)
    app.router.add_post("/api/v1/sms/webhook/{provider}", webhook)
    app.router.add_get("/api/v1/sms/messages", list_messages)
    app.router.add_put("/api/v1/sms/workers/{name}/language", set_language)
    app.router.add_get("/supervisor/sms", supervisor_page)


async def sms_worker(app: web.Application) -> AsyncIterator[None]:
    """Worker: the SMS service, its queue gauges, the processor and the scheduler."""
    async with patient_id_store(app[CONFIG], app[STORE]) as patient_ids:
        async for _ in _sms_service(app, patient_ids):
            yield


async def _sms_service(app: web.Application, patient_ids: PatientIdStore) -> AsyncIterator[None]:
    config = app[CONFIG]
    settings = from_config(config)
    forms = forms_of(app)
    sqlite = app[STORE]
    overrides = app.get(OVERRIDES, Overrides())
    lookup = overrides.lookup or registry_lookup(sqlite)
    clock = overrides.clock or utcnow
    id_format = BarcodeSettings.from_mapping(config.extra.get("barcode", {})).id_format
    service = SmsService(
        sqlite, app[REPLICATION], app[AUTH], forms, settings, lookup, id_format, patient_ids, clock
    )
    await service.open()
    sms = Sms(service, Outbox(sqlite, service.sealer, settings, clock), settings)
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
        for queue in await sms.service.sqlite.read(lambda conn: store.queues(conn, moment)):
            depth.labels(queue.name).set(queue.depth)
            waited = 0.0 if queue.oldest is None else (moment - queue.oldest).total_seconds()
            age.labels(queue.name).set(max(0.0, waited))

    app[METRICS].add_source(read)


async def _scheduler(sms: Sms) -> None:
    """Every tick: offer silent messages again, and send through the provider if there is one."""
    while True:
        await asyncio.sleep(sms.settings.tick_seconds)
        try:
            await sms.outbox.expire_silent()
            if sms.provider is not None:
                await send_through_provider(sms, sms.provider)
        except Exception:
            with contextlib.suppress(Exception):  # a broken log must not stop the scheduler
                log.exception("sms_scheduler_round_failed")


async def send_through_provider(sms: Sms, sender: provider.AfricasTalking) -> int:
    messages = await sms.outbox.take(sender.name, sms.settings.poll_batch)
    for message in messages:
        message_id, attempt = message.id.rsplit("-", 1)
        try:
            provider_id = await sender.send(message.to, message.content)
        except provider.ProviderError as exc:
            await sms.outbox.failed(message_id, int(attempt), str(exc))
            continue
        await sms.service.sqlite.write_tx(
            partial(store.set_provider_id, message_id=message_id, provider_id=provider_id)
        )
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


async def messages_for(request: web.Request, caller: Caller) -> dict[str, Any]:
    sms = request.app[SMS]
    filters = listing.Filters.from_query(request.query)
    places = caller.scope.read
    if filters.place is not None:
        below = caller.tree.descendants([filters.place])
        places = below if places is None else below & places
    sealer = sms.service.sealer

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        incoming = listing.incoming_rows(conn, filters, places)
        outgoing = listing.outgoing_rows(conn, filters, places)
        return {"incoming": incoming, "outgoing": outgoing}

    rows = await sms.service.sqlite.read(run)
    audit = request.app.get(AUDIT)
    ids = [f"in:{r['id']}" for r in rows["incoming"]] + [f"out:{r['id']}" for r in rows["outgoing"]]
    if audit is not None and ids:  # on disk before the texts go out (sync.audit)
        audit.record(caller.name, "sms_read", None, ids, device=caller.device)
    return {
        "incoming": [listing.open_incoming(r, sealer) for r in rows["incoming"]],
        "outgoing": [listing.open_outgoing(r, sealer) for r in rows["outgoing"]],
    }


async def list_messages(request: web.Request) -> web.Response:
    caller = await _role(request, STAFF, "SMS messages are for supervisors and admins.")
    return json_response(await messages_for(request, caller))


async def supervisor_page(request: web.Request) -> web.Response:
    try:
        caller = await request.app[AUTH].caller(request)
    except Unauthorized:
        caller = None
    if caller is None or caller.user.role not in STAFF:
        return page.to_login(request.path_qs)
    try:
        data = await messages_for(request, caller)
    except BadRequest as exc:
        return page.respond(page.error(exc.reason, caller.name), status=400)
    return page.respond(page.messages_page(data, dict(request.query), caller.name))


async def set_language(request: web.Request) -> web.Response:
    caller = await _role(request, STAFF, "Only supervisors and admins set a worker's language.")
    name = request.match_info["name"]
    body = await read_object(request)
    language = body.get("language")
    if language not in LANGUAGES:
        raise BadRequest(f"language must be one of {', '.join(LANGUAGES)}")
    sms = request.app[SMS]

    def run(conn: sqlite3.Connection) -> None:
        user = accounts.get_user(conn, name)
        if user is None:
            raise NotFound(f"user {name!r} does not exist")
        reach = caller.tree.descendants(user.places)
        if caller.scope.capture is not None and not reach <= caller.scope.capture:
            raise Forbidden(f"{name} works outside your area.")
        store.set_language(conn, name, language)
        if audit is not None:
            detail = f"user {name}: language {language}"
            audit.chain.note(conn, caller.name, "user_language", detail, caller.device)

    audit = request.app.get(AUDIT)
    await sms.service.sqlite.write_tx(run)
    return json_response({"ok": True, "worker": name, "language": language})
