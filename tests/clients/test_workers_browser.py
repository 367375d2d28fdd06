"""The Workers pages in the real headless Chromium, with axe-core at 390 and 1280 px.

A phone of alice's pushes 3 records with a real PouchDB first, so the list and her
page show a real sync.  carla, a supervisor of another district, sees none of sam's
workers, and alice's page is "not found" for her.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from axe import DESKTOP, PHONE, at_width, check_accessibility, page_width
from browser import Browser, keep
from pouch import PouchDriver
from realserver import PASSWORD, Admin, ServerProcess, make_docs
from test_pouchdb_devices import IMEIS, device, issued


@pytest.fixture
def backend_env() -> dict[str, str]:
    """The pages read the same rows on both stores (test_pouchdb_workers covers CouchDB)."""
    return {}


async def log_in(browser: Browser, server: ServerProcess, name: str) -> None:
    await browser.goto(f"{server.url}/supervisor/login")
    await browser.fill({"#name": name, "#password": PASSWORD})
    await browser.click("form[action='/supervisor/login'] button[type=submit]")
    assert await browser.js("location.pathname") == "/supervisor/workers"  # home


async def accessible_at_both_widths(browser: Browser, tmp_path: Path, name: str) -> None:
    for width in (PHONE, DESKTOP):
        await at_width(browser, width)
        violations = await check_accessibility(browser)
        assert violations == [], violations
        if width == PHONE:
            assert await page_width(browser) <= PHONE
        shot = tmp_path / f"{name}-{width}.png"
        await browser.screenshot(shot, width, 844 if width == PHONE else 900, width == PHONE)
        assert shot.stat().st_size > 5_000
        keep(shot)


async def names(browser: Browser) -> list[str]:
    found: list[str] = await browser.js(
        "[...document.querySelectorAll('table.workers tbody tr td:first-child a')]"
        ".map(a => a.textContent)"
    )
    return found


async def test_workers_pages_in_a_browser(
    pouch: PouchDriver, admin: Admin, org: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    org.cli("place", "add", "district-c", "--parent", "country", "--name", "Kisumu East")
    org.cli("user", "add", "carol", "--role", "chw", "--place", "district-c", password=PASSWORD)
    org.cli(
        "user", "add", "carla", "--role", "supervisor", "--place", "district-c", password=PASSWORD
    )
    token = await issued(admin, org, "A1-TECNO", IMEIS[0], "alice")
    await issued(admin, org, "C1-SAMSUNG", IMEIS[1], "carol")
    await pouch.call("bulk_docs", db="phone", docs=make_docs("area-a1", 3, "visit"))
    pushed = await pouch.call("replicate", source="phone", target=device(org, "alice", token))
    assert pushed["docs_written"] == 3

    await log_in(browser, org, "sam")
    assert await names(browser) == ["alice", "bob"]
    text = await browser.js("document.querySelector('main').innerText")
    assert "Never synced" in text  # bob
    assert await browser.js("document.querySelector('a[href^=\"/api/v1/workers?\"]') !== null")
    await accessible_at_both_widths(browser, tmp_path, "workers")

    await browser.click("th a[href*='sort=last_sync']")
    assert await names(browser) == ["bob", "alice"]  # never synced first
    await browser.goto(f"{org.url}/supervisor/workers?quiet_days=1")
    assert await names(browser) == ["bob"]

    await browser.goto(f"{org.url}/supervisor/workers/alice")
    charts = await browser.js(
        "[...document.querySelectorAll('svg[role=img]')].map(s => "
        "[s.querySelector('title').textContent, s.querySelectorAll('rect').length, "
        "s.querySelector('rect:last-of-type title').textContent])"
    )
    assert [c[:2] for c in charts] == [["Syncs per day", 56], ["Documents per day", 56]]
    today_syncs = int(charts[0][2].rsplit(": ", 1)[1])
    assert today_syncs >= 1 and charts[1][2].endswith(": 3")
    assert await browser.js(
        "document.querySelector('a[href=\"/supervisor/devices/A1-TECNO\"]') !== null"
    )
    await accessible_at_both_widths(browser, tmp_path, "worker")

    await browser.click("form[action='/supervisor/logout'] button")
    await log_in(browser, org, "carla")
    assert await names(browser) == ["carol"]
    main = await browser.js("document.querySelector('main').innerText")
    assert "alice" not in main and "bob" not in main
    await browser.goto(f"{org.url}/supervisor/workers/alice")
    assert "Not found" in await browser.js("document.title")
    assert "A1-TECNO" not in await browser.js("document.body.innerText")
