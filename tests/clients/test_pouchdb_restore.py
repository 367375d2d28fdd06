"""A real PouchDB phone across a restore (issue 12, point 7): nothing it wrote is lost.

The phone syncs; the server is backed up; the phone writes more and syncs again; the
server is lost and restored from the backup with 3 of its 4 shares, at the same
address.  The restored server is older than the phone: it lacks what the phone wrote
after the backup.  PouchDB keeps its checkpoint on both sides, and the server's copy
(the ``_local`` document in the store) is as old as the backup, so the phone's next
sync goes back to where the two agree and sends the newer writes again.  The phone's
enrolment (device token) and password still work, and its documents keep their revs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pouch import PouchDriver
from realserver import Admin, ServerProcess, make_docs
from test_pouchdb_devices import device, issued

IMEI = "490154203237518"


@pytest.fixture
def backend_env() -> dict[str, str]:
    """The embedded store only: with CouchDB the documents are not in the archive."""
    return {}


async def sync_both_ways(pouch: PouchDriver, server: ServerProcess, token: str) -> None:
    remote = device(server, "alice", token)
    pushed = await pouch.call("replicate", source="phone", target=remote)
    pulled = await pouch.call("replicate", source=remote, target="phone")
    assert pushed["status"] == pulled["status"] == "complete", (pushed, pulled)


async def revs(pouch: PouchDriver) -> dict[str, str]:
    rows = (await pouch.call("all_docs", db="phone"))["rows"]
    return {row["id"]: row["value"]["rev"] for row in rows}


async def server_revs(admin: Admin, ids: list[str]) -> dict[str, Any]:
    found = {}
    for doc_id in ids:
        status, body = await admin.get(doc_id)
        found[doc_id] = body.get("_rev") if status == 200 else status
    return found


async def test_a_phone_syncs_on_across_a_restore_and_loses_nothing(
    pouch: PouchDriver, admin: Admin, org: ServerProcess, tmp_path: Path
) -> None:
    await admin.bulk_docs(make_docs("area-a1", 3, "before"))
    token = await issued(admin, org, "A1", IMEI, "alice")
    await pouch.call("put", db="phone", doc={"_id": "visit-1", "place": "area-a1", "n": 1})
    await sync_both_ways(pouch, org, token)

    archive = tmp_path / "backup.fsb"
    shares = org.cli("backup", "--out", str(archive)).stdout.splitlines()
    assert len(shares) == 4

    await pouch.call("put", db="phone", doc={"_id": "visit-2", "place": "area-a1", "n": 2})
    await admin.bulk_docs(make_docs("area-a1", 1, "after"))
    await sync_both_ways(pouch, org, token)
    on_phone = await revs(pouch)
    assert {"before-000", "visit-1", "visit-2", "after-000"} <= set(on_phone)

    org.stop()  # the server is lost
    restored = ServerProcess(tmp_path / "restored", org.port, tmp_path / "restored.log")
    restored.device_tokens = dict(org.device_tokens)
    restored.cli(
        "restore", str(archive), "--share", shares[3], "--share", shares[0], "--share", shares[2]
    )
    restored.start()
    try:
        lost = await server_revs(admin, ["visit-2", "after-000"])
        assert lost == {"visit-2": 404, "after-000": 404}, "the restore is of the backup's moment"
        assert (await server_revs(admin, ["visit-1"]))["visit-1"] == on_phone["visit-1"]
        await sync_both_ways(pouch, restored, token)
        assert await revs(pouch) == on_phone  # the phone lost nothing, and got no new revs
        assert await server_revs(admin, sorted(on_phone)) == on_phone  # nor did the server
    finally:
        restored.stop()
