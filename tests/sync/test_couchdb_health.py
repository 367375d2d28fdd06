"""Readiness on the CouchDB backend: ready while the cluster answers, 503 once it is cut.

The app runs in-process on pouchdb-server (or ``FIELDSYNC_TEST_COUCHDB_URL``) behind a
TCP forwarder the test cuts: CouchDB going away for fieldsync.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sync_fixtures import Api, as_user, until_served
from tcp_cut import TcpCut, through

from sync.app import create_app
from sync.config import Config

Client = TestClient[Any, Any]
TOKEN = "couch-metrics-token"


@pytest.fixture
async def couch_client(
    aiohttp_client: Callable[..., Awaitable[Client]],
    config: Config,
    couchdb_url: str,
    couch_prefix: str,
    cut: TcpCut,
) -> Client:
    couch = replace(
        config,
        couchdb_url=through(couchdb_url, cut),
        couchdb_prefix=couch_prefix,
        couchdb_timeout_seconds=2.0,
        metrics_token=TOKEN,
    )
    client = await aiohttp_client(create_app(couch))
    await until_served(Api(client))
    return client


async def test_ready_while_couchdb_answers_and_503_when_it_is_cut(
    couch_client: Client, cut: TcpCut, couchdb_url: str
) -> None:
    ready = await couch_client.get("/_ready")
    assert ready.status == 200
    assert await ready.json() == {"status": "ok", "checks": {"couchdb": "ok", "store": "ok"}}
    await cut.cut()
    away = await couch_client.get("/_ready")
    body = await away.json()
    assert away.status == 503 and body["status"] == "unavailable"
    assert body["checks"]["store"] == "ok"
    assert body["checks"]["couchdb"].startswith("failed: CouchDB at")
    assert "cannot be reached" in body["checks"]["couchdb"]
    assert (urlsplit(couchdb_url).password or "no password") not in body["checks"]["couchdb"]
    await cut.restore()
    assert (await couch_client.get("/_ready")).status == 200


async def test_metrics_on_couchdb_count_documents(couch_client: Client) -> None:
    docs = [{"_id": "p1", "place": "area-a1"}, {"_id": "p2", "place": "area-a1"}]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    pushed = await couch_client.post(
        "/health/_bulk_docs", json={"docs": docs}, headers=as_user("alice")
    )
    assert pushed.status == 201
    response = await couch_client.get("/metrics", headers=headers)
    assert response.status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(await response.text())
        for s in family.samples
    }
    assert samples[("fieldsync_store_documents", ())] == 2
    assert ("fieldsync_store_size_bytes", (("store", "couchdb"),)) in samples
    assert samples[("fieldsync_store_size_bytes", (("store", "sqlite"),))] > 0
