"""``GET /api/v1/workers``: fields, CSV (formula guard), filters, sorting, scope, roles.

The organisation is ``device_helpers``'s, plus ``carla``, a supervisor of district-c
only (she must see carol and nobody else), and a place whose name is a formula.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import replace
from typing import Any

import pytest
from device_helpers import IMEIS, PASSWORD, Client, Devices, as_user

from sync.activity import ACTIVITY, recorder
from sync.app import create_app
from sync.appkeys import STORE
from sync.config import Config
from sync.people_store import embedded_tables
from sync.scopes import Role
from sync.store.schema import connect, db_path


async def _org(devices: Devices) -> None:
    def run(conn: sqlite3.Connection) -> None:
        embedded_tables.add_place(conn, "area-a3", "facility-a", '=HYPERLINK("http://x")')
        embedded_tables.add_user(conn, "carla", Role.SUPERVISOR, PASSWORD, ["district-c"], [])
        embedded_tables.add_user(conn, "dave", Role.CHW, PASSWORD, ["area-a3"], [])

    await devices.client.app[STORE].write_tx(run)


async def _synced(devices: Devices) -> None:
    """alice syncs from A1 and pushes 3 documents; bob's B1 synced, then was lost."""
    token = await devices.issued("A1", IMEIS[0], "alice", app_version="fieldapp 2.4.1")
    assert (await devices.call("GET", "/health/", "alice", token=token))[0] == 200
    docs = {"docs": [{"_id": f"visit-{i}", "place": "area-a1"} for i in range(3)]}
    status, body = await devices.call("POST", "/health/_bulk_docs", "alice", docs, token)
    assert status == 201, body
    bob = await devices.issued("B1", IMEIS[1], "bob")
    assert (await devices.call("GET", "/health/", "bob", token=bob))[0] == 200
    await devices.drain()
    assert (await devices.mark("B1", "lost"))[0] == 200


async def _workers(devices: Devices, user: str = "sam", query: str = "") -> Any:
    status, body = await devices.call("GET", f"/api/v1/workers{query}", user)
    assert status == 200, body
    return body["workers"]


async def test_json_has_the_contract_fields_and_the_activity(devices: Devices) -> None:
    await _org(devices)
    await _synced(devices)
    workers = {w["name"]: w for w in await _workers(devices)}
    assert sorted(workers) == ["alice", "bob", "dave"]  # sam reads district-a and -b
    alice = workers["alice"]
    assert alice["places"] == ["area-a1"] and alice["place_names"] == ["area-a1"]
    assert [d["serial"] for d in alice["devices"]] == ["A1"]
    assert alice["devices"][0]["last_sync"] is not None
    assert alice["last_sync"] == alice["devices"][0]["last_sync"]
    assert alice["docs_in_set"] == 3 and alice["received_7d"] == 3 and alice["syncs_7d"] >= 1
    assert alice["refused"] == 0 and alice["over_size_warning"] is False
    bob = workers["bob"]
    assert bob["devices"][0]["status"] == "lost" and bob["last_sync"] is None
    assert bob["docs_in_set"] == 0 and bob["received_7d"] == 0


async def test_received_documents_are_counted_once_per_day_bucket(devices: Devices) -> None:
    await _synced(devices)
    recorder = devices.client.app[ACTIVITY]
    await recorder.flush()
    rows = await recorder.store.days("2000-01-01", ["alice"])
    assert [(r.device, r.docs) for r in rows] == [("A1", 3)]
    assert rows[0].syncs == 1  # several requests in a row: one session


async def test_csv_has_a_header_one_row_per_worker_and_no_formulas(devices: Devices) -> None:
    await _org(devices)
    await _synced(devices)
    response = await devices.client.get(
        "/api/v1/workers?format=csv&sort=name", headers=_auth("sam")
    )
    assert response.status == 200 and response.content_type == "text/csv"
    rows = list(csv.reader(io.StringIO(await response.text())))
    assert rows[0][:5] == ["name", "account", "places", "place_names", "devices"]
    assert [r[0] for r in rows[1:]] == ["alice", "bob", "dave"]
    dave = dict(zip(rows[0], rows[3], strict=True))
    assert dave["place_names"] == '\'=HYPERLINK("http://x")'
    alice = dict(zip(rows[0], rows[1], strict=True))
    assert alice["devices"] == "A1:assigned" and alice["received_7d"] == "3"


async def test_quiet_days_counts_only_assigned_phones(devices: Devices) -> None:
    await _synced(devices)
    quiet = await _workers(devices, query="?quiet_days=1")
    # bob's phone synced a minute ago but is lost: he has no assigned phone that synced
    assert [w["name"] for w in quiet] == ["bob"]


