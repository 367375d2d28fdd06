"""The PouchDB driver itself, memory-to-memory under node (no server needed)."""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from pouch import PouchDriver, PouchError
from realserver import local_ids, make_docs


async def test_documents_round_trip(pouch: PouchDriver) -> None:
    put = await pouch.call("put", db="a", doc={"_id": "p1", "name": "Jane"})
    doc = await pouch.call("get", db="a", docid="p1", options={"revs": True})
    assert doc["name"] == "Jane"
    assert doc["_rev"] == put["rev"]
    assert doc["_revisions"]["start"] == 1
    await pouch.call("remove", db="a", docid="p1", rev=put["rev"])
    assert await local_ids(pouch, "a") == set()


async def test_errors_carry_pouchdb_name_and_status(pouch: PouchDriver) -> None:
    with pytest.raises(PouchError) as missing:
        await pouch.call("get", db="a", docid="nope")
    assert (missing.value.name, missing.value.status) == ("not_found", 404)
    with pytest.raises(PouchError) as unknown:
        await pouch.call("no_such_op")
    assert unknown.value.status == 400


async def test_attachment_bytes_survive_base64_both_ways(pouch: PouchDriver) -> None:
    data = os.urandom(200 * 1024)
    put = await pouch.call("put", db="a", doc={"_id": "photo"})
    encoded = base64.b64encode(data).decode()
    await pouch.call(
        "put_attachment",
        db="a",
        docid="photo",
        name="p.jpg",
        rev=put["rev"],
        data=encoded,
        content_type="image/jpeg",
    )
    await pouch.call("replicate", source="a", target="b")
    got = await pouch.call("get_attachment", db="b", docid="photo", name="p.jpg")
    assert base64.b64decode(got) == data


async def test_cancelled_replication_resumes_from_its_checkpoint(pouch: PouchDriver) -> None:
    await pouch.call("bulk_docs", db="a", docs=make_docs("x", 40, "doc"))
    options = {"batch_size": 5, "cancel_after_docs": 12}
    first = await pouch.call("replicate", source="a", target="b", options=options)
    assert first["status"] == "cancelled"
    assert 12 <= first["docs_written"] < 40
    second = await pouch.call("replicate", source="a", target="b", options={"batch_size": 5})
    assert second["status"] == "complete"
    assert second["docs_read"] == 40 - first["docs_written"]
    assert second["changes_received"] == 40 - first["docs_written"]
    assert await local_ids(pouch, "b") == {f"doc-{n:03d}" for n in range(40)}


async def test_live_sync_records_events_until_cancelled(pouch: PouchDriver) -> None:
    started = await pouch.call("sync_start", local="device", remote="hub")
    await pouch.call("put", db="hub", doc={"_id": "from-hub"})
    await pouch.call("sync_wait", handle=started["handle"], until={"local_has": "from-hub"})
    await pouch.call("put", db="device", doc={"_id": "from-device"})
    waited = await pouch.call("sync_wait", handle=started["handle"], until={"pushed": 1})
    assert waited["pulled"] >= 1
    assert "from-device" in await local_ids(pouch, "hub")
    with pytest.raises(PouchError) as timeout:
        await pouch.call(
            "sync_wait", handle=started["handle"], until={"pulled": 99}, timeout_ms=200
        )
    assert timeout.value.name == "timeout"
    cancelled = await pouch.call("sync_cancel", handle=started["handle"])
    assert {event["event"] for event in cancelled["events"]} >= {"change", "paused"}


async def test_remote_requests_carry_basic_auth_and_extra_headers(
    pouch: PouchDriver, aiohttp_server: Callable[[web.Application], Awaitable[Any]]
) -> None:
    seen: list[tuple[str | None, str | None]] = []

    async def db_info(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Authorization"), request.headers.get("X-Device-Token")))
        return web.json_response({"db_name": "health", "update_seq": "0", "doc_count": 0})

    app = web.Application()
    app.router.add_get("/health/", db_info)
    fake = await aiohttp_server(app)
    remote = {"url": f"http://127.0.0.1:{fake.port}/health", "username": "alice"}
    remote |= {"password": "pw", "headers": {"X-Device-Token": "tok-1"}}
    info = await pouch.call("info", db=remote)
    assert info["db_name"] == "health"
    basic = "Basic " + base64.b64encode(b"alice:pw").decode()
    assert seen == [(basic, "tok-1")]
