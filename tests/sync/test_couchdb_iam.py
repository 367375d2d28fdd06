"""Cloudant IAM tokens against a stand-in of IBM's token endpoint, over loopback HTTP.

The stand-in answers like https://iam.cloud.ibm.com/identity/token: it checks the
form (grant_type, apikey), hands out numbered tokens with ``expires_in`` and
``expiration``, and can be told to fail, to answer junk, or to hold its answer
until the test releases it.
"""

from __future__ import annotations

import asyncio
import socket
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sync.config import DEFAULT_TOKEN_URL, from_env
from sync.errors import ServiceUnavailable
from sync.store.couchdb import open_store
from sync.store.couchdb.iam import IamTokenSource

APIKEY = "apikey-Zq81-test"
GRANT = "urn:ibm:params:oauth:grant-type:apikey"


class IamStandIn:
    """IBM's IAM token endpoint, reduced to what the token source relies on."""

    def __init__(self) -> None:
        self.url = ""
        self.requests = 0
        self.forms: list[dict[str, str]] = []
        self.content_types: list[str] = []
        self.expires_in: int | None = 3600
        self.mode = "ok"  # ok | error | not_json | no_token
        self.status = 500  # for mode "error"
        self.received = asyncio.Event()
        self.gate = asyncio.Event()  # answers wait here while it is clear
        self.gate.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        form = {name: str(value) for name, value in (await request.post()).items()}
        self.forms.append(form)
        self.content_types.append(request.content_type)
        self.received.set()
        await self.gate.wait()
        if form.get("grant_type") != GRANT or form.get("apikey") != APIKEY:
            # IBM's answer to an unknown key; this one also echoes the key back.
            message = f"Provided API key could not be found: {form.get('apikey')}"
            body = {"errorCode": "BXNIM0415E", "errorMessage": message}
            return web.json_response(body, status=400)
        if self.mode == "error":
            message = f"Internal error while checking {APIKEY}"
            return web.json_response({"errorMessage": message}, status=self.status)
        if self.mode == "not_json":
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        return web.json_response(self.answer())

    def answer(self) -> dict[str, Any]:
        body: dict[str, Any] = {"refresh_token": "not-used", "token_type": "Bearer"}
        if self.mode != "no_token":
            body["access_token"] = f"token-{self.requests}"
        lifetime = 3600 if self.expires_in is None else self.expires_in
        body["expiration"] = int(time.time()) + lifetime
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return body

    def hold(self) -> None:
        self.received.clear()
        self.gate.clear()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests honours proxy variables, even for loopback; the stand-in is reached directly."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
