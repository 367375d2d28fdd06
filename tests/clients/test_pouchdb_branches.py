"""A real PouchDB client and a record whose branches lie in two places (issue 9, point 4).

``rec`` lives in area-a1 (alice's; winner ``3-alicewin``); a losing branch
``2-bobleaf`` lies in area-b1 (bob's) with an attachment of its own.  Alice's
phone pulls and pushes as usual, never holds anything of bob's branch, and a
replicated history through bob's branch does not close it.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pouch import PouchDriver
from realserver import Admin, ServerProcess, inline_attachment, pull, push

SECRET = b"bob's photo"
HIDDEN = ["bobleaf", "bob.jpg", "Jane B.", base64.b64encode(SECRET).decode()]


@pytest.fixture
def server_env() -> dict[str, str]:
    return {"FIELDSYNC_REQUIRE_ENROLMENT": "0"}  # enrolment is tests/device_registry's subject


async def replicate_in(admin: Admin, docs: list[dict[str, Any]]) -> None:
    url = f"{admin.db_url}/_bulk_docs"
    async with admin.session.post(url, json={"docs": docs, "new_edits": False}) as resp:
        assert (resp.status, await resp.json()) == (201, [])


async def leaves(admin: Admin) -> list[str]:
    async with admin.session.get(f"{admin.db_url}/rec", params={"open_revs": "all"}) as resp:
        return sorted(entry["ok"]["_rev"] for entry in await resp.json())


@pytest.fixture
async def rec(admin: Admin) -> None:
    await replicate_in(
        admin,
        [
            {"_id": "rec", "_rev": "3-alicewin", "place": "area-a1", "name": "Jane",
             "_revisions": {"start": 3, "ids": ["alicewin", "alicemid", "root"]}},
            {"_id": "rec", "_rev": "2-bobleaf", "place": "area-b1", "name": "Jane B.",
             "_revisions": {"start": 2, "ids": ["bobleaf", "root"]},
             "_attachments": {"bob.jpg": inline_attachment(SECRET)}},
        ],
    )  # fmt: skip


async def test_alice_pulls_and_pushes_without_touching_bobs_branch(
    pouch: PouchDriver, admin: Admin, org: ServerProcess, rec: None
) -> None:
    pulled = await pull(pouch, org, "alice", "phone")
    assert pulled["doc_write_failures"] == 0 and pulled["docs_written"] == 1
    options = {"open_revs": "all", "revs": True, "conflicts": True, "attachments": True}
    local = await pouch.call("get", db="phone", docid="rec", options=options)
    assert [h for h in HIDDEN if h in json.dumps(local)] == []
    doc = await pouch.call("get", db="phone", docid="rec")
    await pouch.call("put", db="phone", doc={**doc, "name": "Jane A."})
    pushed = await push(pouch, org, "alice", "phone")
    assert (pushed["docs_written"], pushed["doc_write_failures"]) == (1, 0)
    assert "2-bobleaf" in await leaves(admin)
    # A history through bob's branch (a phone that learned its id) does not close it.
    graft = {"_id": "rec", "_rev": "3-graft", "place": "area-a1", "name": "mine",
             "_revisions": {"start": 3, "ids": ["graft", "bobleaf", "root"]}}  # fmt: skip
    await pouch.call("bulk_docs", db="phone", docs=[graft], options={"new_edits": False})
    pushed = await push(pouch, org, "alice", "phone")
    assert pushed["doc_write_failures"] == 0
    assert "2-bobleaf" in await leaves(admin) and "3-graft" in await leaves(admin)
    pulled = await pull(pouch, org, "alice", "phone2")
    local = await pouch.call("get", db="phone2", docid="rec", options=options)
    assert [h for h in HIDDEN if h in json.dumps(local)] == []
