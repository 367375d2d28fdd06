"""Claims that a 202 must never hold: the accounts guard and patient-ID ranges.

A 202 says fewer than a quorum of copies took a write; a rival writing from the
same revision through the other copies may have had its 201.  A read back that
shows our write as the only leaf proves nothing: it may come from the copies the
rival's write has not reached yet.  Keeping such a 202 let two instances hold
the rules guard at once (two admins disabling each other) and hand out one range
of patient IDs twice.  A proxy in front of the test's store (``couch_proxy``)
answers one ``PUT`` with 202 and shows the rival's write only after the next read.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestServer
from couch_proxy import Proxy
from couchdb_server import couch_request, db_path

from barcode.couchdb import CouchPatientIds
from barcode.ids import IdFormat
from sync.config import Endpoint
from sync.errors import StoreUnavailable
from sync.people_store.couchdb import CouchAccounts
from sync.people_store.couchdb_guard import GUARD_DOC, RulesGuard
from sync.store.couchdb.client import CouchClient

Make = Callable[..., Awaitable[TestServer]]


async def _through(aiohttp_server: Make, proxy: Proxy) -> CouchClient:
    server = await aiohttp_server(proxy.app(), host="127.0.0.1")
    return CouchClient(Endpoint.parse(f"http://127.0.0.1:{server.port}"))


async def test_a_202_never_holds_the_rules_guard_a_rival_took(
    aiohttp_server: Make, couchdb_url: str, couch_prefix: str
) -> None:
    direct = CouchClient(Endpoint.parse(couchdb_url))
    proxy = Proxy(couchdb_url)
    client = await _through(aiohttp_server, proxy)
    try:
        db = await CouchAccounts.for_prefix(direct, couch_prefix).database()
        async with RulesGuard(direct, db).held():  # the guard exists, free again after
            pass
        proxy.arm(GUARD_DOC, {"holder": "rival", "until": time.time() + 60}, late=True)
        with pytest.raises(StoreUnavailable, match="held the accounts guard"):
            async with RulesGuard(client, db, wait=1.0).held():
                pytest.fail("held the guard beside the rival that had its 201")
    finally:
        await client.close()
        await direct.close()
        await proxy.close()
    where = f"{db_path(db)}/{quote(GUARD_DOC, safe='')}"
    assert couch_request(couchdb_url, "GET", where)[1]["holder"] == "rival"


async def test_a_202_never_owns_a_range_of_patient_ids(
    aiohttp_server: Make, couchdb_url: str, couch_prefix: str
) -> None:
    fmt = IdFormat()
    counter = f"counter:{fmt.scheme.value}"
    proxy = Proxy(couchdb_url)
    client = await _through(aiohttp_server, proxy)
    ids = CouchPatientIds(client, couch_prefix + "patient_ids", claim=10)
    proxy.arm(counter)  # the first claim is a 202 (its rival unseen): skipped
    try:
        [first] = await ids.allocate(fmt, 1, "alice")
    finally:
        await client.close()
        await proxy.close()
    where = f"{db_path(couch_prefix + 'patient_ids')}/{quote(counter, safe='')}"
    status, stored = couch_request(couchdb_url, "GET", where)
    assert status == 200, stored
    assert stored["next"] == fmt.first_number + 20, stored  # two claims: one skipped
    assert fmt.number_of(first[:-1]) == fmt.first_number + 10, first
