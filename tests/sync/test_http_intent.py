"""Cookie-authenticated state changes need proof of intent (issue 9, point 8).

A cross-site page can make a logged-in supervisor's browser POST ``text/plain`` or a
form with the ``AuthSession`` cookie; such requests are refused (403) and change
nothing.  JSON bodies, HTTP Basic and device-token requests pass; a foreign
``Origin`` is refused.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sync_fixtures import PASSWORD, Api, Client, as_user

from sync.app import create_app
from sync.config import Config

DOC = {"_id": "forged", "place": "area-a1", "note": "written by another site"}
BULK = json.dumps({"docs": [DOC]})
IMEI = "490154203237518"


async def log_in(client: Client, name: str = "admin") -> None:
    response = await client.post("/_session", json={"name": name, "password": PASSWORD})
    assert response.status == 200


def own(client: Client) -> str:
    return f"http://{client.host}:{client.port}"


async def assert_refused(response: Any, words: str) -> None:
    body = await response.json()
    assert (response.status, body["error"]) == (403, "forbidden"), body
    assert words in body["reason"]


async def nothing_written(api: Api) -> None:
    assert (await api.call("GET", "/health/forged"))[0] == 404
    assert (await api.call("GET", "/api/v1/devices/X1"))[0] == 404


DEVICE = json.dumps({"serial": "X1", "imei": IMEI, "place": "area-a1"})
CROSS_SITE = [
    ("POST", "/health/_bulk_docs", BULK, "text/plain"),
    ("POST", "/health/_bulk_docs", BULK, "application/x-www-form-urlencoded"),
    ("POST", "/health/_bulk_docs", BULK, "multipart/form-data; boundary=x"),
    ("POST", "/health", json.dumps(DOC), "text/plain"),
    ("PUT", "/health/forged", json.dumps(DOC), "text/plain"),
    ("POST", "/api/v1/devices", DEVICE, "text/plain"),
    ("POST", "/api/v1/devices", "serial=X1&imei=" + IMEI, "application/x-www-form-urlencoded"),
    ("POST", "/api/v1/devices", DEVICE, None),
]


@pytest.mark.parametrize(("method", "path", "body", "kind"), CROSS_SITE)
async def test_a_cookie_request_a_cross_site_page_could_send_is_refused(
    client: Client, api: Api, method: str, path: str, body: str, kind: str | None
) -> None:
    await log_in(client)
    headers = {} if kind is None else {"Content-Type": kind}
    response = await client.request(method, path, data=body.encode(), headers=headers)
    await assert_refused(response, "needs a JSON body")
    await nothing_written(api)


@pytest.mark.parametrize(("method", "path", "body", "kind"), CROSS_SITE)
async def test_the_same_request_with_basic_auth_is_not_a_forgery(
    client: Client, method: str, path: str, body: str, kind: str | None
) -> None:
    """Only the cookie rides along on another site's request; Basic and tokens do not."""
    headers = {**as_user("admin"), **({} if kind is None else {"Content-Type": kind})}
    headers["Origin"] = "https://app.example.org"  # PouchDB in an app served elsewhere
    response = await client.request(method, path, data=body.encode(), headers=headers)
    assert response.status != 403, await response.text()


JSON_CHANGES = [
    ("POST", "/health/_bulk_docs", {"docs": [DOC]}),
    ("PUT", "/health/forged", DOC),
    ("POST", "/api/v1/devices", {"serial": "X1", "imei": IMEI, "place": "area-a1"}),
]


@pytest.mark.parametrize(("method", "path", "body"), JSON_CHANGES)
@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:1"])
async def test_a_cookie_request_from_another_origin_is_refused_even_as_json(
    client: Client, api: Api, method: str, path: str, body: Any, origin: str
) -> None:
    await log_in(client)
    response = await client.request(method, path, json=body, headers={"Origin": origin})
    await assert_refused(response, "is not this server")
    await nothing_written(api)