async def test_other_filters_and_sorting(devices: Devices) -> None:
    await _org(devices)
    await _synced(devices)
    assert [w["name"] for w in await _workers(devices, query="?place=district-b")] == ["bob"]
    assert [w["name"] for w in await _workers(devices, query="?place=facility-a")] == [
        "alice",
        "dave",
    ]
    assert await _workers(devices, query="?has_refusals=yes") == []
    assert len(await _workers(devices, query="?has_refusals=no")) == 3
    assert await _workers(devices, query="?over_size=yes") == []
    by_docs = await _workers(devices, query="?sort=-docs_in_set")
    assert by_docs[0]["name"] == "alice"
    by_sync = await _workers(devices, query="?sort=-last_sync")
    assert [w["name"] for w in by_sync] == ["alice", "bob", "dave"]
    assert [w["name"] for w in await _workers(devices, query="?sort=-name")] == [
        "dave",
        "bob",
        "alice",
    ]


async def test_the_size_warning_is_a_setting(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> None:
    devices = Devices(await aiohttp_client(create_app(replace(config, set_size_warning=2))))
    await _synced(devices)
    over = await _workers(devices, query="?over_size=yes")
    assert [(w["name"], w["over_size_warning"]) for w in over] == [("alice", True)]


async def test_bad_queries_say_what_to_type(devices: Devices) -> None:
    for query, words in [
        ("?quiet_days=abc", "quiet_days must be a whole number"),
        ("?quiet_days=-1", "quiet_days must be a whole number"),
        ("?quiet_days=" + "9" * 5000, "quiet_days must be a whole number"),
        ("?quiet_days=3651", "quiet_days must be a whole number"),
        ("?sort=age", "sort must be one of name, last_sync"),
        ("?sort=--name", "sort must be one of"),
        ("?has_refusals=maybe", "has_refusals must be yes or no"),
        ("?over_size=2", "over_size must be yes or no"),
        ("?place=district-c", "not one of your places"),
        ("?place=nowhere", "not one of your places"),
        ("?format=xml", "format must be json or csv"),
    ]:
        status, body = await devices.call("GET", f"/api/v1/workers{query}", "sam")
        assert (status, words in body["reason"]) == (400, True), (query, body)


async def test_scope_another_district_sees_none_of_these_workers(devices: Devices) -> None:
    await _org(devices)
    await _synced(devices)
    assert [w["name"] for w in await _workers(devices, "carla")] == ["carol"]
    response = await devices.client.get("/api/v1/workers?format=csv", headers=_auth("carla"))
    text = await response.text()
    assert "alice" not in text and "bob" not in text and "carol" in text
    everyone = [w["name"] for w in await _workers(devices, "admin")]
    assert everyone == ["alice", "bob", "carol", "dave"]


async def test_a_chw_is_refused(devices: Devices) -> None:
    token = await devices.issued("A1", IMEIS[0], "alice")
    status, body = await devices.call("GET", "/api/v1/workers", "alice", token=token)
    assert status == 403, body
    assert (await devices.client.get("/api/v1/workers")).status == 401


def _auth(user: str) -> dict[str, str]:
    return as_user(user)


async def test_counts_are_written_at_a_clean_stop(
    aiohttp_client: Callable[..., Awaitable[Client]],
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recorder, "FLUSH_EVERY", 3600.0)  # no periodic flush during the test
    devices = Devices(await aiohttp_client(create_app(config)))
    token = await devices.issued("A1", IMEIS[0], "alice")
    docs = {"docs": [{"_id": "visit-9", "place": "area-a1"}]}
    assert (await devices.call("POST", "/health/_bulk_docs", "alice", docs, token))[0] == 201
    assert devices.client.app[ACTIVITY].pending == 1  # counted in memory, not written yet
    await devices.client.close()  # the server stops: the recorder flushes
    with closing(connect(db_path(config.data_dir))) as conn:
        rows = conn.execute("SELECT worker, device, syncs, docs FROM sync_activity").fetchall()
    assert rows == [("alice", "A1", 1, 1)]


async def test_disabled_workers_are_shown_and_removed_ones_are_not(devices: Devices) -> None:
    await _org(devices)
    await devices.client.app[STORE].write_tx(
        lambda conn: embedded_tables.disable_user(conn, "dave")
    )
    accounts_of = {w["name"]: w["account"] for w in await _workers(devices)}
    assert accounts_of == {"alice": "active", "bob": "active", "dave": "disabled"}
    await devices.client.app[STORE].write_tx(lambda conn: embedded_tables.remove_user(conn, "dave"))
    assert [w["name"] for w in await _workers(devices)] == ["alice", "bob"]
