"""Liveness, readiness and Prometheus metrics (issue 12, point 3), over real HTTP on SQLite."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sync_fixtures import as_user

from sms_gateway import embedded_sql as sms_sql
from sync.app import create_app
from sync.appkeys import STORE
from sync.audit import AUDIT
from sync.config import Config, ConfigError, from_env
from sync.replication.routes import REPLICATION

Client = TestClient[Any, Any]
TOKEN = "s3cret-metrics-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
async def metered(aiohttp_client: Callable[..., Awaitable[Client]], config: Config) -> Client:
    return await aiohttp_client(create_app(replace(config, metrics_token=TOKEN)))


async def scrape(client: Client) -> tuple[str, Samples]:
    response = await client.get("/metrics", headers=BEARER)
    assert response.status == 200, await response.text()
    assert response.content_type == "text/plain"
    text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


# -- liveness and readiness ----------------------------------------------------------------------
async def test_up_answers_ok(client: Client) -> None:
    response = await client.get("/_up")
    assert (response.status, await response.json()) == (200, {"status": "ok"})


async def test_ready_checks_the_embedded_store(client: Client) -> None:
    response = await client.get("/_ready")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "checks": {"store": "ok"}}


async def test_ready_answers_503_saying_which_check_failed(client: Client) -> None:
    store = client.app[STORE]  # the SQLite store the check reads

    async def broken(_fn: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    store.read = broken  # type: ignore[method-assign]
    response = await client.get("/_ready")
    body = await response.json()
    assert response.status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["store"] == "failed: OperationalError: disk I/O error"


# -- who may read the metrics --------------------------------------------------------------------
async def test_metrics_need_the_token_or_an_admin(metered: Client) -> None:
    none = await metered.get("/metrics")
    assert none.status == 401
    assert "FIELDSYNC_METRICS_TOKEN" in (await none.json())["reason"]
    wrong = await metered.get("/metrics", headers={"Authorization": "Bearer not-it"})
    assert (wrong.status, (await wrong.json())["reason"]) == (401, "Wrong metrics token.")
    assert (await metered.get("/metrics", headers=as_user("alice"))).status == 403
    assert (await metered.get("/metrics", headers=as_user("admin"))).status == 200
    assert (await metered.get("/metrics", headers=BEARER)).status == 200


async def test_without_a_token_configured_a_bearer_is_refused_and_says_why(
    client: Client,
) -> None:
    response = await client.get("/metrics", headers=BEARER)
    assert response.status == 401
    assert "No metrics token is configured" in (await response.json())["reason"]
    assert (await client.get("/metrics", headers=as_user("admin"))).status == 200


def test_the_token_comes_from_the_environment_and_is_never_shown() -> None:
    config = from_env(env={"FIELDSYNC_METRICS_TOKEN": f" {TOKEN} "})
    assert config.metrics_token == TOKEN and TOKEN not in repr(config)
    with pytest.raises(ConfigError, match="FIELDSYNC_METRICS_TOKEN"):
        from_env(env={"FIELDSYNC_METRICS_TOKEN": "two words"})


# -- what the counters count ---------------------------------------------------------------------
async def test_a_workers_push_pull_and_a_failed_login_move_the_counters(metered: Client) -> None:
    _, before = await scrape(metered)
    alice = as_user("alice")
    docs = [{"_id": f"patient-{n}x", "place": "area-a1", "name": "Jane"} for n in range(3)]
    pushed = await metered.post("/health/_bulk_docs", json={"docs": docs}, headers=alice)
    assert pushed.status == 201
    changes = await (await metered.get("/health/_changes", headers=alice)).json()
    wanted = [{"id": row["id"], "rev": row["changes"][0]["rev"]} for row in changes["results"]]
    pulled = await metered.post("/health/_bulk_get", json={"docs": wanted}, headers=alice)
    assert pulled.status == 200 and len(wanted) == 3
    assert (await metered.get("/health/patient-0x", headers=alice)).status == 200
    failed = await metered.post("/_session", json={"name": "alice", "password": "wrong"})
    assert failed.status == 401
    text, after = await scrape(metered)

    assert (
        delta(before, after, "fieldsync_sync_documents_total", role="chw", direction="received")
        == 3
    )
    assert (
        delta(before, after, "fieldsync_sync_documents_total", role="chw", direction="served") == 4
    )
    for kind in ("bulk_docs", "changes", "bulk_get", "document"):
        assert delta(before, after, "fieldsync_sync_requests_total", role="chw", kind=kind) == 1
    assert delta(before, after, "fieldsync_login_failures_total") == 1
    assert delta(before, after, "fieldsync_refused_requests_total", reason="unauthorized") == 1
    for route, method, status in [
        ("/{db}/_bulk_docs", "POST", "201"),
        ("/{db}/_changes", "GET", "200"),
        ("/{db}/_bulk_get", "POST", "200"),
        ("/{db}/{docid}", "GET", "200"),
        ("/_session", "POST", "401"),
    ]:
        labels = {"route": route, "method": method, "status": status}
        assert delta(before, after, "fieldsync_http_requests_total", **labels) == 1, labels
        timed = {"route": route, "method": method}
        assert delta(before, after, "fieldsync_http_request_duration_seconds_count", **timed) == 1
    # Bounded labels: no database name, document id or user name in any of them.
    routes = {dict(labels).get("route") for _, labels in after} - {None}
    assert "/{db}/{docid}" in routes
    for secret in ("health", "patient-", "alice", "Jane"):
        assert secret not in text, secret


async def test_a_device_refusal_is_counted_by_its_kind(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> None:
    enrolled = replace(config, metrics_token=TOKEN, require_enrolment=True)
    client = await aiohttp_client(create_app(enrolled))
    _, before = await scrape(client)
    cookie_login = await client.post(
        "/_session", json={"name": "alice", "password": "correct horse"}
    )
    assert cookie_login.status == 401  # a phone without a token looks like a wrong password
    refused = await client.get("/health/_changes", headers=as_user("alice"))
    assert refused.status == 401
    _, after = await scrape(client)
    assert delta(before, after, "fieldsync_device_refusals_total", reason="no_token") >= 2
    assert delta(before, after, "fieldsync_login_failures_total") == 0  # the password was right


async def test_scrape_time_gauges_store_audit_and_sms(metered: Client) -> None:
    alice = as_user("alice")
    docs = [{"_id": "p1", "place": "area-a1"}, {"_id": "p2", "place": "area-a1"}]
    assert (
        await metered.post("/health/_bulk_docs", json={"docs": docs}, headers=alice)
    ).status == 201
    await metered.app[AUDIT].commit()  # the read journal moved into the chain: no lag
    _, samples = await scrape(metered)
    assert value(samples, "fieldsync_store_size_bytes", store="sqlite") > 4096
    assert value(samples, "fieldsync_store_documents") == 2
    assert value(samples, "fieldsync_audit_lag_seconds") >= 0
    assert ("fieldsync_audit_unchained_entries", ()) in samples
    for queue in ("incoming", "outgoing_due", "outgoing_forwarded"):
        assert value(samples, "fieldsync_sms_queue_depth", queue=queue) == 0
        assert ("fieldsync_sms_queue_oldest_age_seconds", (("queue", queue),)) in samples


def test_sms_queues_count_waiting_messages_and_their_age() -> None:
    now = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
    ago = lambda minutes: sms_sql.iso(now - dt.timedelta(minutes=minutes))  # noqa: E731
    conn = sqlite3.connect(":memory:")
    sms_sql.create_tables(conn)
    for n, (state, stored) in enumerate([("stored", 30), ("stored", 5), ("processed", 90)]):
        conn.execute(
            "INSERT INTO sms_incoming(key, channel, external_id, phone, key_ref, content, "
            "received_at, stored_at, state) VALUES(?,?,?,?,?,?,?,?,?)",
            (f"k{n}", "medic", f"e{n}", "+254700000000", "r", b"", ago(stored), ago(stored), state),
        )
    outgoing = [("pending", -60, None), ("pending", 10, None), ("forwarded", 20, ago(3))]
    for n, (state, due, offered) in enumerate(outgoing):
        conn.execute(
            "INSERT INTO sms_outgoing(id, channel, phone, kind, key_ref, content, state, due_at, "
            "offered_at, created_at, updated_at) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            (f"o{n}", "medic", "+254700000001", "reply", "r", b"", state, ago(due), offered,
             ago(90), ago(90)),
        )  # fmt: skip
    queues = {q.name: q for q in sms_sql.queues(conn, now)}
    assert queues["incoming"].depth == 2
    assert queues["incoming"].oldest == now - dt.timedelta(minutes=30)
    assert queues["outgoing_due"].depth == 1  # the other reminder is not due for an hour
    assert queues["outgoing_due"].oldest == now - dt.timedelta(minutes=10)
    assert (queues["outgoing_forwarded"].depth, queues["outgoing_forwarded"].oldest) == (
        1,
        now - dt.timedelta(minutes=3),
    )


# -- paths that are not databases ----------------------------------------------------------------
async def test_favicon_and_robots_are_not_databases(
    metered: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = metered.app[REPLICATION].parts.store
    looked_up: list[str] = []
    real = store.db_info

    async def counting(name: str, places: Any) -> Any:
        looked_up.append(name)
        return await real(name, places)

    monkeypatch.setattr(store, "db_info", counting)
    audit = metered.app[AUDIT]
    waiting = audit.backlog()[0]
    for where in ("/favicon.ico", "/robots.txt", "/Apple-Touch-Icon.png"):
        response = await metered.get(where)
        body = await response.json()
        assert (response.status, body["error"]) == (404, "not_found"), where
        assert "not a database name" in body["reason"]
    assert looked_up == [] and audit.backlog()[0] == waiting
    _, samples = await scrape(metered)
    assert value(samples, "fieldsync_http_requests_total", route="unmatched", method="GET",
                 status="404") == 3  # fmt: skip
    assert value(samples, "fieldsync_refused_requests_total", reason="not_found") == 3


async def test_metrics_is_never_a_database(metered: Client) -> None:
    admin = as_user("admin")
    created = await metered.put("/metrics", headers=admin)
    assert (created.status, (await created.json())["error"]) == (405, "method_not_allowed")
    posted = await metered.post("/metrics", json={"_id": "x"}, headers=admin)
    assert posted.status == 405
    for where in ("/metrics/", "/metrics/_changes", "/api/nothing-here"):
        response = await metered.get(where, headers=admin)
        body = await response.json()
        assert (response.status, body["error"]) == (404, "not_found"), where
        assert "routes, not a database" in body["reason"]
    all_dbs = await (await metered.get("/_all_dbs", headers=admin)).json()
    assert "metrics" not in all_dbs


async def test_illegal_names_are_still_refused_when_creating_a_database(metered: Client) -> None:
    response = await metered.put("/Bad_Name", headers=as_user("admin"))
    assert (response.status, (await response.json())["error"]) == (400, "illegal_database_name")
