"""The Refused records pages in a real headless Chromium, with axe-core, at 390 and 1280 px.

alice (a CHW) pushes records the server refuses: one of another district's place,
one whose weeks break form P, one with a very long id (it must not widen a phone's
page).  sam, her supervisor, logs in through the form, opens the list and one
record (its body shown, escaped); dina, supervisor of district-b only, sees none of
it, not even alice's name.  Screenshots are saved under the test's temp dir
(``FIELDSYNC_SCREENSHOTS=DIR`` keeps them).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from axe import DESKTOP, PHONE, at_width, check_accessibility, page_width
from browser import Browser, keep
from realserver import DB, PASSWORD, ServerProcess

MARKER = "<b>Jane & sons</b>"
LONG_ID = "visit-" + "x" * 120


@pytest.fixture
def server_env() -> dict[str, str]:
    # alice pushes over plain HTTP here; device enrolment is tests/clients/test_pouchdb_devices.
    return {"FIELDSYNC_REQUIRE_ENROLMENT": "0"}


@pytest.fixture
def backend_env() -> dict[str, str]:
    return {}  # pages only: the embedded store (the PouchDB test covers both backends)


def p_report(doc_id: str, weeks: int, place: str) -> dict[str, Any]:
    fields = {"weeks": weeks, "name": MARKER}
    return {"_id": doc_id, "type": "data_record", "form": "P", "place": place, "fields": fields}


async def push_as_alice(server: ServerProcess) -> None:
    docs = [
        p_report("elsewhere-1", 3, "area-b1"),
        p_report("weeks-1", 50, "area-a1"),
        p_report(LONG_ID, 60, "area-a1"),
    ]
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Basic {basic}"}) as chw,
        chw.post(f"{server.url}/{DB}/_bulk_docs", json={"docs": docs}) as resp,
    ):
        answer = await resp.json()
    assert [row.get("error") for row in answer] == ["forbidden"] * 3


async def log_in(browser: Browser, server: ServerProcess, name: str) -> None:
    await browser.goto(f"{server.url}/supervisor/login")
    await browser.fill({"#name": name, "#password": PASSWORD})
    await browser.click("form[action='/supervisor/login'] button[type=submit]")
    assert await browser.js("location.pathname") == "/supervisor/workers"


async def check_page(browser: Browser, url: str, shots: Path, name: str) -> None:
    """At each width: no serious or critical axe violation, no sideways scrolling on a phone."""
    for width in (PHONE, DESKTOP):
        await at_width(browser, width)
        await browser.goto(url)
        violations = await check_accessibility(browser)
        assert violations == [], violations
        if width == PHONE:
            assert await page_width(browser) <= PHONE
        shot = shots / f"{name}-{width}.png"
        await browser.screenshot(shot, width, 844 if width == PHONE else 900, width == PHONE)
        keep(shot)


async def test_refused_records_pages_in_the_browser(
    browser: Browser, org: ServerProcess, tmp_path: Path
) -> None:
    org.cli(
        "user", "add", "dina", "--role", "supervisor", "--place", "district-b", password=PASSWORD
    )
    await push_as_alice(org)
    await log_in(browser, org, "sam")

    await check_page(browser, f"{org.url}/supervisor/refusals", tmp_path, "refusals")
    text = await browser.js("document.body.innerText")
    assert "Does not match its form" in text and "Outside the worker's area" in text
    assert "field 'weeks': must be at most 42" in text and LONG_ID in text
    assert await browser.js("document.querySelectorAll('table.refusals tbody tr').length") == 3

    href = await browser.js("document.querySelector('a[href^=\"/supervisor/refusals/\"]').href")
    await check_page(browser, str(href), tmp_path, "refusal")
    shown = await browser.js("document.querySelector('pre').innerText")
    assert MARKER in shown  # the body as text: escaped, not markup
    assert await browser.js("document.querySelectorAll('pre b').length") == 0

    await browser.click("form[action='/supervisor/logout'] button[type=submit]")
    await log_in(browser, org, "dina")
    await check_page(browser, f"{org.url}/supervisor/refusals", tmp_path, "refusals-other")
    text = await browser.js("document.body.innerText")
    assert "No refused records." in text and "alice" not in text
    await browser.goto(str(href))
    assert "alice" not in await browser.js("document.body.innerText")
    assert "Jane" not in await browser.js("document.body.innerText")
