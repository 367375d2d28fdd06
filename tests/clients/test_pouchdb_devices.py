"""Device-bound sync with a real PouchDB 9 client and a real ``fieldsync serve``; and the
supervisor pages in a real headless Chromium (issue 3, point 7).

The app sends its device token the way a real app would: PouchDB's ``fetch`` option
adds ``X-Device-Token`` to every request (``server.remote(user, **headers)``).

The browser is Debian's ``chromium``, driven over the Chrome DevTools Protocol
(https://chromedevtools.github.io/devtools-protocol/) on a websocket: navigate,
fill and click with ``Runtime.evaluate``, wait for ``Page.loadEventFired``, and
``Page.captureScreenshot`` on a laptop and a phone-sized viewport.  Set
``FIELDSYNC_SCREENSHOTS=DIR`` to keep the screenshots.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from browser import Browser, keep
from pouch import PouchDriver, PouchError
from realserver import PASSWORD, Admin, ServerProcess, local_ids, make_docs

WAIT_MS = 20_000
TOKEN = "X-Device-Token"
IMEIS = ["490154203237518", "356938035643809", "353918056745215", "861536030196001"]


# -- seeding over HTTP, as an admin and as the worker's app ------------------------------------
async def add_device(
    admin: Admin, server: ServerProcess, serial: str, imei: str, worker: str
) -> None:
    body = {"serial": serial, "imei": imei, "worker": worker, "model": "Tecno Spark 8"}
    async with admin.session.post(f"{server.url}/api/v1/devices", json=body) as resp:
        assert resp.status == 201, await resp.text()


async def enrol(admin: Admin, server: ServerProcess, serial: str, worker: str) -> str:
    """Issue a code as the admin; the worker's app exchanges it for the device token."""
    async with admin.session.post(f"{server.url}/api/v1/devices/{serial}/enrolment-code") as resp:
        code = (await resp.json())["code"]
    basic = base64.b64encode(f"{worker}:{PASSWORD}".encode()).decode()
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Basic {basic}"}) as app,
        app.post(
            f"{server.url}/api/v1/devices/enroll", json={"code": code, "serial": serial}
        ) as resp,
    ):
        body = await resp.json()
        assert resp.status == 201, body
    return str(body["device_token"])


async def issued(admin: Admin, server: ServerProcess, serial: str, imei: str, worker: str) -> str:
    await add_device(admin, server, serial, imei, worker)
    return await enrol(admin, server, serial, worker)


def device(server: ServerProcess, user: str, token: str | None) -> dict[str, Any]:
    """A driver reference to the server's database, as ``user`` on a device."""
    return server.remote(user, **({TOKEN: token} if token else {}))


async def pull_as(
    pouch: PouchDriver, server: ServerProcess, user: str, token: str | None, db: str
) -> Any:
    return await pouch.call("replicate", source=device(server, user, token), target=db)


