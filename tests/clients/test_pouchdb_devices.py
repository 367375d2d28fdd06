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

import asyncio
import base64
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pouch import PouchDriver, PouchError
from realserver import PASSWORD, Admin, ServerProcess, free_port, local_ids, make_docs

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


# -- a real browser ----------------------------------------------------------------------------
class Browser:
    """Headless Chromium on one page, over the DevTools protocol."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        session: aiohttp.ClientSession,
        ws: aiohttp.ClientWebSocketResponse,
    ) -> None:
        self._process, self._session, self._ws = process, session, ws
        self._next_id = 0
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, profile: Path) -> Browser:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            pytest.skip("chromium is not installed (apt-get install -y chromium)")
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={profile}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        session = aiohttp.ClientSession()
        try:
            url = await cls._page_socket(session, port)
            ws = await session.ws_connect(url, max_msg_size=0)
        except BaseException:
            await session.close()
            process.kill()
            await process.wait()
            raise
        browser = cls(process, session, ws)
        await browser.send("Page.enable")
        return browser

    @staticmethod
    async def _page_socket(session: aiohttp.ClientSession, port: int) -> str:
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    pages = [t for t in await resp.json() if t["type"] == "page"]
                    if pages:
                        return str(pages[0]["webSocketDebuggerUrl"])
            await asyncio.sleep(0.05)
        raise RuntimeError("chromium did not open its DevTools port")

    async def _read(self) -> None:
        async for message in self._ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self._answers:
                self._answers.pop(data["id"]).set_result(data)
            for waiter in self._events.pop(data.get("method", ""), []):
                waiter.set_result(data.get("params", {}))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        answer = asyncio.get_running_loop().create_future()
        self._answers[self._next_id] = answer
        await self._ws.send_json({"id": self._next_id, "method": method, "params": params})
        data = await asyncio.wait_for(answer, 15)
        if "error" in data:
            raise RuntimeError(f"{method}: {data['error']}")
        return dict(data["result"])

    def _next(self, event: str) -> asyncio.Future[dict[str, Any]]:
        waiter = asyncio.get_running_loop().create_future()
        self._events.setdefault(event, []).append(waiter)
        return waiter

    async def goto(self, url: str) -> None:
        loaded = self._next("Page.loadEventFired")
        await self.send("Page.navigate", url=url)
        await asyncio.wait_for(loaded, 15)

    async def js(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def click(self, selector: str) -> None:
        """Click and wait for the page it leads to."""
        loaded = self._next("Page.loadEventFired")
        await self.js(f"document.querySelector({json.dumps(selector)}).click()")
        await asyncio.wait_for(loaded, 15)

    async def fill(self, fields: dict[str, str]) -> None:
        for selector, value in fields.items():
            await self.js(
                f"document.querySelector({json.dumps(selector)}).value = {json.dumps(value)}"
            )

    async def screenshot(self, path: Path, width: int, height: int, mobile: bool) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=2 if mobile else 1,
            mobile=mobile,
        )
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        await self.send("Emulation.clearDeviceMetricsOverride")

    async def close(self) -> None:
        await self._ws.close()
        await self._session.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._process.terminate()
        try:
            await asyncio.wait_for(self._process.wait(), 5)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    started = await Browser.start(tmp_path / "chromium-profile")
    try:
        yield started
    finally:
        await started.close()


def keep(shot: Path) -> None:
    target = os.environ.get("FIELDSYNC_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / shot.name)


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
    await browser.fill({"#status-reason": "left on the bus to Kisumu"})
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
