"""Headless Chromium driven over the Chrome DevTools Protocol, for tests with a real browser.

Debian's ``chromium`` on a websocket (https://chromedevtools.github.io/devtools-protocol/):
navigate, fill and click with ``Runtime.evaluate``, wait for ``Page.loadEventFired``,
``Page.captureScreenshot``.  The ``browser`` fixture (conftest) gives a test one page.
Set ``FIELDSYNC_SCREENSHOTS=DIR`` to keep the screenshots a test takes (``keep``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from realserver import free_port


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
        await browser.send("Page.setDownloadBehavior", behavior="deny")  # nothing on disk
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
                if not waiter.done():  # a waiter given up on (a download loads no page)
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

    async def open(self, url: str) -> str | None:
        """Navigate like a click on a link: None once the page has loaded, or Chromium's
        reason for showing no page (``net::ERR_ABORTED`` for a download, which is denied)."""
        loaded = self._next("Page.loadEventFired")
        result = await self.send("Page.navigate", url=url)
        if result.get("errorText"):
            loaded.cancel()
            return str(result["errorText"])
        await asyncio.wait_for(loaded, 15)
        return None

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


def keep(shot: Path) -> None:
    target = os.environ.get("FIELDSYNC_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / shot.name)