# -- PouchDB -------------------------------------------------------------------------------------
async def test_an_enrolled_device_syncs_and_an_unenrolled_one_is_refused(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    await admin.bulk_docs(make_docs("area-a1", 3, "a1"))
    token = await issued(admin, org, "A1", IMEIS[0], "alice")
    result = await pull_as(pouch, org, "alice", token, "phone")
    assert (result["status"], result["docs_written"]) == ("complete", 3)
    await pouch.call("bulk_docs", db="phone", docs=make_docs("area-a1", 2, "visit"))
    pushed = await pouch.call("replicate", source="phone", target=device(org, "alice", token))
    assert (pushed["docs_written"], pushed["doc_write_failures"]) == (2, 0)

    # With Basic credentials a refused device answers exactly like a wrong password (the
    # answer must not confirm the password); a session cookie would say why (sync.auth).
    for token_sent in (None, "forged"):
        with pytest.raises(PouchError) as refused:
            await pull_as(pouch, org, "alice", token_sent, f"stranger-{token_sent}")
        assert refused.value.status == 401
        assert "Name or password is incorrect." in json.dumps(refused.value.error)
        assert await local_ids(pouch, f"stranger-{token_sent}") == set()


async def test_a_lost_device_is_refused_at_once_while_the_workers_other_device_syncs(
    org: ServerProcess, admin: Admin, pouch: PouchDriver
) -> None:
    """Live syncs, as the app runs them; the driver stops before the server (open longpolls)."""
    lost = await issued(admin, org, "A1", IMEIS[0], "alice")
    spare = await issued(admin, org, "A2", IMEIS[1], "alice")
    await admin.bulk_docs(make_docs("area-a1", 2, "before"))
    handles = {}
    for name, token in (("lost", lost), ("spare", spare)):
        remote = device(org, "alice", token)
        # A short heartbeat lets the server notice the closed longpolls at the end quickly.
        options = {"heartbeat": 1000}
        started = await pouch.call("sync_start", local=name, remote=remote, options=options)
        handles[name] = started["handle"]
        until = {"local_has": "before-001"}
        await pouch.call("sync_wait", handle=handles[name], until=until, timeout_ms=WAIT_MS)

    async with admin.session.post(
        f"{org.url}/api/v1/devices/A1/status", json={"status": "lost", "reason": "on a bus"}
    ) as resp:
        assert resp.status == 200
    await admin.bulk_docs(make_docs("area-a1", 1, "after"))
    await pouch.call("bulk_docs", db="spare", docs=make_docs("area-a1", 1, "from-spare"))
    await pouch.call(
        "sync_wait", handle=handles["spare"], until={"local_has": "after-000"}, timeout_ms=WAIT_MS
    )
    await pouch.call("sync_wait", handle=handles["spare"], until={"pushed": 1}, timeout_ms=WAIT_MS)
    assert (await admin.get("from-spare-000"))[0] == 200

    # The lost phone's live sync heard of the change, and was refused fetching it.
    await pouch.call(
        "sync_wait", handle=handles["lost"], until={"event": "error"}, timeout_ms=WAIT_MS
    )
    stopped = await pouch.call("sync_cancel", handle=handles["lost"])
    await pouch.call("sync_cancel", handle=handles["spare"])
    errors = [e["info"] for e in stopped["events"] if e["event"] == "error"]
    assert errors and errors[0]["status"] == 401
    assert "Name or password is incorrect." in json.dumps(errors[0])  # Basic: see above
    assert "after-000" not in await local_ids(pouch, "lost")
    with pytest.raises(PouchError) as refused:
        await pull_as(pouch, org, "alice", lost, "lost")
    assert refused.value.status == 401


# -- a real browser (browser.py; the ``browser`` fixture is in conftest) ---------------------
async def test_a_supervisor_marks_a_phone_lost_in_a_browser_and_its_next_sync_is_refused(
    pouch: PouchDriver, admin: Admin, org: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    org.cli("place", "add", "district-c", "--parent", "country")
    org.cli("user", "add", "carol", "--role", "chw", "--place", "district-c", password=PASSWORD)
    lost = await issued(admin, org, "A1-TECNO", IMEIS[0], "alice")
    spare = await issued(admin, org, "A2-ITEL", IMEIS[1], "alice")
    await issued(admin, org, "B1-NOKIA", IMEIS[2], "bob")
    await issued(admin, org, "C1-SAMSUNG", IMEIS[3], "carol")  # outside sam's scope
    await pull_as(pouch, org, "alice", lost, "lost-phone")  # it synced before it was lost

    await browser.goto(f"{org.url}/supervisor/devices")  # not logged in: the login form
    assert await browser.js("location.pathname") == "/supervisor/login"
    await browser.fill({"#name": "sam", "#password": PASSWORD})
    await browser.click("form[action='/supervisor/login'] button[type=submit]")
    assert await browser.js("location.pathname") == "/supervisor/devices"
    serials = await browser.js(
        "[...document.querySelectorAll('table.devices tbody tr td:first-child a')]"
        ".map(a => a.textContent)"
    )
    assert serials == ["A1-TECNO", "A2-ITEL", "B1-NOKIA"]
    for name, width, height, mobile in (("laptop", 1280, 720, False), ("phone", 390, 844, True)):
        shot = tmp_path / f"devices-{name}.png"
        await browser.screenshot(shot, width, height, mobile)
        assert shot.stat().st_size > 5_000
        keep(shot)

    await browser.click("a[href='/supervisor/devices/A1-TECNO']")
    await browser.click("form[action$='/enrolment-code'] button")
    assert await browser.js("document.querySelector('svg.qr').getBoundingClientRect().width") > 150
    assert len(await browser.js("document.getElementById('enrolment-code').textContent")) == 11
    shot = tmp_path / "enrolment-code-phone.png"
    await browser.screenshot(shot, 390, 844, True)
    keep(shot)
    await browser.click("a[href='/supervisor/devices/A1-TECNO']")
    await browser.fill({"#grave-reason": "left on the bus to Kisumu"})
    await browser.js("document.getElementById('grave-confirm').checked = true")
    await browser.click("button[name=status][value=lost]")
    notice = await browser.js("document.querySelector('.msg').textContent")
    assert notice == "Status changed to lost. Its token no longer works."
    shot = tmp_path / "device-phone.png"
    await browser.screenshot(shot, 390, 844, True)
    keep(shot)

    with pytest.raises(PouchError) as refused:
        await pull_as(pouch, org, "alice", lost, "lost-phone")
    assert refused.value.status == 401
    assert "Name or password is incorrect." in json.dumps(refused.value.error)  # Basic
    result = await pull_as(pouch, org, "alice", spare, "spare-phone")
    assert result["status"] == "complete"
