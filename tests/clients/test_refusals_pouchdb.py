"""Refused records from a real PouchDB 9 push to a real ``fieldsync serve`` (issue 13, point 3).

A phone enrolled as alice's pushes a record of another district's place and a P
report whose weeks break the form; both come back per document as ``forbidden``
(PouchDB counts them as ``doc_write_failures``) and both are listed by
``GET /api/v1/refusals`` for her supervisor, with the reason, the phone's serial
and a count that a second push of the same revisions raises.  Runs on both
document backends: refusals live in the embedded store, or in CouchDB's
``<prefix>refusals`` with the CouchDB backend (sync.refusals.backends).
"""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
from pouch import PouchDriver
from realserver import PASSWORD, Admin, ServerProcess
from test_pouchdb_devices import IMEIS, device, issued


def p_report(doc_id: str, weeks: int, place: str) -> dict[str, Any]:
    fields = {"weeks": weeks, "name": "Jane"}
    return {"_id": doc_id, "type": "data_record", "form": "P", "place": place, "fields": fields}


async def refusals(server: ServerProcess, user: str) -> tuple[int, Any]:
    basic = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Basic {basic}"}) as session,
        session.get(f"{server.url}/api/v1/refusals") as resp,
    ):
        return resp.status, await resp.json()


async def test_a_phones_refused_records_are_listed_and_counted(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    token = await issued(admin, org, "A1", IMEIS[0], "alice")
    docs = [
        p_report("elsewhere-1", 3, "area-b1"),
        p_report("too-many-weeks-1", 50, "area-a1"),
        p_report("fine-1", 3, "area-a1"),
    ]
    await pouch.call("bulk_docs", db="phone", docs=docs)
    phone = device(org, "alice", token)
    pushed = await pouch.call("replicate", source="phone", target=phone)
    assert (pushed["docs_written"], pushed["doc_write_failures"]) == (1, 2)

    status, body = await refusals(org, "sam")
    assert status == 200, body
    found = {r["doc_id"]: r for r in body["refusals"]}
    assert set(found) == {"elsewhere-1", "too-many-weeks-1"}
    assert found["elsewhere-1"]["reason"] == "outside_scope"
    assert found["too-many-weeks-1"]["reason"] == "form_schema"
    assert "field 'weeks': must be at most 42" in found["too-many-weeks-1"]["detail"]
    assert {(r["worker"], r["device"], r["count"]) for r in found.values()} == {("alice", "A1", 1)}
    assert all(r["rev"].startswith("1-") for r in found.values())

    # The phone still holds them and pushes them again (no checkpoint: as after a reinstall).
    again = await pouch.call(
        "replicate", source="phone", target=phone, options={"checkpoint": False}
    )
    assert again["doc_write_failures"] == 2
    _, body = await refusals(org, "sam")
    assert sorted((r["doc_id"], r["count"]) for r in body["refusals"]) == [
        ("elsewhere-1", 2),
        ("too-many-weeks-1", 2),
    ]
    status, _ = await refusals(org, "alice")
    assert status in (401, 403)  # a CHW: no token here (401), and never the list (403)
