"""Refused records: every document the server refused from a phone, kept so a supervisor sees it.

    ports       the RefusalStore port and the Refusal record
    embedded    the SQLite adapter (the embedded store)
    couchdb     the CouchDB adapter (``<prefix>refusals``, shared by every instance)
    memory      a dict, for tests
    backends    the one place that picks the adapter from the configuration
    reasons     which errors are refusals; each reason in plain words, and what to do
    sealing     refused bodies sealed under the shared data key (``embedded_sealing``:
                their column in SQLite, which ``fieldsync keys rotate`` re-seals)
    recorder    noting refusals in the push, writing them behind it
    routes      GET /api/v1/refusals, the recorder and the daily pruning (a worker)

Other packages read the store through :data:`REFUSALS` (``app.get(REFUSALS)``: absent
until the server has started).
"""

from aiohttp import web

from sync.refusals.ports import RefusalStore

REFUSALS = web.AppKey("refusals", RefusalStore)