@pytest.mark.parametrize(("method", "path", "body"), JSON_CHANGES)
@pytest.mark.parametrize("send_origin", [False, True])
async def test_cookie_json_from_our_own_origin_passes(
    client: Client, method: str, path: str, body: Any, send_origin: bool
) -> None:
    await log_in(client)
    headers = {"Origin": own(client)} if send_origin else {}
    response = await client.request(method, path, json=body, headers=headers)
    assert response.status in (200, 201), await response.text()


async def test_public_url_is_our_origin_too(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], config: Config
) -> None:
    public = replace(config, public_url="https://sync.example.org")
    client = await aiohttp_client(create_app(public))
    await log_in(client)
    for origin in ("https://sync.example.org", "https://SYNC.example.org:443"):
        response = await client.post(
            "/health/_bulk_docs", json={"docs": [{"place": "area-a1"}]}, headers={"Origin": origin}
        )
        assert response.status == 201, await response.text()
    response = await client.post(
        "/health/_bulk_docs", json={"docs": []}, headers={"Origin": "http://sync.example.org"}
    )
    await assert_refused(response, "is not this server")


async def test_login_needs_no_proof_but_a_foreign_origin_is_refused(client: Client) -> None:
    creds = {"name": "alice", "password": PASSWORD}
    refused = await client.post("/_session", json=creds, headers={"Origin": "https://evil.example"})
    await assert_refused(refused, "is not this server")
    assert "Set-Cookie" not in refused.headers
    await log_in(client, "alice")  # a stale cookie is there: logging in again still works
    again = await client.post("/_session", json=creds, headers={"Origin": own(client)})
    assert again.status == 200
    logout = await client.delete("/_session")
    assert logout.status == 200


async def test_deleting_with_the_cookie_needs_no_body(client: Client, api: Api) -> None:
    """Browsers never send DELETE cross-site without a preflight (which we never grant)."""
    rev = (await api.bulk([{"_id": "gone", "place": "area-a1"}]))[0]["rev"]
    await log_in(client)
    response = await client.delete(f"/health/gone?rev={rev}")
    assert response.status == 200, await response.text()
    response = await client.delete(
        f"/health/gone?rev={rev}", data=b"x", headers={"Content-Type": "text/plain"}
    )
    await assert_refused(response, "needs a JSON body")


async def test_attachment_uploads_with_the_cookie(client: Client, api: Api) -> None:
    """The body is the file: a type no form can send, or our own Origin, proves intent."""
    rev = (await api.bulk([{"_id": "visit", "place": "area-a1"}]))[0]["rev"]
    await log_in(client)
    url = "/health/visit/photo"
    plain = {"Content-Type": "text/plain"}
    response = await client.put(f"{url}.txt?rev={rev}", data=b"note", headers=plain)
    await assert_refused(response, "needs a JSON body")
    response = await client.put(
        f"{url}.txt?rev={rev}", data=b"note", headers={**plain, "Origin": "https://evil.example"}
    )
    await assert_refused(response, "is not this server")
    response = await client.put(
        f"{url}.txt?rev={rev}", data=b"note", headers={**plain, "Origin": own(client)}
    )
    assert response.status == 201, await response.text()
    rev = (await response.json())["rev"]
    png = {"Content-Type": "image/png"}
    response = await client.put(f"{url}.png?rev={rev}", data=b"\x89PNG", headers=png)
    assert response.status == 201, await response.text()


async def test_a_device_token_request_is_not_checked(client: Client) -> None:
    """A custom header needs a preflight cross-site: the request comes from our app."""
    await log_in(client, "alice")
    response = await client.post(
        "/health/_bulk_docs",
        data=BULK.encode(),
        headers={"Content-Type": "text/plain", "X-Device-Token": "t0k3n"},
    )
    assert response.status != 403 or "JSON body" not in (await response.json())["reason"]


async def test_reads_with_the_cookie_are_not_checked(client: Client) -> None:
    await log_in(client, "alice")
    response = await client.get("/health/_all_docs", headers={"Origin": "https://evil.example"})
    assert response.status == 200
