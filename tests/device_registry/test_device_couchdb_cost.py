"""On CouchDB, the device check costs a sync request at most one CouchDB request (issue 11).

With ``FIELDSYNC_DEVICES_CACHE_SECONDS=0``, exactly one per request (below); with the
default bound, one per burst (tests/device_registry/test_recent_bindings.py).

Every sync request already costs one ``_bulk_get`` of the accounts database
(the caller); the device check adds exactly one more: a ``_bulk_get`` of the
token's and the device's documents together (``CouchDevices.binding``), never a
view, a range or a scan.  Recorded at the device adapter's CouchDB client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from device_helpers import IMEIS, Client, Devices

from device_registry.context import REGISTRY
from device_registry.couchdb import CouchDevices
from sync.app import create_app
from sync.config import Config

CHANGES = "/health/_changes"


async def test_a_sync_request_costs_one_couchdb_request_for_its_device(
    aiohttp_client: Callable[..., Awaitable[Client]],
    data_dir: Path,
    couchdb_url: str,
    couch_prefix: str,
) -> None:
    config = Config(
        data_dir=data_dir,
        couchdb_url=couchdb_url,
        couchdb_prefix=couch_prefix,
        devices_cache_seconds=0,  # read on every request (the bound's tests: test_recent_bindings)
    )
    client = await aiohttp_client(create_app(config))
    devices = Devices(client)
    token = await devices.issued("A1", IMEIS[0], "alice")
    assert (await devices.call("GET", CHANGES, "alice", token=token))[0] == 200
    registry = client.app[REGISTRY]
    await registry.guard.writes.drain()  # the first request's last-sync write
    store = registry.devices
    assert isinstance(store, CouchDevices)
    asked: list[str] = []

    def observe(method: str, where: str, params: Any, body: Any) -> None:
        asked.append(f"{method} {where.split('/', 2)[-1]}")

    store.client.observe = observe
    for _ in range(5):
        assert (await devices.call("GET", CHANGES, "alice", token=token))[0] == 200
    assert asked == ["POST _bulk_get"] * 5
    store.client.observe = None
    await devices.mark("A1", "lost")
    status, _ = await devices.call("GET", CHANGES, "alice", token=token)
    assert status == 401  # and the one request read the revocation
