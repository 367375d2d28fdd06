"""A data key created on a CouchDB cluster: a 202 does not stand, and a fork is waited out.

On a three-node cluster forty instances creating a place's first key at once once
ended with two different keys in use (a 202 kept because it was CouchDB's winner a
moment later, while a rival had its 201).  A one-node CouchDB and pouchdb-server
never answer 202, so a stand-in of CouchDB's HTTP answers decides, and the test
checks which key the adapter hands out and what it asks.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.test_utils import TestServer
from couchdb_server import couch_request, db_path

from sync.config import Endpoint
from sync.datakeys.couchdb import CouchDataKeys
from sync.store.couchdb.client import CouchClient

RIVAL_KEY, OUR_KEY = b"rival-key-wrapped", b"our-key-wrapped"
KEY_ID = "dk:area-1:00000001"


def _leaf(rev: str, wrapped: bytes, creator: str) -> dict[str, Any]:
    return {
        "_id": KEY_ID,
        "_rev": rev,
        "place": "area-1",
        "version": 1,
        "created": "2026-12-03T10:00:00Z",
        "wrapped": base64.b64encode(wrapped).decode(),
        "creator": creator,
    }


@dataclass
class Cluster:
    """Our PUT gets a 202 while a rival's 201 write of another key is there too."""

    leaves: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    reads: int = 0

    async def create_db(self, request: web.Request) -> web.Response:
        return web.json_response({"error": "file_exists"}, status=412)

    async def put(self, request: web.Request) -> web.Response:
        body = await request.json()
        # CouchDB's winner of the moment is ours (its revision sorts higher).
        self.leaves = [{**body, "_rev": "1-ours"}, _leaf("1-rival", RIVAL_KEY, "theirs")]
        return web.json_response({"ok": True, "id": KEY_ID, "rev": "1-ours"}, status=202)

    async def bulk_get(self, request: web.Request) -> web.Response:
        self.reads += 1
        if not self.leaves:
            docs: list[dict[str, Any]] = [{"error": {"id": KEY_ID, "error": "not_found"}}]
        else:
            docs = [{"ok": leaf} for leaf in self.leaves]
        return web.json_response({"results": [{"id": KEY_ID, "docs": docs}]})

    async def delete(self, request: web.Request) -> web.Response:
        rev = request.query["rev"]
        self.deleted.append(rev)
        self.leaves = [leaf for leaf in self.leaves if leaf["_rev"] != rev]
        return web.json_response({"ok": True, "id": KEY_ID, "rev": "2-gone"})


async def _keys(server_of: Callable[..., Awaitable[TestServer]], cluster: Cluster) -> CouchDataKeys:
    app = web.Application()
    app.router.add_put("/keys", cluster.create_db)
    app.router.add_put("/keys/{id}", cluster.put)
    app.router.add_post("/keys/_bulk_get", cluster.bulk_get)
    app.router.add_delete("/keys/{id}", cluster.delete)
    server = await server_of(app, host="127.0.0.1")
    client = CouchClient(Endpoint.parse(f"http://127.0.0.1:{server.port}"))
    return CouchDataKeys(client, "keys", asyncio.get_running_loop())


async def test_a_202_takes_its_key_back_and_the_rivals_is_used(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    cluster = Cluster()
    keys = await _keys(aiohttp_server, cluster)
    try:
        got = await keys.add_async("area-1", 1, OUR_KEY, "2026-12-03T10:00:01Z")
    finally:
        await keys._client.close()
    assert got == RIVAL_KEY  # not ours, though it was a leaf a moment
    assert cluster.deleted == ["1-ours"]  # and our leaf is gone: one key for the place


async def test_a_reader_waits_until_a_creators_fork_is_taken_back(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    cluster = Cluster([_leaf("1-ours", OUR_KEY, "mine"), _leaf("1-rival", RIVAL_KEY, "theirs")])
    keys = await _keys(aiohttp_server, cluster)

    async def taken_back() -> None:
        await asyncio.sleep(0.1)
        cluster.leaves = cluster.leaves[1:]  # the creator of the first takes it back

    try:
        reading = asyncio.create_task(keys.wrapped_async("area-1", 1))
        await taken_back()
        assert await reading == RIVAL_KEY  # not the winner of the moment, which went
    finally:
        await keys._client.close()
    assert cluster.reads >= 2


async def test_removing_a_key_deletes_every_leaf_even_one_a_read_missed(
    couchdb_url: str, couch_prefix: str
) -> None:
    """A shredded key stays gone: a forked key document loses every leaf, though a read
    shows only some (pouchdb-server answers the winner only; a lagging copy, likewise):
    a leaf left would become the winner and bring the key back."""
    client = CouchClient(Endpoint.parse(couchdb_url))
    keys = CouchDataKeys.for_prefix(client, couch_prefix)
    try:
        await keys.add_async("area-1", 1, OUR_KEY, "2026-12-03T10:00:01Z")
        where = f"{db_path(keys.db)}/{quote(KEY_ID, safe='')}"
        branch = _leaf("1-" + "0" * 31 + "1", RIVAL_KEY, "theirs")  # loses the tie
        body = {"docs": [branch], "new_edits": False}
        status, answer = couch_request(couchdb_url, "POST", f"{db_path(keys.db)}/_bulk_docs", body)
        assert status == 201, answer
        assert await keys.remove_async("area-1", 1) is True
        assert await keys.wrapped_async("area-1", 1) is None
    finally:
        await client.close()
    status, leaves = couch_request(couchdb_url, "GET", where + "?open_revs=all")
    assert status in (200, 404), leaves  # 404: purged whole (CouchDB)
    if status == 200:
        assert [row for row in leaves if not row.get("ok", {}).get("_deleted", True)] == []
