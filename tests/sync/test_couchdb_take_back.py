"""A 202'd write taken back, on a real CouchDB-API store (``CouchClient._take_back``).

A write that only one writer may make (a device, a login counter, a claim) does not
stand on a 202: a rival may have had its 201 on the other copies.  Taking it back by
deleting our leaf deleted the whole document when no rival existed (the device
gone, the failed-login counter back at zero).  Only a cluster under contention
answers 202, so a proxy in front of the test's store turns the 201 of our ``PUT``
into a 202 — and, for the rival case, first lets a rival's write from the same
revision land beside ours, as another copy would hold it.  What the store holds
afterwards is read from the store itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestServer
from couch_proxy import RIVAL_HASH, Proxy
from couchdb_server import couch_request, db_path

from sync.config import Endpoint
from sync.store.couchdb.client import LOWEST_HASH, CouchClient

DOC = "device:PHONE-1"


async def _through(
    aiohttp_server: Callable[..., Awaitable[TestServer]], proxy: Proxy
) -> CouchClient:
    server = await aiohttp_server(proxy.app(), host="127.0.0.1")
    return CouchClient(Endpoint.parse(f"http://127.0.0.1:{server.port}"))


def _stored(couchdb_url: str, couch_db: str) -> dict[str, Any]:
    status, doc = couch_request(couchdb_url, "GET", f"{db_path(couch_db)}/{quote(DOC, safe='')}")
    assert status == 200, doc
    return doc


def _live_leaves(couchdb_url: str, couch_db: str) -> list[dict[str, Any]]:
    where = f"{db_path(couch_db)}/{quote(DOC, safe='')}?open_revs=all"
    status, answer = couch_request(couchdb_url, "GET", where)
    assert status == 200, answer
    return [row["ok"] for row in answer if "ok" in row and not row["ok"].get("_deleted")]


@pytest.fixture
def device_db(couchdb_url: str, couch_prefix: str) -> tuple[str, str]:
    """A database holding the device document at its first revision; its ``_rev``."""
    couch_db = f"{couch_prefix}devices"
    assert couch_request(couchdb_url, "PUT", db_path(couch_db))[0] in (201, 202)
    body = {"type": "device", "status": "assigned", "worker": "chw_a", "failures": 3}
    status, answer = couch_request(
        couchdb_url, "PUT", f"{db_path(couch_db)}/{quote(DOC, safe='')}", body
    )
    assert status in (201, 202), answer
    return couch_db, str(answer["rev"])


async def test_a_202_without_a_rival_leaves_the_document_as_it_was(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    couchdb_url: str,
    device_db: tuple[str, str],
) -> None:
    couch_db, rev = device_db
    proxy = Proxy(couchdb_url)
    proxy.arm(DOC)
    client = await _through(aiohttp_server, proxy)
    mark = secrets.token_hex(8)
    body = {"_id": DOC, "_rev": rev, "type": "device", "status": "revoked", "write": mark}
    try:
        assert await client.put_alone(couch_db, body, "write") is False
    finally:
        await client.close()
        await proxy.close()
    doc = _stored(couchdb_url, couch_db)  # not deleted (it was, before)
    assert (doc["status"], doc["worker"], doc["failures"]) == ("assigned", "chw_a", 3)
    assert doc["_rev"] == f"2-{LOWEST_HASH}" and "write" not in doc
    assert [leaf["_rev"] for leaf in _live_leaves(couchdb_url, couch_db)] == [doc["_rev"]]


async def test_a_202_beside_a_rivals_write_leaves_the_rivals_alone(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    couchdb_url: str,
    device_db: tuple[str, str],
) -> None:
    couch_db, _ = device_db
    first = _stored(couchdb_url, couch_db)
    proxy = Proxy(couchdb_url)
    proxy.arm(DOC, {"status": "revoked"}, RIVAL_HASH)
    client = await _through(aiohttp_server, proxy)
    mark = secrets.token_hex(8)
    body = {**first, "status": "assigned", "worker": "chw_b", "write": mark}
    try:
        assert await client.put_alone(couch_db, body, "write") is False
    finally:
        await client.close()
        await proxy.close()
    doc = _stored(couchdb_url, couch_db)
    assert (doc["_rev"], doc["status"], doc["worker"]) == (f"2-{RIVAL_HASH}", "revoked", "chw_a")
    leaves = _live_leaves(couchdb_url, couch_db)
    assert [leaf["_rev"] for leaf in leaves] == [f"2-{RIVAL_HASH}"], leaves
