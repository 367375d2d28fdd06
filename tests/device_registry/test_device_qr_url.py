"""The enrolment QR code's server URL comes from configuration, never from ``Host``
(issue 9, point 10): a QR code pointing phones at another server would hand it their
passwords and records."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from device_helpers import IMEIS, PASSWORD, Client, Devices

from device_registry import pages
from device_registry.context import server_url
from sync.app import create_app
from sync.config import Config, ConfigError, from_env

HOSTILE = {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
AppClient = Callable[..., Awaitable[TestClient[Any, Any]]]


async def issue(client: Client) -> dict[str, Any]:
    devices = Devices(client)
    await devices.add("A1", IMEIS[0], worker="alice")
    status, body = await devices.call("POST", "/api/v1/devices/A1/enrolment-code", "sam", **HOSTILE)
    assert status == 201, body
    return dict(json.loads(body["qr_payload"]))


async def test_without_a_public_url_the_qr_code_names_no_server(client: Client) -> None:
    payload = await issue(client)
    assert "server" not in payload and payload["serial"] == "A1"
    assert "evil" not in json.dumps(payload)


async def test_the_qr_code_names_the_public_url_whatever_the_host_header(
    aiohttp_client: AppClient, config: Config
) -> None:
    client = await aiohttp_client(
        create_app(replace(config, public_url="https://sync.example.org"))
    )
    assert (await issue(client))["server"] == "https://sync.example.org"


async def test_the_supervisor_page_qr_code_ignores_the_host_header(
    aiohttp_client: AppClient, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[str] = []
    real_svg = pages.qr.svg
    monkeypatch.setattr(pages.qr, "svg", lambda payload: shown.append(payload) or real_svg(payload))
    client = await aiohttp_client(
        create_app(replace(config, public_url="https://sync.example.org"))
    )
    await Devices(client).add("A1", IMEIS[0], worker="alice")
    page = await client.get("/supervisor/login")
    token = re.search(r'name="csrf" value="([^"]+)"', await page.text())
    assert token is not None
    form = {"name": "sam", "password": PASSWORD, "csrf": token.group(1)}
    assert (await client.post("/supervisor/login", data=form, allow_redirects=False)).status == 303
    page = await client.get("/supervisor/devices/A1")  # the token is bound to the session
    token = re.search(r'name="csrf" value="([^"]+)"', await page.text())
    assert token is not None
    response = await client.post(
        "/supervisor/devices/A1/enrolment-code", data={"csrf": token.group(1)}, headers=HOSTILE
    )
    assert response.status == 200, await response.text()
    assert [json.loads(p)["server"] for p in shown] == ["https://sync.example.org"]


@pytest.mark.parametrize(
    ("host", "tls", "expected"),
    [
        ("127.0.0.1", False, None),  # loopback: behind a proxy, or a test box
        ("0.0.0.0", False, None),  # every address: which one phones reach is unknown
        ("::", False, None),
        ("sync.local", False, None),
        ("10.0.0.5", False, "http://10.0.0.5:5984"),
        ("10.0.0.5", True, "https://10.0.0.5:5984"),
        ("fd00::5", False, "http://[fd00::5]:5984"),
    ],
)
def test_without_a_public_url_a_reachable_listening_address_is_used(
    host: str, tls: bool, expected: str | None
) -> None:
    config = Config(host=host, port=5984, tls_cert=Path("cert.pem") if tls else None)
    assert server_url(config) == expected


@pytest.mark.parametrize("bad", ["sync.example.org", "ftp://x", "https://x.org/?a=1", "http://x:0"])
def test_a_public_url_that_is_not_one_is_refused_at_start(bad: str) -> None:
    with pytest.raises(ConfigError, match="FIELDSYNC_PUBLIC_URL"):
        from_env(env={"FIELDSYNC_PUBLIC_URL": bad})


def test_a_public_url_loses_its_trailing_slash() -> None:
    config = from_env(env={"FIELDSYNC_PUBLIC_URL": "https://sync.example.org/fs/"})
    assert config.public_url == "https://sync.example.org/fs"
