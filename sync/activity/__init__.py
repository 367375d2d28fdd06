"""Sync activity: per worker, device and UTC day, the syncs and the documents received.

    ports      the ActivityStore port and its DayActivity bucket
    embedded   the SQLite adapter (table ``sync_activity``)
    couchdb    the CouchDB adapter (``<prefix>activity``: every instance's counts add up)
    memory     the in-memory adapter
    backends   the one place that picks the adapter from the configuration
    recorder   counting in memory, flushed every few seconds and at a clean stop

The replication handlers call :func:`heard` and :func:`received`; the supervisor
console reads :data:`ACTIVITY`'s store.  :func:`recording` is the core's worker
that opens the table and runs the flushes (registered in :mod:`sync.packages`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from sync.activity.backends import activity_store
from sync.activity.recorder import ActivityRecorder
from sync.appkeys import CONFIG, STORE
from sync.errors import FieldsyncError

log = structlog.get_logger("fieldsync.activity")

ACTIVITY = web.AppKey("activity", ActivityRecorder)


def heard(app: web.Application, worker: str, device: str | None) -> None:
    """A request on the replication surface (counted as a sync when it opens a session)."""
    recorder = app.get(ACTIVITY)
    if recorder is not None:
        recorder.heard(worker, device)


def received(app: web.Application, worker: str, device: str | None, count: int) -> None:
    """``count`` documents sent by ``worker``'s ``device`` were written."""
    recorder = app.get(ACTIVITY)
    if recorder is not None:
        recorder.received(worker, device, count)


async def recording(app: web.Application) -> AsyncIterator[None]:
    """Worker: the activity store (sync.activity.backends), and its flushes; what is
    counted is written at stop."""
    async with activity_store(app[CONFIG], app[STORE]) as store:
        recorder = ActivityRecorder(store)
        app[ACTIVITY] = recorder
        task = asyncio.get_running_loop().create_task(recorder.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await recorder.flush()
        except FieldsyncError:  # the store is away: the stop goes on, the loss is logged
            log.warning("activity_lost_at_stop", buckets=recorder.pending)