async def iam(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[IamStandIn]:
    stand_in = IamStandIn()
    app = web.Application()
    app.router.add_post("/identity/token", stand_in.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    stand_in.url = str(server.make_url("/identity/token"))
    yield stand_in
    stand_in.gate.set()  # the server waits for held answers when it stops


MakeSource = Callable[..., IamTokenSource]


@pytest.fixture
async def make_source(iam: IamStandIn) -> AsyncIterator[MakeSource]:
    made: list[IamTokenSource] = []

    def make(apikey: str = APIKEY, **options: Any) -> IamTokenSource:
        options.setdefault("timeout", 10.0)
        source = IamTokenSource(apikey, options.pop("url", iam.url), **options)
        made.append(source)
        return source

    yield make
    for source in made:
        await source.close()


async def test_first_call_fetches_a_token_with_the_api_key_form(
    iam: IamStandIn, make_source: MakeSource
) -> None:
    source = make_source()
    assert iam.requests == 0
    assert await source.authorization() == "Bearer token-1"
    assert iam.requests == 1
    assert iam.forms[0]["grant_type"] == GRANT
    assert iam.forms[0]["apikey"] == APIKEY
    assert iam.content_types == ["application/x-www-form-urlencoded"]


async def test_second_call_uses_the_cached_token(iam: IamStandIn, make_source: MakeSource) -> None:
    source = make_source()
    first = await source.authorization()
    assert await source.authorization() == first
    assert iam.requests == 1


@pytest.mark.parametrize(
    ("expires_in", "margin", "fresh_for"),
    [
        (100, 10.0, 90.0),  # refreshed `margin` seconds before expiry
        (10, 300.0, 8.0),  # a short-lived token: after 80% of its life at the latest
        (100, 0.0, 100.0),
    ],
)
async def test_token_is_replaced_when_its_expiry_comes_within_the_margin(
    iam: IamStandIn, make_source: MakeSource, expires_in: int, margin: float, fresh_for: float
) -> None:
    iam.expires_in = expires_in
    clock = FakeClock()
    source = make_source(refresh_margin=margin, clock=clock)
    start = clock.now
    assert await source.authorization() == "Bearer token-1"
    clock.now = start + fresh_for - 0.01
    assert await source.authorization() == "Bearer token-1"
    assert iam.requests == 1
    clock.now = start + fresh_for
    assert await source.authorization() == "Bearer token-2"
    assert iam.requests == 2
    assert await source.authorization() == "Bearer token-2"
    assert iam.requests == 2


async def test_lifetime_comes_from_expiration_when_expires_in_is_missing(
    iam: IamStandIn, make_source: MakeSource
) -> None:
    iam.expires_in = None  # the stand-in still sends expiration = now + 3600
    clock = FakeClock()
    source = make_source(refresh_margin=60.0, clock=clock)
    start = clock.now
    await source.authorization()
    clock.now = start + 3600 - 60 - 5
    assert await source.authorization() == "Bearer token-1"
    clock.now = start + 3600 - 60 + 1
    assert await source.authorization() == "Bearer token-2"


async def test_short_lived_token_is_replaced_on_the_real_clock(
    iam: IamStandIn, make_source: MakeSource
) -> None:
    iam.expires_in = 1
    source = make_source()
    first = await source.authorization()
    deadline = time.monotonic() + 30  # a generous bound, not a measurement
    while (header := await source.authorization()) == first and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert header == "Bearer token-2"
    assert iam.requests == 2


async def test_fifty_concurrent_callers_share_one_fetch(
    iam: IamStandIn, make_source: MakeSource
) -> None:
    source = make_source()
    iam.hold()
    callers = [asyncio.create_task(source.authorization()) for _ in range(50)]
    await asyncio.wait_for(iam.received.wait(), 30)
    assert not any(caller.done() for caller in callers)
    iam.gate.set()
    assert await asyncio.gather(*callers) == ["Bearer token-1"] * 50
    assert iam.requests == 1


async def test_a_caller_giving_up_does_not_cancel_the_fetch_for_the_others(
    iam: IamStandIn, make_source: MakeSource
) -> None:
    source = make_source()
    iam.hold()
    quitter = asyncio.create_task(source.authorization())
    stayer = asyncio.create_task(source.authorization())
    await asyncio.wait_for(iam.received.wait(), 30)
    quitter.cancel()
    iam.gate.set()
    assert await stayer == "Bearer token-1"
    assert quitter.cancelled()
    assert iam.requests == 1


async def test_event_loop_keeps_running_while_the_endpoint_is_slow(
    iam: IamStandIn, make_source: MakeSource
) -> None:
    # The stand-in runs on this very loop: a fetch that blocked the loop could not
    # even be answered.  Here the answer waits until the loop has ticked 20 times.
    source = make_source()
    iam.hold()
    fetch = asyncio.create_task(source.authorization())
    await asyncio.wait_for(iam.received.wait(), 30)
    ticks_during_fetch = 0
    for _ in range(20):
        await asyncio.sleep(0.01)
        ticks_during_fetch += not fetch.done()
    iam.gate.set()
    assert await fetch == "Bearer token-1"
    assert ticks_during_fetch == 20


async def test_invalidate_forces_a_new_fetch(iam: IamStandIn, make_source: MakeSource) -> None:
    source = make_source()
    assert await source.authorization() == "Bearer token-1"
    source.invalidate()
    assert await source.authorization() == "Bearer token-2"
    assert await source.authorization() == "Bearer token-2"
    assert iam.requests == 2


def assert_unavailable(exc: ServiceUnavailable, reason: str, apikey: str = APIKEY) -> None:
    assert exc.status == 503
    assert exc.to_json()["error"] == "service_unavailable"
    assert reason in exc.reason, exc.reason
    assert apikey not in exc.reason
    assert apikey not in "".join(traceback.format_exception(exc))


@pytest.mark.parametrize(
    ("mode", "status", "reason"),
    [
        ("error", 500, "Cloudant IAM token endpoint failed (500)"),
        ("error", 503, "Cloudant IAM token endpoint failed (503)"),
        ("error", 429, "Cloudant IAM token endpoint is rate limiting token requests (429)"),
        ("not_json", 200, "gave an unreadable answer"),
        ("no_token", 200, "answered without an access_token"),
    ],
)
async def test_endpoint_failures_are_503_with_a_clear_reason(
    iam: IamStandIn, make_source: MakeSource, mode: str, status: int, reason: str
) -> None:
    iam.mode, iam.status = mode, status
    with pytest.raises(ServiceUnavailable) as caught:
        await make_source().authorization()
    assert_unavailable(caught.value, reason)


async def test_a_refused_api_key_is_named_and_not_repeated(
    iam: IamStandIn, make_source: MakeSource
) -> None:
    wrong = "wrong-key-Hh42"
    with pytest.raises(ServiceUnavailable) as caught:
        await make_source(wrong).authorization()
    assert_unavailable(caught.value, "Cloudant IAM token endpoint refused the API key (400)", wrong)
    assert "Provided API key could not be found" in caught.value.reason
    assert iam.forms[0]["apikey"] == wrong  # the stand-in did echo it back


async def test_a_silent_endpoint_times_out(iam: IamStandIn, make_source: MakeSource) -> None:
    iam.hold()  # never released while the source waits
    with pytest.raises(ServiceUnavailable) as caught:
        await make_source(timeout=0.5).authorization()
    assert_unavailable(caught.value, "did not answer within 0.5 s")


async def test_a_closed_port_is_unreachable(make_source: MakeSource) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ServiceUnavailable) as caught:
        await make_source(url=f"http://127.0.0.1:{port}/identity/token").authorization()
    assert_unavailable(caught.value, f"127.0.0.1:{port}/identity/token is unreachable (")


async def test_after_a_failure_the_next_call_tries_again_at_once(
    iam: IamStandIn, make_source: MakeSource
) -> None:
    # The sdk's own get_token() would make this second call wait up to 60 s.
    source = make_source(timeout=30.0)
    iam.mode = "error"
    with pytest.raises(ServiceUnavailable):
        await source.authorization()
    iam.mode = "ok"
    assert await asyncio.wait_for(source.authorization(), 10) == "Bearer token-2"
    assert iam.requests == 2


async def test_a_failed_refresh_keeps_handing_out_the_still_valid_token(
    iam: IamStandIn, make_source: MakeSource
) -> None:
    iam.expires_in = 100
    clock = FakeClock()
    source = make_source(refresh_margin=10.0, clock=clock)
    start = clock.now
    assert await source.authorization() == "Bearer token-1"
    iam.mode = "error"
    clock.now = start + 95  # due for refresh, not yet expired
    assert await source.authorization() == "Bearer token-1"
    assert iam.requests == 2
    clock.now = start + 100  # expired
    with pytest.raises(ServiceUnavailable):
        await source.authorization()
    iam.mode = "ok"
    assert await source.authorization() == "Bearer token-4"


async def test_an_invalidated_token_is_not_handed_out_when_the_refetch_fails(
    iam: IamStandIn, make_source: MakeSource
) -> None:
    source = make_source()
    await source.authorization()
    source.invalidate()
    iam.mode = "error"
    with pytest.raises(ServiceUnavailable):
        await source.authorization()


async def test_close_stops_a_fetch_under_way_and_further_use(
    iam: IamStandIn, make_source: MakeSource
) -> None:
    source = make_source()
    iam.hold()
    waiting = asyncio.create_task(source.authorization())
    await asyncio.wait_for(iam.received.wait(), 30)
    await source.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(RuntimeError, match="closed"):
        await source.authorization()
    await source.close()


@pytest.mark.parametrize(
    ("token_url", "expected"),
    [
        (None, DEFAULT_TOKEN_URL),
        ("http://127.0.0.1:8080/identity/token", "http://127.0.0.1:8080/identity/token"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/identity/token"),  # the sdk adds the path
    ],
)
async def test_token_url(token_url: str | None, expected: str) -> None:
    source = IamTokenSource(APIKEY, token_url)
    assert source.token_url == expected
    await source.close()


@pytest.mark.parametrize("apikey", ["", "  ", '"quoted-key"', "{braced-key}"])
def test_unusable_api_keys_are_refused_without_being_repeated(apikey: str) -> None:
    with pytest.raises(ValueError) as caught:
        IamTokenSource(apikey)
    assert apikey.strip() == "" or apikey not in str(caught.value)


async def test_the_cloudant_store_signs_requests_with_iam_tokens_only(
    iam: IamStandIn, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    """From the settings to CouchDB: FIELDSYNC_CLOUDANT_APIKEY makes every request carry a
    bearer token from the IAM endpoint, and no Basic credentials even if the URL has some."""
    seen: list[str] = []

    async def cloudant(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response(["fieldsync_health"])

    app = web.Application()
    app.router.add_get("/_all_dbs", cloudant)
    couch = await aiohttp_server(app, host="127.0.0.1")
    config = from_env(
        env={
            "FIELDSYNC_COUCHDB_URL": f"http://legacy:pw@127.0.0.1:{couch.port}",
            "FIELDSYNC_CLOUDANT_APIKEY": APIKEY,
            "FIELDSYNC_CLOUDANT_IAM_URL": iam.url,
        }
    )
    store = open_store(config)
    try:
        assert await store.list_dbs() == ["health"]
        assert await store.list_dbs() == ["health"]
    finally:
        await store.close()
    assert seen == ["Bearer token-1", "Bearer token-1"]  # fetched once, then cached
    assert iam.requests == 1
