"""Real PouchDB phones pulling a place through its base, on CouchDB (``bases.py``).

Issue 10, point 8.  A phone's first pull of a big place makes the place's base;
the next phone's first pull reads it, and ends with what a phone pulling through
the log ends with.  A document that moves out of the place afterwards never
reaches a new phone of the place.  The server makes a base for a place of 20
changes here (``FIELDSYNC_COUCHDB_BASE_MIN_CHANGES``), not 1,000.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from pouch import PouchDriver
from realserver import Admin, ServerProcess, enroll, local_ids, make_docs, pull

METRICS_TOKEN = "bases-test-metrics-token"


@pytest.fixture
def backend_env(couchdb_url: str, couch_prefix: str) -> dict[str, str]:
    return {"FIELDSYNC_COUCHDB_URL": couchdb_url, "FIELDSYNC_COUCHDB_PREFIX": couch_prefix}


@pytest.fixture
def server_env() -> dict[str, str]:
    return {"FIELDSYNC_COUCHDB_BASE_MIN_CHANGES": "20", "FIELDSYNC_METRICS_TOKEN": METRICS_TOKEN}


@pytest.fixture(autouse=True)
async def enrolled(org: ServerProcess, admin: Admin) -> None:
    for number, worker in enumerate(("alice", "bob")):
        await enroll(org, admin, worker, number)


async def bases(org: ServerProcess) -> dict[str, float]:
    """``fieldsync_couchdb_bases`` by ``what``, as a scraper reads it."""
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{org.url}/metrics", headers=headers) as resp,
    ):
        text = await resp.text()
    found = {}
    for line in text.splitlines():
        if line.startswith("fieldsync_couchdb_bases{"):
            what = line.split('what="', 1)[1].split('"', 1)[0]
            found[what] = float(line.rsplit(" ", 1)[1])
    return found


async def until_made(org: ServerProcess, count: int) -> None:
    deadline = time.monotonic() + 30
    while (await bases(org)).get("made", 0) < count:
        assert time.monotonic() < deadline, "no base was made"
        await asyncio.sleep(0.2)


async def documents(pouch: PouchDriver, db: str) -> dict[str, Any]:
    rows = (await pouch.call("all_docs", db=db, options={"include_docs": True}))["rows"]
    return {row["id"]: row["doc"] for row in rows}


async def test_a_second_phone_pulls_the_place_from_its_base_and_ends_with_the_same_documents(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    rows = await admin.bulk_docs(make_docs("area-a1", 60, "a1") + make_docs("area-b1", 5, "b1"))
    rev = {row["id"]: row["rev"] for row in rows}
    edits = [
        {"_id": f"a1-{n:03d}", "_rev": rev[f"a1-{n:03d}"], "place": "area-a1", "n": -n}
        for n in range(10)
    ]
    gone = [
        {"_id": f"a1-{n:03d}", "_rev": rev[f"a1-{n:03d}"], "_deleted": True} for n in range(50, 55)
    ]
    await admin.bulk_docs(edits + gone)
    await pull(pouch, org, "alice", "first")
    await until_made(org, 1)
    await admin.bulk_docs(make_docs("area-a1", 3, "late"))  # after the base: from the log
    sent_before = (await bases(org)).get("sent", 0)
    second = await pull(pouch, org, "alice", "second")
    assert second["status"] == "complete"
    assert (await bases(org))["sent"] - sent_before >= 60
    await pull(pouch, org, "alice", "first")
    assert await documents(pouch, "second") == await documents(pouch, "first")
    assert await local_ids(pouch, "second") == {
        f"a1-{n:03d}" for n in range(60) if not 50 <= n < 55
    } | {f"late-{n:03d}" for n in range(3)}


async def test_a_document_that_moved_out_after_the_base_never_reaches_a_new_phone(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    rows = await admin.bulk_docs(make_docs("area-a1", 40, "a1"))
    rev = {row["id"]: row["rev"] for row in rows}
    await pull(pouch, org, "alice", "first")
    await until_made(org, 1)
    await admin.put({"_id": "a1-007", "_rev": rev["a1-007"], "place": "area-b1", "moved": True})
    await pull(pouch, org, "alice", "new-phone")
    assert "a1-007" not in await local_ids(pouch, "new-phone")
    assert len(await local_ids(pouch, "new-phone")) == 39
    await pull(pouch, org, "bob", "bob-phone")
    assert (await documents(pouch, "bob-phone"))["a1-007"]["moved"] is True
