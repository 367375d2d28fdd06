"""Reads audited ahead, on CouchDB, through a real server (``sync.replication.ahead``).

Each answer carrying bodies waits until an audit entry naming them is stored in
CouchDB.  A phone's pull announces its documents on changes pages before it reads
them, so the first read records, beside its own entry, one naming what was announced;
the reads that follow record nothing and no body goes out unnamed.  A real PouchDB
pull ends with every document it holds named in the trail, for that phone.
"""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest
from couchdb_server import couch_request
from couchdb_server import db_path as couch_path
from pouch import PouchDriver
from realserver import DB, PASSWORD, Admin, ServerProcess, enroll, local_ids, make_docs, pull

PAGE = 100
PHONE = "PHONE-ALICE"  # the serial enrolled, as the registry keeps it


@pytest.fixture
def backend_env(couchdb_url: str, couch_prefix: str) -> dict[str, str]:
    """CouchDB only: on the embedded store each read records its own entry, at no cost."""
    return {"FIELDSYNC_COUCHDB_URL": couchdb_url, "FIELDSYNC_COUCHDB_PREFIX": couch_prefix}


@pytest.fixture(autouse=True)
async def enrolled(org: ServerProcess, admin: Admin) -> None:
    await enroll(org, admin, "alice", 0)


def trail(couchdb_url: str, prefix: str) -> list[dict[str, Any]]:
    """Every entry stored in CouchDB's audit database, read as CouchDB's admin."""
    where = couch_path(prefix + "audit") + "/_all_docs?include_docs=true"
    status, listing = couch_request(couchdb_url, "GET", where)
    assert status == 200, listing
    return [row["doc"] for row in listing["rows"] if row["id"].startswith("chain:")]


def reads_of(entries: list[dict[str, Any]], actor: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["actor"] == actor and e["action"].startswith("read")]


def alice(org: ServerProcess) -> dict[str, str]:
    """Alice's phone: her password and the phone's device token."""
    token = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}", "X-Device-Token": org.device_tokens["alice"]}


async def changes_pages(
    session: aiohttp.ClientSession, org: ServerProcess, count: int
) -> list[list[str]]:
    pages, since = [], "0"
    for _ in range(count):
        params = {"style": "all_docs", "limit": str(PAGE), "since": since}
        async with session.get(f"{org.url}/{DB}/_changes", params=params) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        pages.append([row["id"] for row in body["results"]])
        since = body["last_seq"]
    return pages


async def bulk_get(session: aiohttp.ClientSession, org: ServerProcess, ids: list[str]) -> None:
    wanted = {"docs": [{"id": doc_id} for doc_id in ids]}
    async with session.post(f"{org.url}/{DB}/_bulk_get", json=wanted) as resp:
        assert resp.status == 200, await resp.text()
        results = (await resp.json())["results"]
    assert all("ok" in r["docs"][0] for r in results), results


async def announced(admin: Admin, org: ServerProcess, count: int) -> list[list[str]]:
    """``count`` full pages of documents in alice's place, announced to her phone."""
    await admin.bulk_docs(make_docs("area-a1", count * PAGE, "a1"))
    async with aiohttp.ClientSession(headers=alice(org)) as phone:
        pages = await changes_pages(phone, org, count)
    assert [len(p) for p in pages] == [PAGE] * count
    return pages


async def phone_reads(org: ServerProcess, ids: list[str]) -> None:
    async with aiohttp.ClientSession(headers=alice(org)) as phone:
        await bulk_get(phone, org, ids)


async def test_three_pages_announced_then_read_cost_two_entries_and_name_every_document(
    admin: Admin, org: ServerProcess, couchdb_url: str, couch_prefix: str
) -> None:
    pages = await announced(admin, org, 3)
    for ids in pages:
        await phone_reads(org, ids)
    entries = reads_of(trail(couchdb_url, couch_prefix), "alice")
    assert [(e["action"], sorted(e["doc_ids"])) for e in entries] == [
        ("read", sorted(pages[0])),
        ("read_ahead", sorted(pages[1] + pages[2])),
    ]
    assert {e["device"] for e in entries} == {PHONE}


async def test_another_caller_reading_what_was_named_for_the_phone_records_its_own_read(
    admin: Admin, org: ServerProcess, couchdb_url: str, couch_prefix: str
) -> None:
    pages = await announced(admin, org, 2)
    await phone_reads(org, pages[0])
    await bulk_get(admin.session, org, pages[1])
    entries = reads_of(trail(couchdb_url, couch_prefix), "alice")
    assert [(e["action"], e["device"], sorted(e["doc_ids"])) for e in entries] == [
        ("read", PHONE, sorted(pages[0])),
        ("read_ahead", PHONE, sorted(pages[1])),
    ]
    by_admin = reads_of(trail(couchdb_url, couch_prefix), "admin")
    assert [(e["action"], sorted(e["doc_ids"])) for e in by_admin] == [("read", sorted(pages[1]))]


async def test_a_pouchdb_pull_ends_with_every_document_it_holds_named_for_its_phone(
    pouch: PouchDriver, admin: Admin, org: ServerProcess, couchdb_url: str, couch_prefix: str
) -> None:
    await admin.bulk_docs(
        make_docs("area-a1", 7 * PAGE + 30, "a1") + make_docs("area-b1", 40, "b1")
    )
    result = await pull(pouch, org, "alice", "phone", batch_size=PAGE)
    assert result["status"] == "complete"
    held = await local_ids(pouch, "phone")
    assert len(held) == 7 * PAGE + 30
    entries = reads_of(trail(couchdb_url, couch_prefix), "alice")
    named = {doc_id for e in entries if e["device"] == PHONE for doc_id in e["doc_ids"]}
    assert held <= named
    assert not any(doc_id.startswith("b1-") for doc_id in named)  # only what alice may read
    # Eight _bulk_gets; the entries that named what they read came in fewer writes.
    assert len([e for e in entries if e["action"] == "read"]) < 8
