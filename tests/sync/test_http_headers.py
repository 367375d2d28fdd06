"""Security headers (issue 9, points 1 and 10): stored attachments never act in our origin,
every answer is uncacheable and unframeable, JSON is never sniffed, no version banner,
HSTS under TLS."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sync_fixtures import PASSWORD, Api, Client, as_user

from sync.app import create_app
from sync.config import Config
from sync.forwarded import parse_networks

SCRIPT = b"<script>fetch('/api/v1/devices').then(r => r.text()).then(alert)</script>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>'
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
SANDBOX = "sandbox; default-src 'none'"


async def store_attachments(api: Api) -> None:
    """alice (a CHW) stores active content in her place, as any phone could."""
    attachments = {
        name: {"content_type": kind, "data": base64.b64encode(data).decode()}
        for name, kind, data in (
            ("note.html", "text/html", SCRIPT),
            ("drawing.svg", "image/svg+xml", SVG),
            ("wound.png", "image/png", PNG),
        )
    }
    doc = {"_id": "visit-1", "place": "area-a1", "_attachments": attachments}
    status, body = await api.call("PUT", "/health/visit-1", "alice", doc)
    assert status == 201, body


async def log_in(client: Client, name: str) -> None:
    response = await client.post("/_session", json={"name": name, "password": PASSWORD})
    assert response.status == 200


@pytest.mark.parametrize(
    ("name", "kind", "data"),
    [("note.html", "text/html", SCRIPT), ("drawing.svg", "image/svg+xml", SVG)],
)
async def test_active_attachments_are_sandboxed_downloads(
    client: Client, api: Api, name: str, kind: str, data: bytes
) -> None:
    await store_attachments(api)
    await log_in(client, "sam")  # a supervisor opens it in a browser
    response = await client.get(f"/health/visit-1/{name}")
    assert response.status == 200 and await response.read() == data
    assert response.headers["Content-Type"] == kind  # PouchDB reads it back
    assert response.headers["Content-Security-Policy"] == SANDBOX
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Disposition"] == f"attachment; filename*=UTF-8''{name}"


async def test_a_raster_image_is_shown_inline_but_sandboxed(client: Client, api: Api) -> None:
    await store_attachments(api)
    response = await client.get("/health/visit-1/wound.png", headers=as_user("sam"))
    assert response.status == 200 and await response.read() == PNG
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Security-Policy"] == SANDBOX
    assert "Content-Disposition" not in response.headers


async def test_an_odd_attachment_name_cannot_break_the_header(client: Client, api: Api) -> None:
    name = 'a"; filename=evil.html'
    doc = {
        "_id": "visit-2",
        "place": "area-a1",
        "_attachments": {name: {"content_type": "text/plain", "data": "aGk="}},
    }
    assert (await api.call("PUT", "/health/visit-2", "alice", doc))[0] == 201
    response = await client.get(
        "/health/visit-2/a%22%3B%20filename%3Devil.html", headers=as_user("sam")
    )
    assert response.status == 200
    assert response.headers["Content-Disposition"] == (
        "attachment; filename*=UTF-8''a%22%3B%20filename%3Devil.html"
    )


BASELINE = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Server": "fieldsync",
}
JSON_CSP = "default-src 'none'; frame-ancestors 'none'"


def assert_baseline(headers: Any, what: str) -> None:
    for name, value in BASELINE.items():
        assert headers.get(name) == value, (what, name, headers.get(name))
    assert "Strict-Transport-Security" not in headers  # plain HTTP here


@pytest.mark.parametrize(
    ("method", "path", "user", "status"),
    [
        ("GET", "/", None, 200),
        ("GET", "/health/", "alice", 200),
        ("GET", "/health/_changes", "alice", 200),
        ("GET", "/health/_all_docs?include_docs=true", "sam", 200),
        ("POST", "/health/_bulk_get", "alice", 200),
        ("GET", "/health/visit-1", "sam", 200),
        ("GET", "/api/v1/devices", "sam", 200),
        ("GET", "/health/_changes", None, 401),  # errors too
        ("GET", "/health/nothing-here", "alice", 404),
        ("PATCH", "/_session", "alice", 405),
    ],
)
async def test_every_json_answer_is_unsniffable_and_uncacheable(
    client: Client, api: Api, method: str, path: str, user: str | None, status: int
) -> None:
    await store_attachments(api)
    headers = as_user(user) if user else {}
    body = {"docs": [{"id": "visit-1"}]} if path.endswith("_bulk_get") else None
    response = await client.request(method, path, headers=headers, json=body)
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"].startswith("application/json")
    assert_baseline(response.headers, path)
    assert response.headers["Content-Security-Policy"] == JSON_CSP


async def test_a_streamed_longpoll_answer_has_the_headers_too(client: Client) -> None:
    """``_changes?feed=longpoll`` sends its headers before any middleware sees the answer."""
    path = "/health/_changes?feed=longpoll&since=now&timeout=100"
    response = await client.get(path, headers=as_user("alice"))
    assert response.status == 200
    assert_baseline(response.headers, "longpoll")


async def test_csv_and_the_supervisor_pages_are_uncacheable(client: Client) -> None:
    csv = await client.get("/api/v1/devices?format=csv", headers=as_user("sam"))
    assert csv.status == 200 and csv.headers["Content-Type"].startswith("text/csv")
    assert_baseline(csv.headers, "csv")
    for path in ("/supervisor/login", "/supervisor/sms"):
        page = await client.get(path, allow_redirects=False)
        # same-origin, not no-referrer: their own form posts must carry a real Origin
        assert page.headers["Referrer-Policy"] == "same-origin"
        assert_baseline({**page.headers, "Referrer-Policy": "no-referrer"}, path)
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


@pytest.mark.parametrize("stored", ["text/html\r\nX-Evil: 1", "", "not a type", "image/png; x"])
async def test_an_attachment_stored_with_a_bad_type_is_still_served(
    client: Client, api: Api, monkeypatch: pytest.MonkeyPatch, stored: str
) -> None:
    """Data written before content types were checked: served as bytes, never a 500."""
    monkeypatch.setattr("sync.replication.documents._MEDIA_TYPE", re.compile(r".*", re.S))
    att = {"content_type": stored, "data": base64.b64encode(SCRIPT).decode()}
    doc = {"_id": "old-1", "place": "area-a1", "_attachments": {"a": att}}
    status, body = await api.call("PUT", "/health/old-1", "alice", doc)
    assert status == 201, body
    response = await client.get("/health/old-1/a", headers=as_user("alice"))
    assert response.status == 200 and await response.read() == SCRIPT
    expected = "image/png" if stored == "image/png; x" else "application/octet-stream"
    assert response.headers["Content-Type"] == expected
    assert "X-Evil" not in response.headers
    assert response.headers["Content-Security-Policy"] == SANDBOX


async def test_svg_and_csv_answers_may_load_and_run_nothing(client: Client) -> None:
    """An ID card's SVG is drawn from a name a CHW typed: it gets no script, no loads."""
    for path in ("/api/v1/patient-ids/10000X/card?format=svg", "/api/v1/devices?format=csv"):
        response = await client.get(path, headers=as_user("sam"))
        assert response.status == 200, await response.text()
        assert response.headers["Content-Security-Policy"] == JSON_CSP, path
        assert_baseline(response.headers, path)


