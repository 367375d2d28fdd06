"""The supervisor pages in-process: log in, scope, CSRF, cookies, actions, the QR code."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from http.cookies import SimpleCookie
from pathlib import Path

from device_helpers import IMEIS, PASSWORD, Client, Devices

from sync.app import create_app
from sync.config import Config


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def cookie_flags(response_headers: object, name: str) -> dict[str, str | bool]:
    for header in response_headers.getall("Set-Cookie", []):  # type: ignore[attr-defined]
        jar: SimpleCookie = SimpleCookie(header)
        if name in jar:
            morsel = jar[name]
            return {k: morsel[k] for k in ("httponly", "samesite", "secure", "path")}
    raise AssertionError(f"no {name} cookie set")


async def log_in(client: Client, name: str, password: str = PASSWORD) -> tuple[int, str]:
    page = await client.get("/supervisor/login")
    form = {"name": name, "password": password, "csrf": csrf_of(await page.text())}
    response = await client.post("/supervisor/login", data=form, allow_redirects=False)
    return response.status, response.headers.get("Location", await response.text())


async def fleet(devices: Devices) -> None:
    await devices.add("A1", IMEIS[0], worker="alice", model="Tecno Pop 5")
    await devices.add("B1", IMEIS[1], worker="bob")
    await devices.add("C1", IMEIS[2], worker="carol")


async def test_pages_ask_to_log_in_first(client: Client) -> None:
    response = await client.get("/supervisor/devices?status=lost", allow_redirects=False)
    assert response.status == 303
    assert (
        response.headers["Location"]
        == "/supervisor/login?next=%2Fsupervisor%2Fdevices%3Fstatus%3Dlost"
    )
    page = await client.get("/supervisor/login")
    assert page.status == 200 and "Supervisor log in" in await page.text()
    assert cookie_flags(page.headers, "fieldsync_csrf") == {
        "httponly": True,
        "samesite": "Strict",
        "secure": "",
        "path": "/supervisor",
    }
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


async def test_logging_in(client: Client) -> None:
    assert (await log_in(client, "sam", "wrong password"))[0] == 401
    # A CHW's right password, without her enrolled phone, tells nothing (issue 9, point 3):
    status, text = await log_in(client, "alice")
    assert status == 401 and "Wrong user name or password." in text
    response = await client.post(
        "/supervisor/login", data={"name": "sam", "password": PASSWORD}, allow_redirects=False
    )
    assert response.status == 403  # no CSRF token
    page = await client.get("/supervisor/login")
    form = {
        "name": "sam",
        "password": PASSWORD,
        "csrf": csrf_of(await page.text()),
        "next": "/supervisor/devices?status=lost",
    }
    response = await client.post("/supervisor/login", data=form, allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (
        303,
        "/supervisor/devices?status=lost",
    )
    assert cookie_flags(response.headers, "AuthSession") == {
        "httponly": True,
        "samesite": "Lax",
        "secure": "",
        "path": "/",
    }


async def test_the_session_cookie_is_secure_under_https(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(replace(config, tls_cert=tmp_path / "cert.pem")))
    page = await client.get("/supervisor/login")
    assert cookie_flags(page.headers, "fieldsync_csrf")["secure"] is True
    nonce = page.cookies["fieldsync_csrf"].value  # a browser would send it only over HTTPS
    form = {"name": "sam", "password": PASSWORD, "csrf": csrf_of(await page.text())}
    response = await client.post(
        "/supervisor/login",
        data=form,
        headers={"Cookie": f"fieldsync_csrf={nonce}"},
        allow_redirects=False,
    )
    assert cookie_flags(response.headers, "AuthSession")["secure"] is True


async def test_no_open_redirect_after_login(client: Client) -> None:
    page = await client.get("/supervisor/login")
    form = {
        "name": "sam",
        "password": PASSWORD,
        "csrf": csrf_of(await page.text()),
        "next": "//evil.example/supervisor/",
    }
    response = await client.post("/supervisor/login", data=form, allow_redirects=False)
    assert response.headers["Location"] == "/supervisor/workers"


async def test_the_list_shows_the_supervisors_places_only(client: Client, devices: Devices) -> None:
    await fleet(devices)
    await devices.mark("B1", "lost")
    await log_in(client, "sam")
    html = await (await client.get("/supervisor/devices")).text()
    assert ">A1</a>" in html and ">B1</a>" in html and "C1" not in html
    assert "Assigned 1</a>" in html and "Lost 1</a>" in html and "All 2</a>" in html
    assert "Tecno Pop 5" in html
    assert 'class="quiet">never' in html  # assigned and never synced: flagged
    lost = await (await client.get("/supervisor/devices?status=lost")).text()
    assert ">B1</a>" in lost and ">A1</a>" not in lost
    csv = await client.get("/api/v1/devices?format=csv")  # the page's download link
    assert csv.content_type == "text/csv" and "C1" not in await csv.text()
    bad = await client.get("/supervisor/devices?sort=imei")
    assert bad.status == 400 and "sort must be one of" in await bad.text()


async def test_marking_a_device_lost_from_its_page(client: Client, devices: Devices) -> None:
    token = await devices.issued("A1", IMEIS[0], "alice")
    await log_in(client, "sam")
    page = await (await client.get("/supervisor/devices/A1")).text()
    assert 'value="lost"' in page and "Issue enrolment code" in page
    form = {"csrf": csrf_of(page), "status": "lost", "reason": "left on the bus", "confirm": "yes"}
    response = await client.post("/supervisor/devices/A1/status", data=form, allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (
        303,
        "/supervisor/devices/A1?done=lost",
    )
    shown = await (await client.get(response.headers["Location"])).text()
    assert "Status changed to lost. Its token no longer works." in shown
    assert "left on the bus" in shown
    assert (await devices.call("GET", "/health/_changes", "alice", token=token))[0] == 401
    shown = await (await client.get("/supervisor/devices/A1")).text()
    assert "Refused attempts" in shown and "it was reported lost" in shown


async def test_forms_without_a_valid_csrf_token_change_nothing(
    client: Client, devices: Devices
) -> None:
    await fleet(devices)
    await log_in(client, "sam")
    for form in ({"status": "lost"}, {"status": "lost", "csrf": "0" * 64}):
        response = await client.post("/supervisor/devices/A1/status", data=form)
        assert response.status == 403 and "Form expired" in await response.text()
    page = await (await client.get("/supervisor/devices/A1")).text()
    token = csrf_of(page)
    client.session.cookie_jar.clear_domain("127.0.0.1")  # another session: token is void
    await log_in(client, "sam")
    response = await client.post(
        "/supervisor/devices/A1/status", data={"status": "lost", "csrf": token}
    )
    assert response.status == 403
    _, body = await devices.call("GET", "/api/v1/devices/A1")
    assert body["status"] == "assigned"


async def test_refused_actions_are_explained_on_the_page(client: Client, devices: Devices) -> None:
    await fleet(devices)
    await devices.mark("A1", "retired")
    await log_in(client, "sam")
    page = await (await client.get("/supervisor/devices/A1")).text()
    assert "nothing more can change" in page
    response = await client.post(
        "/supervisor/devices/A1/assign", data={"csrf": csrf_of(page), "worker": "alice"}
    )
    assert response.status == 409
    assert "cannot go from retired to assigned" in await response.text()
    read_only = await (await client.get("/supervisor/devices/B1")).text()
    assert 'value="lost"' not in read_only  # district-b is read-only for sam: no actions
    response = await client.post(
        "/supervisor/devices/B1/status",
        data={"csrf": csrf_of(read_only), "status": "lost", "reason": "x", "confirm": "yes"},
    )
    assert response.status == 403 and "may only read" in await response.text()
    response = await client.get("/supervisor/devices/C1")
    assert response.status == 404


async def test_assigning_and_issuing_a_code_with_its_qr(client: Client, devices: Devices) -> None:
    await devices.add("S1", IMEIS[0], place="area-a2")
    await log_in(client, "sam")
    page = await (await client.get("/supervisor/devices/S1")).text()
    assert '<option value="alice">' in page and "bob" not in page  # bob: read-only scope
    response = await client.post(
        "/supervisor/devices/S1/assign", data={"csrf": csrf_of(page), "worker": "alice"}
    )
    page = await response.text()
    assert "Assigned. Issue an enrolment code" in page
    response = await client.post(
        "/supervisor/devices/S1/enrolment-code", data={"csrf": csrf_of(page)}
    )
    html = await response.text()
    assert response.status == 200 and "<svg" in html and 'class="qr"' in html
    code = re.search(r'id="enrolment-code">([0-9A-Z-]+)<', html)
    assert code is not None
    status, body = await devices.call(
        "POST", "/api/v1/devices/enroll", "alice", {"code": code.group(1), "serial": "S1"}
    )
    assert status == 201 and body["device_token"]


async def test_logging_out(client: Client, devices: Devices) -> None:
    await log_in(client, "sam")
    response = await client.post("/supervisor/logout", allow_redirects=False)
    assert response.status == 303
    response = await client.get("/supervisor/devices", allow_redirects=False)
    assert response.status == 303


async def test_everything_shown_is_escaped(client: Client, devices: Devices) -> None:
    await devices.add("A1", IMEIS[0], worker="alice", model="<script>alert(1)</script>")
    await log_in(client, "sam")
    html = await (await client.get("/supervisor/devices")).text()
    assert "<script>" not in html and "&lt;script&gt;" in html
