"""What a write that only one writer may make says (``CouchClient.put_alone``).

201 stands; 409 does not; nor does 202, whose leaf is deleted so that the rival
that had its 201 keeps the document alone.  The three-node cluster shows 202s
under contention (the device, lease and login-limit contracts run there with
FIELDSYNC_TEST_COUCHDB_URL); a one-node CouchDB and pouchdb-server never answer
202, so here a stand-in of CouchDB's HTTP answers decides the status, and the
test checks what the client then asks of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sync.config import Endpoint
from sync.store.couchdb.client import CouchClient

OURS, RIVALS = "2-ours", "2-rival"


@dataclass
class StandIn:
    status: int = 201
    deleted: list[str] = field(default_factory=list)
    puts: int = 0
    mark: str = ""  # the token of the last write (our leaf carries it)

    async def put(self, request: web.Request) -> web.Response:
        self.puts += 1
        body = await request.json()
        self.mark = body["claim"]
        if self.status == 409:
            return web.json_response({"error": "conflict"}, status=409)
        return web.json_response({"ok": True, "id": "x", "rev": OURS}, status=self.status)

    async def bulk_get(self, request: web.Request) -> web.Response:
        leaves = [
            {"ok": {"_id": "lease:x", "_rev": RIVALS, "claim": "theirs"}},
            {"ok": {"_id": "lease:x", "_rev": OURS, "claim": self.mark}},
        ]
        return web.json_response({"results": [{"id": "lease:x", "docs": leaves}]})

    async def delete(self, request: web.Request) -> web.Response:
        self.deleted.append(request.query["rev"])
        return web.json_response({"ok": True, "id": "lease:x", "rev": "3-gone"})


async def _client(
    aiohttp_server: Callable[..., Awaitable[TestServer]], stand_in: StandIn
) -> CouchClient:
    app = web.Application()
    app.router.add_put("/db/{id}", stand_in.put)
    app.router.add_post("/db/_bulk_get", stand_in.bulk_get)
    app.router.add_delete("/db/{id}", stand_in.delete)
    server = await aiohttp_server(app, host="127.0.0.1")
    return CouchClient(Endpoint.parse(f"http://127.0.0.1:{server.port}"))


@pytest.mark.parametrize(("status", "stands"), [(201, True), (409, False)])
async def test_a_201_stands_and_a_409_does_not_with_nothing_more_asked(
    aiohttp_server: Callable[..., Awaitable[TestServer]], status: int, stands: bool
) -> None:
    stand_in = StandIn(status)
    client = await _client(aiohttp_server, stand_in)
    try:
        assert await client.put_alone("db", {"_id": "lease:x", "claim": "ours"}, "claim") is stands
    finally:
        await client.close()
    assert (stand_in.puts, stand_in.deleted) == (1, [])


async def test_a_202_does_not_stand_and_takes_back_its_own_leaf_only(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    stand_in = StandIn(202)
    client = await _client(aiohttp_server, stand_in)
    try:
        assert await client.put_alone("db", {"_id": "lease:x", "claim": "ours"}, "claim") is False
    finally:
        await client.close()
    assert stand_in.deleted == [OURS]  # the rival's leaf (perhaps its 201) is left alone
