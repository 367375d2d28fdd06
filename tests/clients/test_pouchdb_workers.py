"""Sync activity recorded from a real PouchDB 9 client: after a phone pushes 3 documents,
``GET /api/v1/workers`` shows its last sync, 3 documents received and at least one sync.
Runs on both document stores (the set size comes from each store's per-place counts)."""

from __future__ import annotations

from typing import Any

from pouch import PouchDriver
from realserver import Admin, ServerProcess, make_docs
from test_pouchdb_devices import IMEIS, device, issued


async def workers(admin: Admin, server: ServerProcess, query: str = "") -> dict[str, Any]:
    async with admin.session.get(f"{server.url}/api/v1/workers{query}") as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return {w["name"]: w for w in body["workers"]}


async def test_a_real_push_shows_as_sync_activity(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    token = await issued(admin, org, "A1", IMEIS[0], "alice")
    await pouch.call("bulk_docs", db="phone", docs=make_docs("area-a1", 3, "visit"))
    result = await pouch.call("replicate", source="phone", target=device(org, "alice", token))
    assert (result["status"], result["docs_written"]) == ("complete", 3)

    alice = (await workers(admin, org))["alice"]
    assert alice["last_sync"] is not None
    assert alice["devices"] == [
        {"serial": "A1", "status": "assigned", "last_sync": alice["last_sync"], "app_version": ""}
    ]
    assert alice["received_7d"] == 3  # the 3 documents, not the checkpoints
    assert alice["syncs_7d"] >= 1
    assert alice["docs_in_set"] == 3  # counted on the first look (then kept a few seconds)
    assert (await workers(admin, org, "?quiet_days=1")).keys() == {"bob"}
