"""A phone in live sync while CouchDB goes away and comes back (issue 10, point 1).

While CouchDB cannot be reached fieldsync answers 503 and recovers by itself.  A live
phone holds a long poll whose status line went out before CouchDB went away: that
answer ends with no changes at its next heartbeat, PouchDB's next request meets the
503, and the phone syncs again once CouchDB is back.  A record made on the phone
during the outage reaches the server, and one written on the server afterwards
reaches the phone.  (Before the long poll ended so, it stayed open with no answer:
``tests/sync/test_couchdb_backend.py`` shows that; PouchDB got over it here too, so
this test guards the whole outage as a phone lives it, not that one fix.)
"""

from __future__ import annotations

import asyncio
import base64
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pouch import PouchDriver
from realserver import PASSWORD, Admin, ServerProcess, free_port
from tcp_cut import TcpCut, cut, through

__all__ = ["cut"]  # the fixture: a forwarder between the server and CouchDB
WAIT_MS = 30_000


@pytest.fixture
async def server(
    tmp_path: Path, org_data: Path, couchdb_url: str, couch_prefix: str, cut: TcpCut
) -> AsyncIterator[ServerProcess]:
    """A real server on CouchDB, reaching it through the forwarder (which runs on this
    event loop: the server is started and stopped in a thread meanwhile)."""
    shutil.copytree(org_data, tmp_path / "data")
    env = {
        "FIELDSYNC_COUCHDB_URL": through(couchdb_url, cut),
        "FIELDSYNC_COUCHDB_PREFIX": couch_prefix,
        "FIELDSYNC_REQUIRE_ENROLMENT": "0",
    }
    process = ServerProcess(tmp_path / "data", free_port(), tmp_path / "server.log", env)
    await asyncio.to_thread(process.start)
    try:
        yield process
    finally:
        await asyncio.to_thread(process.stop)


@pytest.fixture
async def admin(server: ServerProcess) -> AsyncIterator[Admin]:
    token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as session:
        yield Admin(session, server)


async def test_live_sync_rides_out_couchdb_going_away(
    pouch: PouchDriver, server: ServerProcess, admin: Admin, cut: TcpCut
) -> None:
    started = await pouch.call(
        "sync_start", local="dev", remote=server.remote("alice"), options={"back_off_ms": 500}
    )
    handle = started["handle"]
    await pouch.call("sync_wait", handle=handle, until={"event": "paused"}, timeout_ms=WAIT_MS)
    await cut.cut()
    # The pull's long poll was waiting: it ends at its next heartbeat (PouchDB's: 10 s),
    # and the request after it meets the 503 (PouchDB pauses, to retry).
    met = {"event": "paused", "count": 2}
    await pouch.call("sync_wait", handle=handle, until=met, timeout_ms=WAIT_MS)
    await pouch.call("put", db="dev", doc={"_id": "during-outage", "place": "area-a1"})
    status, _ = await admin.get("during-outage")
    assert status == 503
    await cut.restore()
    await pouch.call("sync_wait", handle=handle, until={"pushed": 1}, timeout_ms=WAIT_MS)
    assert (await admin.get("during-outage"))[0] == 200
    await admin.put({"_id": "after-outage", "place": "area-a1"})
    until = {"local_has": "after-outage"}
    await pouch.call("sync_wait", handle=handle, until=until, timeout_ms=WAIT_MS)
    stopped = await pouch.call("sync_cancel", handle=handle)
    assert not [e for e in stopped["events"] if e["event"] == "denied"]