async def test_aiohttps_own_error_answers_carry_no_version_banner(client: Client) -> None:
    """A malformed request line is answered before any route (and any hook) runs."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = (await reader.read(4096)).decode("latin-1")
    writer.close()
    assert head.split(" ", 2)[1] == "400"
    server = [line for line in head.split("\r\n") if line.lower().startswith("server:")]
    assert server == ["Server: fieldsync"]


AppClient = Callable[..., Awaitable[TestClient[Any, Any]]]


async def client_for(aiohttp_client: AppClient, config: Config) -> Client:
    return await aiohttp_client(create_app(config))


HSTS = "max-age=31536000; includeSubDomains"


async def test_hsts_when_the_server_speaks_tls_itself(
    aiohttp_client: AppClient, config: Config, tmp_path: Path
) -> None:
    tls = replace(config, tls_cert=tmp_path / "cert.pem", tls_key=tmp_path / "key.pem")
    client = await client_for(aiohttp_client, tls)
    for path in ("/", "/health/nothing"):
        response = await client.get(path)
        assert response.headers["Strict-Transport-Security"] == HSTS


@pytest.mark.parametrize(("proxies", "hsts"), [("127.0.0.1", True), ("10.9.9.9", False)])
async def test_hsts_behind_a_tls_proxy_only_when_the_proxy_is_trusted(
    aiohttp_client: AppClient, config: Config, proxies: str, hsts: bool
) -> None:
    behind = replace(config, trusted_proxies=parse_networks(proxies))
    client = await client_for(aiohttp_client, behind)
    for path in ("/", "/health/_changes?feed=longpoll&since=now&timeout=50"):
        response = await client.get(
            path, headers={"X-Forwarded-Proto": "https", **as_user("alice")}
        )
        assert response.status == 200
        assert ("Strict-Transport-Security" in response.headers) is hsts
