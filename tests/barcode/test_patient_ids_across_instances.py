"""Issue 11, point 5: three fieldsync instances on one CouchDB never hand out one ID twice.

Three apps (``create_app``, each with its own data dir copied from one seeded
template, all with the same ``FIELDSYNC_COUCHDB_URL`` and prefix) serve real
HTTP on loopback.  Workers ask all three at once for single IDs and for
offline blocks through the API; every ID handed out must be distinct, valid,
and recorded in CouchDB, and each block listed for its device.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from couchdb_server import couch_request
from couchdb_server import db_path as couch_path
from shared_org import PLACES, basic_auth, seed

from barcode.checkdigit import validate
from barcode.routes import BARCODE
from sync.app import create_app
from sync.config import Config
from sync.keys import key_from_file

Client = TestClient[Any, Any]
USERS = ("alice", "bob", "sam")
SINGLES_PER_INSTANCE = 40
BLOCKS_PER_INSTANCE = 6
BLOCK_SIZE = 15


@pytest.fixture
def configs(tmp_path: Path, couchdb_url: str, couch_prefix: str) -> list[Config]:
    """Three instances on one CouchDB, with the same users, places and master key."""
    template = tmp_path / "template"
    seed(template, PLACES)
    key_from_file(template / "master.key", create=True)  # one master key: the keys are shared
    out = []
    for number in (1, 2, 3):
        shutil.copytree(template, tmp_path / f"data{number}")
        config = Config(
            data_dir=tmp_path / f"data{number}",
            require_enrolment=False,
            couchdb_url=couchdb_url,
            couchdb_prefix=couch_prefix,
        )
        out.append(config)
    return out


async def call(client: Client, path: str, user: str, body: Any = None) -> tuple[int, Any]:
    method = "GET" if body is None else "POST"
    response = await client.request(method, path, headers=basic_auth(user), json=body)
    return response.status, await response.json()


async def test_three_instances_allocating_at_once_share_no_id(
    aiohttp_client: Callable[..., Awaitable[Client]],
    configs: list[Config],
    couchdb_url: str,
    couch_prefix: str,
) -> None:
    clients = [await aiohttp_client(create_app(config)) for config in configs]
    for client in clients:  # each password checked once per instance, not 40 times at once
        for user in USERS:
            assert (await call(client, "/_session", user))[0] == 200

    async def singles(instance: int, n: int) -> list[str]:
        body = {"count": 1 + n % 3}
        status, answer = await call(clients[instance], "/api/v1/patient-ids", USERS[n % 3], body)
        assert status == 201, answer
        return list(answer["ids"])

    async def block(instance: int, n: int) -> dict[str, Any]:
        body = {"size": BLOCK_SIZE, "device": f"phone-{instance}-{n}"}
        path = "/api/v1/patient-ids/blocks"
        status, answer = await call(clients[instance], path, USERS[n % 3], body)
        assert status == 201, answer
        return dict(answer)

    asked = [singles(i, n) for n in range(SINGLES_PER_INSTANCE) for i in range(3)]
    reserved = [block(i, n) for n in range(BLOCKS_PER_INSTANCE) for i in range(3)]
    answers = await asyncio.gather(asyncio.gather(*asked), asyncio.gather(*reserved))
    single_ids = [i for batch in answers[0] for i in batch]
    blocks = answers[1]
    ids = single_ids + [i for b in blocks for i in b["ids"]]

    expected = 3 * sum(1 + n % 3 for n in range(SINGLES_PER_INSTANCE))
    expected += 3 * BLOCKS_PER_INSTANCE * BLOCK_SIZE
    assert len(ids) == expected
    assert len(set(ids)) == len(ids), "an ID was handed out twice"
    assert all(validate(i).valid for i in ids)
    assert len({b["block"] for b in blocks}) == len(blocks)

    # Every ID is recorded in the shared database, as issued or reserved.  A listing is
    # a range read, which a cluster answers from one copy per shard range: one that has
    # not yet taken the last writes lags a moment, so it is read again for a while.
    recorded: set[str] = set()
    for _ in range(30):
        status, listing = couch_request(
            couchdb_url, "GET", couch_path(couch_prefix + "patient_ids") + "/_all_docs"
        )
        assert status == 200, listing
        rows = listing["rows"]
        recorded = {r["id"] for r in rows if not r["id"].startswith(("counter:", "block:"))}
        if recorded == set(ids):
            break
        await asyncio.sleep(0.5)
    assert recorded == set(ids)

    # Any instance lists a device's block, whichever instance reserved it.
    store = clients[2].app[BARCODE].ids.store
    for answer in blocks:
        [listed] = await store.blocks_of(answer["device"])
        assert (listed.id, list(listed.ids)) == (answer["block"], answer["ids"])
