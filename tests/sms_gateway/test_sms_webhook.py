"""The SMS-provider webhook (Africa's Talking style) and sending through the provider."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sms_fixtures import ALICE_PHONE, Client, Gateway

from sms_gateway.provider import WEBHOOK_LIMITS

SECRET = "webhook-secret-1"
HOOK = "/api/v1/sms/webhook/africastalking"
WITH_SECRET = {"X-Webhook-Secret": SECRET}


class FakeProvider:
    """The provider's send API: records what it is asked to send, answers like the real one."""

    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []
        self.refuse = False

    async def handle(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        assert request.headers["apiKey"] == "key-1"
        self.sent.append({k: str(v) for k, v in form.items()})
        status = (406, "UserInBlacklist") if self.refuse else (101, "Success")
        recipient = {"statusCode": status[0], "status": status[1], "number": form["to"]}
        recipient["messageId"] = f"ATXid_{len(self.sent)}"
        return web.json_response({"SMSMessageData": {"Recipients": [recipient]}})


@pytest.fixture
async def provider(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> tuple[FakeProvider, TestServer]:
    fake = FakeProvider()
    app = web.Application()
    app.router.add_post("/version1/messaging", fake.handle)
    return fake, await aiohttp_server(app)


@pytest.fixture
def sms_settings(provider: tuple[FakeProvider, TestServer]) -> dict[str, Any]:
    server = provider[1]
    return {
        "tick": 0.05,
        "webhook_secret": SECRET,
        "provider_url": str(server.make_url("/version1/messaging")),
        "provider_username": "sandbox",
        "provider_api_key": "key-1",
        "provider_sender": "12345",
    }


def incoming(text: str, msg_id: str = "ATXid_in_1") -> dict[str, str]:
    return {"from": ALICE_PHONE, "to": "12345", "text": text, "id": msg_id, "date": ""}


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not within time")


async def test_the_secret_is_required(client: Client) -> None:
    assert (await client.post(HOOK, data=incoming("P 3 Jane"))).status == 403
    wrong = {"X-Webhook-Secret": "wrong"}
    assert (await client.post(HOOK, data=incoming("P 3 Jane"), headers=wrong)).status == 403
    response = await client.post(HOOK, data=incoming("P 3 Jane"), headers=WITH_SECRET)
    assert response.status == 200
    hook = "/api/v1/sms/webhook/other"
    assert (await client.post(hook, data={}, headers=WITH_SECRET)).status == 404
    response = await client.post(HOOK, data={"hello": "world"}, headers=WITH_SECRET)
    assert response.status == 400


async def test_a_secret_in_the_query_string_is_refused(client: Client) -> None:
    """Query strings end up in proxy logs: even the right secret there is a 400 naming
    the header."""
    response = await client.post(f"{HOOK}?secret={SECRET}", data=incoming("P 3 Jane"))
    body = await response.json()
    assert (response.status, body["error"]) == (400, "bad_request")
    assert "X-Webhook-Secret" in body["reason"] and "query string" in body["reason"]


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data", "application/x-www-form-urlencoded; charset=latin-9"]
)
async def test_an_unreadable_form_is_a_400(client: Client, content_type: str) -> None:
    """A multipart body without its boundary, or a charset Python does not know."""
    headers = {**WITH_SECRET, "Content-Type": content_type}
    response = await client.post(HOOK, data=b"from=%2B1&text=P+3+Jane", headers=headers)
    body = await response.json()
    assert (response.status, body["error"]) == (400, "bad_request"), body


async def test_parallel_secret_guesses_never_pass_the_limit(client: Client) -> None:
    """Each guess is counted before the secret is compared: of 200 concurrent guesses from
    one address, only the limit's worth are compared; then even the right secret waits."""
    limit = WEBHOOK_LIMITS["ip"].failures
    guesses = [
        client.post(HOOK, data=incoming("x"), headers={"X-Webhook-Secret": f"guess-{n}"})
        for n in range(200)
    ]
    statuses = [r.status for r in await asyncio.gather(*guesses)]
    assert (statuses.count(403), statuses.count(429)) == (limit, 200 - limit)
    right = await client.post(HOOK, data=incoming("P 3 Jane"), headers=WITH_SECRET)
    assert right.status == 429


async def test_the_right_secret_is_not_counted(client: Client) -> None:
    limit = WEBHOOK_LIMITS["ip"].failures
    for n in range(limit + 5):
        response = await client.post(
            HOOK, data=incoming("P 3 Jane", f"id-{n}"), headers=WITH_SECRET
        )
        assert response.status == 200


async def test_incoming_reply_and_delivery_report_through_the_provider(
    gateway: Gateway, provider: tuple[FakeProvider, TestServer]
) -> None:
    fake = provider[0]
    client = gateway.client
    for _ in range(2):  # the provider retries its callbacks: harmless
        response = await client.post(HOOK, data=incoming("P 3 Jane"), headers=WITH_SECRET)
        assert response.status == 200
    await gateway.sms.service.process_pending()

    async def sent() -> bool:
        return len(fake.sent) == 1

    await eventually(sent)
    [message] = fake.sent
    assert (message["to"], message["from"], message["username"]) == (
        ALICE_PHONE,
        "12345",
        "sandbox",
    )
    assert message["message"].startswith("Jane registered, ID 10000X.")
    assert await gateway.poll() == []  # not the medic-gateway's to send
    report = {"id": "ATXid_1", "status": "Success", "phoneNumber": ALICE_PHONE}
    response = await client.post(HOOK, data=report, headers=WITH_SECRET)
    assert response.status == 200
    [reply] = [o for o in (await gateway.listing())["outgoing"] if o["kind"] == "reply"]
    assert (reply["channel"], reply["state"]) == ("africastalking", "delivered")
    [row] = (await gateway.listing())["incoming"]
    assert (row["channel"], row["outcome"]) == ("africastalking", "registered")


async def test_a_refused_send_is_retried_then_failed(
    gateway: Gateway, provider: tuple[FakeProvider, TestServer]
) -> None:
    fake = provider[0]
    fake.refuse = True
    await gateway.client.post(HOOK, data=incoming("P 3 Jane"), headers=WITH_SECRET)
    await gateway.sms.service.process_pending()

    async def gave_up() -> bool:
        listing = await gateway.listing()
        return any(o["state"] == "failed" for o in listing["outgoing"] if o["kind"] == "reply")

    await eventually(gave_up)
    assert len(fake.sent) == 3
    [reply] = [o for o in (await gateway.listing())["outgoing"] if o["kind"] == "reply"]
    assert reply["reason"] == "failed after 3 attempts (last: provider refused: UserInBlacklist)"
