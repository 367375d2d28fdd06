"""The Workers pages in-process: the list (filters, sort links, badges, CSV link), a worker's
page (8-week SVG charts with their text), scope (404, not 403), and the home redirect."""

from __future__ import annotations

import re
import sqlite3

from device_helpers import IMEIS, Client, Devices
from test_device_pages import log_in
from test_workers_api import _org, _synced

from device_registry.console import SWAHILI
from device_registry.worker_pages import WORDS
from sync.appkeys import STORE
from sync.people_store import embedded_tables
from sync.refusals.routes import RECORDER


async def _page(client: Client, path: str) -> tuple[int, str]:
    response = await client.get(path, allow_redirects=False)
    return response.status, await response.text()


async def test_home_goes_to_workers(client: Client) -> None:
    assert (await log_in(client, "sam"))[1] == "/supervisor/workers"
    response = await client.get("/supervisor/", allow_redirects=False)
    assert response.headers["Location"] == "/supervisor/workers"


async def test_the_list_shows_names_badges_and_keeps_filters(
    client: Client, devices: Devices
) -> None:
    await _org(devices)
    await _synced(devices)
    await log_in(client, "sam")
    status, html = await _page(client, "/supervisor/workers?sort=-last_sync")
    assert status == 200
    rows = re.findall(r'<td data-label="Name"><a href="/supervisor/workers/(\w+)"', html)
    assert rows == ["alice", "bob", "dave"]
    assert "=HYPERLINK(&quot;http://x&quot;)" in html  # a place name, escaped
    assert html.count("Never synced") == 2  # bob (his only phone is lost) and dave
    assert 'aria-sort="descending"' in html and "sort=last_sync" in html  # click: ascending
    assert 'href="/api/v1/workers?sort=-last_sync&amp;format=csv"' in html
    assert '<select id="f-place" name="place">' in html and 'type="number"' in html
    assert "carol" not in html


async def test_a_bad_filter_is_a_400_page(client: Client) -> None:
    await log_in(client, "sam")
    status, html = await _page(client, "/supervisor/workers?quiet_days=x")
    assert status == 400 and "quiet_days must be a whole number" in html


async def test_a_worker_page_has_two_charts_with_text(client: Client, devices: Devices) -> None:
    await _synced(devices)
    await log_in(client, "sam")
    status, html = await _page(client, "/supervisor/workers/alice")
    assert status == 200
    assert html.count('<svg role="img"') == 2
    assert '<title id="chart-syncs-t">Syncs per day</title>' in html
    assert '<title id="chart-docs-t">Documents per day</title>' in html
    assert html.count("<rect ") == 112  # 56 days, two charts
    assert "3 in 8 weeks; the busiest day" in html  # the documents chart's summary
    assert 'href="/supervisor/devices/A1"' in html
    assert "Refused records" in html


async def test_outside_the_scope_a_worker_is_not_found(client: Client, devices: Devices) -> None:
    await _org(devices)
    await log_in(client, "carla")
    seen, missing = await _page(client, "/supervisor/workers/alice")
    nobody, unknown = await _page(client, "/supervisor/workers/nobody")
    assert (seen, nobody) == (404, 404)
    assert missing.replace("alice", "nobody") == unknown  # the same answer: no name leaks
    assert (await _page(client, "/supervisor/workers/carol"))[0] == 200


async def test_a_chw_gets_the_login_form(devices: Devices) -> None:
    token = await devices.issued("A1", IMEIS[0], "alice")
    status, html = await devices.in_session("GET", "/supervisor/workers", "alice", token)
    assert status == 200 and 'action="/supervisor/login"' in html and "bob" not in html


def test_swahili_words_are_merged() -> None:
    assert all(SWAHILI[k] == v for k, v in WORDS.items())


async def test_a_long_list_is_paged(client: Client) -> None:
    def run(conn: sqlite3.Connection) -> None:
        alice = embedded_tables.get_user(conn, "alice")
        assert alice is not None
        conn.executemany(
            "INSERT INTO users(name, role, password_hash, places, read_places, created, updated) "
            "VALUES(?, 'chw', ?, '[\"area-a2\"]', '[]', '2026-01-01', '2026-01-01')",
            [(f"w{n:03d}", alice.password_hash) for n in range(105)],
        )

    await client.app[STORE].write_tx(run)
    await log_in(client, "sam")
    _, first = await _page(client, "/supervisor/workers")
    assert first.count('<td data-label="Name">') == 100
    assert (
        "Workers 1 to 100 of 107" in first
        and 'href="/supervisor/workers?page=2" rel="next"' in first
    )
    _, second = await _page(client, "/supervisor/workers?page=2")
    assert second.count('<td data-label="Name">') == 7 and 'rel="prev"' in second
    assert (await _page(client, "/supervisor/workers?page=0"))[0] == 400
    csv = await client.get("/api/v1/workers?format=csv")
    assert (await csv.text()).count("\n") == 108  # the CSV has every worker


async def test_a_refused_push_shows_on_the_worker_row_and_page(
    client: Client, devices: Devices
) -> None:
    """The Workers list counts a worker's refused records, and their page lists them."""
    token = await devices.issued("A1", IMEIS[0], "alice")
    outside = {"docs": [{"_id": "stray-1", "place": "area-c1", "marker": "m-17"}]}
    status, answer = await devices.call("POST", "/health/_bulk_docs", "alice", outside, token)
    assert status == 201 and answer[0]["error"] == "forbidden"
    await client.app[RECORDER].drain()
    status, body = await devices.call("GET", "/api/v1/workers", "sam")
    assert {w["name"]: w["refused"] for w in body["workers"]}["alice"] == 1
    await log_in(client, "sam")
    status, html = await _page(client, "/supervisor/workers/alice")
    assert status == 200 and "stray-1" in html and "m-17" not in html  # the body stays sealed
