"""The supervisor console in a real headless Chromium (issue 13, points 1, 4, 5 and 6).

A real ``fieldsync serve`` (embedded store, time zone Africa/Nairobi) with two phones
and some SMS traffic.  The login page, then (sam logged in through its form) Devices,
a device, the SMS lists (received and sent) and a message's page are each opened at
390 px (a phone) and 1280 px: axe-core finds no serious or critical violation,
nothing scrolls sideways on the phone, and a screenshot of each is saved under the
test's temp dir (``FIELDSYNC_SCREENSHOTS=DIR`` keeps them).  dina, the supervisor of
district-b only, sees none of alice's phone or messages, not even on their own
addresses.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from axe import DESKTOP, PHONE, at_width, check_accessibility, page_width
from browser import Browser, keep
from realserver import PASSWORD, ServerProcess

ALICE_PHONE, BOB_PHONE = "+254700000001", "+254700000002"
DEVICES = [  # serial, IMEI (check digit right), phone, worker
    {"serial": "A1", "imei": "490154203237518", "phone": ALICE_PHONE, "worker": "alice"},
    {"serial": "B1", "imei": "356938035643809", "phone": BOB_PHONE, "worker": "bob"},
]
TEXTS = [("P 3 Jane", ALICE_PHONE), ("P 99 Mary", ALICE_PHONE), ("P 4 Bea", BOB_PHONE)]


@pytest.fixture
def server_env() -> dict[str, str]:
    # Supervisors read in a browser with no enrolled phone; times in East Africa.
    return {"FIELDSYNC_REQUIRE_ENROLMENT": "0", "FIELDSYNC_TIME_ZONE": "Africa/Nairobi"}


@pytest.fixture
def backend_env() -> dict[str, str]:
    """The embedded store only: the pages, not the document backend, are the subject."""
    return {}


def basic(name: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(name, PASSWORD)}


async def seed(server: ServerProcess) -> list[dict[str, Any]]:
    """Phones for alice and bob, a gateway, dina; three texts, processed. The messages."""
    server.cli("user", "add", "gw", "--role", "gateway", password=PASSWORD)
    server.cli("user", "add", "dina", "--role", "supervisor", "--place", "district-b",
               password=PASSWORD)  # fmt: skip
    async with aiohttp.ClientSession() as http:
        admin = basic("admin")
        for device in DEVICES:
            async with http.post(
                f"{server.url}/api/v1/devices", json={**device, "model": "Tecno"}, headers=admin
            ) as resp:
                assert resp.status == 201, await resp.text()
        now = int(time.time() * 1000)
        messages = [
            {"id": f"m{n}", "from": phone, "content": text, "sms_sent": now, "sms_received": now}
            for n, (text, phone) in enumerate(TEXTS)
        ]
        async with http.post(
            f"{server.url}/api/sms",
            json={"messages": messages, "updates": []},
            headers=basic("gw"),
        ) as resp:
            assert resp.status == 200, await resp.text()
        for _ in range(200):  # the processor runs in the background: until all are done
            async with http.get(f"{server.url}/api/v1/sms/messages", headers=admin) as resp:
                incoming = (await resp.json())["incoming"]
            if len(incoming) == len(TEXTS) and all(m["outcome"] for m in incoming):
                return list(incoming)
            await asyncio.sleep(0.05)
    raise AssertionError(f"messages not processed: {incoming}")


async def log_in(browser: Browser, server: ServerProcess, name: str) -> None:
    await browser.send("Network.clearBrowserCookies")
    await browser.goto(f"{server.url}/supervisor/login")
    await browser.fill({"#name": name, "#password": PASSWORD})
    await browser.click("form[action='/supervisor/login'] button[type=submit]")
    assert await browser.js("location.pathname") == "/supervisor/workers"


async def check_page(browser: Browser, url: str, shots: Path, name: str) -> str:
    """Open ``url`` at both widths: no blocking axe violation, no sideways scroll on a phone,
    a screenshot of each. The page's text."""
    await browser.goto(url)
    for width in (PHONE, DESKTOP):
        await at_width(browser, width)
        violations = await check_accessibility(browser)
        assert violations == [], f"{name} at {width}px: {violations}"
        if width == PHONE:
            assert await page_width(browser) <= PHONE, f"{name} scrolls sideways at {PHONE}px"
        shot = shots / f"console-{name}-{width}.png"
        await browser.screenshot(shot, width, 900, mobile=width == PHONE)
        assert shot.stat().st_size > 0
        keep(shot)
    return str(await browser.js("document.body.innerText"))


async def test_device_pages_in_the_browser(
    org: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    await seed(org)
    text = await check_page(browser, f"{org.url}/supervisor/login", tmp_path, "login")
    assert "Log out" not in text and "Refused records" not in text  # nobody signed in yet
    await log_in(browser, org, "sam")
    text = await check_page(browser, f"{org.url}/supervisor/devices", tmp_path, "devices")
    assert "A1" in text and "B1" in text and "Times are shown in Africa/Nairobi." in text
    text = await check_page(browser, f"{org.url}/supervisor/devices/A1", tmp_path, "device")
    assert "Yes, I am sure" in text and "alice" in text
    # The search box finds a phone by its number, typed the local way.
    await browser.goto(f"{org.url}/supervisor/devices")
    await browser.fill({"#f-search": "0700 000 002"})
    await browser.click("form[role=search] button[type=submit]")
    found = await browser.js(
        "[...document.querySelectorAll('table.devices tbody a')].map(a => a.textContent)"
    )
    assert found == ["B1"]
    # Keyboard: the first Tab reaches the skip link, which leads to the content.
    for kind in ("rawKeyDown", "keyUp"):
        await browser.send(
            "Input.dispatchKeyEvent", type=kind, key="Tab", code="Tab", windowsVirtualKeyCode=9
        )
    assert await browser.js("document.activeElement.getAttribute('href')") == "#main"

    await log_in(browser, org, "dina")
    devices = await browser.js("document.body.innerText")
    assert "B1" in devices and "A1" not in devices and "alice" not in devices
    await browser.goto(f"{org.url}/supervisor/devices/A1")
    assert "Not found" in await browser.js("document.title")


async def test_sms_pages_in_the_browser(
    org: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    messages = await seed(org)
    jane = next(m for m in messages if m["content"] == "P 3 Jane")
    await log_in(browser, org, "sam")
    text = await check_page(browser, f"{org.url}/supervisor/sms", tmp_path, "sms")
    assert "P 3 Jane" in text and "P 99 Mary" in text and "P 4 Bea" in text
    await browser.js("document.querySelector('#s-outcome').value = 'invalid'")
    await browser.click("form.filters button[type=submit]")
    filtered = await browser.js("document.body.innerText")
    assert "P 99 Mary" in filtered and "P 3 Jane" not in filtered
    text = await check_page(browser, f"{org.url}/supervisor/sms?box=out", tmp_path, "sms-sent")
    assert "reminder" in text and "Jane registered" in text
    url = f"{org.url}/supervisor/sms/{jane['id']}"
    text = await check_page(browser, url, tmp_path, "sms-message")
    assert "Jane registered" in text and jane["patient_id"] in text

    await log_in(browser, org, "dina")
    await browser.goto(f"{org.url}/supervisor/sms")
    theirs = await browser.js("document.body.innerText")
    assert "P 4 Bea" in theirs and "Jane" not in theirs and "alice" not in theirs
    await browser.goto(url)
    assert "Not found" in await browser.js("document.title")
    assert "Jane" not in await browser.js("document.body.innerText")
