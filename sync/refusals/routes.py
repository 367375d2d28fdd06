"""What the app factory mounts for refused records: the API, the recorder, the pruning.

    GET /api/v1/refusals   supervisors (their workers) and admins (everyone's):
                           ?worker=NAME  ?limit=1..1000 (100)  ?before=<next of a page>
                           -> {"refusals": [...], "next": "<cursor>" | null}

:func:`extend` registers the route, the worker (:func:`refusals_worker`: opens the
store, hands the recorder to the replication handlers, prunes daily), the sealed
column (re-sealed by ``fieldsync keys rotate``).  The store is chosen by
:mod:`sync.refusals.backends`: with ``FIELDSYNC_COUCHDB_URL`` set the refusals live
in CouchDB's ``<prefix>refusals``, shared by every instance, so behind a load
balancer each instance lists the refusals any of them answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from sync.appkeys import ACCOUNTS, AUTH, CONFIG, STORE
from sync.audit import AUDIT
from sync.errors import BadRequest, Forbidden
from sync.extensions import Extensions
from sync.http import json_response
from sync.refusals import REFUSALS
from sync.refusals.backends import refusal_store
from sync.refusals.embedded_sealing import COLUMN
from sync.refusals.ports import Cursor, Refusal, RefusalStore
from sync.refusals.reasons import words
from sync.refusals.recorder import Clock, Recorder, iso, utcnow
from sync.refusals.sealing import Sealer
from sync.replication.context import Caller
from sync.replication.routes import REPLICATION
from sync.scopes import Role

log = structlog.get_logger("fieldsync.refusals")

RECORDER = web.AppKey("refusal_recorder", Recorder)
CLOCK: web.AppKey[Clock] = web.AppKey("refusal_clock")  # tests set it before the start
STAFF = frozenset({Role.SUPERVISOR, Role.ADMIN})
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PRUNE_EVERY = 24 * 3600.0
NO_STORE = {"Cache-Control": "no-store"}


def extend(ext: Extensions) -> None:
    """Register the API route, the worker and the sealed column."""
    ext.routes.append(setup_routes)
    ext.workers.append(refusals_worker)
    ext.sealed_blobs.append(COLUMN)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/refusals", list_refusals)


async def refusals_worker(app: web.Application) -> AsyncIterator[None]:
    """Worker: the store (sync.refusals.backends), the recorder the pushes use, the daily
    pruning."""
    config = app[CONFIG]
    clock = app.get(CLOCK, utcnow)
    async with refusal_store(config, app[STORE]) as store:
        replication = app[REPLICATION]
        sealer = Sealer(replication.parts.vault)
        recorder = Recorder(store, sealer, config.refusals_per_worker, clock)
        app[REFUSALS] = store
        app[RECORDER] = recorder
        replication.refusals = recorder
        pruning = asyncio.create_task(_prune_daily(store, config.refusal_retention_days, clock))
        yield
        replication.refusals = None
        pruning.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pruning
        await recorder.drain()


async def prune_once(store: RefusalStore, days: int, clock: Clock = utcnow) -> int:
    """Delete the refusals not pushed again for ``days`` days; how many went."""
    gone = await store.prune(iso(clock() - dt.timedelta(days=days)))
    if gone:
        log.info("refusals_pruned", deleted=gone, retention_days=days)
    return gone


async def _prune_daily(store: RefusalStore, days: int, clock: Clock) -> None:
    while True:
        try:
            await prune_once(store, days, clock)
        except Exception:
            log.exception("refusals_prune_failed")
        await asyncio.sleep(PRUNE_EVERY)


# -- reading -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    worker: str | None
    limit: int
    before: str | None

    @classmethod
    def parse(cls, query: Any) -> Query:
        """``?worker=&limit=&before=``; a 400 that says what to send instead."""
        worker = query.get("worker") or None
        if worker is not None and len(worker) > 200:
            raise BadRequest("worker must be a user name (at most 200 characters)")
        raw = query.get("limit") or str(DEFAULT_LIMIT)
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT} (default 100)")
        before = query.get("before") or None
        if before is not None:
            try:
                Cursor.parse(before)
            except ValueError as exc:
                raise BadRequest(f"{exc} (its `next`), or left out for the newest") from exc
        return cls(worker, int(raw), before)


async def visible_workers(app: web.Application, caller: Caller) -> frozenset[str] | None:
    """The workers whose refusals ``caller`` may see; None: everyone's (an admin).

    A worker is visible when one of their places (capture, else read) lies in the
    caller's read scope: the rule of the device pages.
    """
    if caller.scope.read is None:
        return None
    users = await app[ACCOUNTS].list_users()
    return frozenset(
        u.name for u in users if any(caller.scope.can_read(p) for p in u.places or u.read_places)
    )


async def refusals_for(app: web.Application, caller: Caller, query: Query) -> list[Refusal]:
    """The refusals ``caller`` may see, as ``query`` asks; empty for an unseen worker."""
    store = app.get(REFUSALS)
    if store is None:
        return []
    workers = await visible_workers(app, caller)
    chosen: Collection[str] | None = workers
    if query.worker is not None:
        if workers is not None and query.worker not in workers:
            return []  # the same answer as a worker with none: names are not confirmed
        chosen = (query.worker,)
    recorder = app.get(RECORDER)
    if recorder is not None:
        await recorder.drain()  # what was refused a moment ago is listed
    return list(await store.for_workers(chosen, query.limit, query.before))


def audit_read(
    app: web.Application, caller: Caller, action: str, refusals: Sequence[Refusal]
) -> None:
    """Reading refused records is reading what phones sent: in the audit trail."""
    audit = app.get(AUDIT)
    if audit is not None and refusals:
        ids = [r.doc_id for r in refusals]
        detail = f"{len(refusals)} refused records"
        audit.record(caller.name, action, None, ids, device=caller.device, detail=detail)


def to_json(refusal: Refusal) -> dict[str, Any]:
    said = words(refusal.reason)
    return {
        "id": refusal.id,
        "worker": refusal.worker,
        "device": refusal.device,
        "doc_id": refusal.doc_id,
        "rev": refusal.rev,
        "reason": refusal.reason,
        "reason_words": said.title,
        "detail": refusal.detail,
        "advice": said.advice,
        "at": refusal.last_at,
        "first_at": refusal.first_at,
        "count": refusal.count,
        "body_bytes": refusal.body_bytes,
    }


def next_cursor(refusals: Sequence[Refusal], limit: int) -> str | None:
    if len(refusals) < limit:
        return None
    last = refusals[-1]
    return str(Cursor(last.last_at, last.id))


async def staff(request: web.Request) -> Caller:
    caller = await request.app[AUTH].require(request)
    if caller.user.role not in STAFF:
        raise Forbidden("Refused records are for supervisors and admins.")
    return caller


async def list_refusals(request: web.Request) -> web.Response:
    caller = await staff(request)
    query = Query.parse(request.query)
    found = await refusals_for(request.app, caller, query)
    audit_read(request.app, caller, "refusals_read", found)
    answer = {"refusals": [to_json(r) for r in found], "next": next_cursor(found, query.limit)}
    return json_response(answer, headers=NO_STORE)
