"""Per-worker document sets on every endpoint (DESIGN.md, "Per-worker document sets").

alice captures area-a1; bob captures area-b1; sam captures district-a and reads
district-b; admin sees everything.  A document outside a caller's set must be
indistinguishable from a missing one, and writes outside the capture scope fail
per document with ``forbidden`` and write nothing.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from sync_fixtures import Api, Client, as_user

from sync.cli import main

NOT_FOUND = {"error": "not_found", "reason": "missing"}
ANY_DOC = mock.ANY
ATT = {"content_type": "text/plain", "data": base64.b64encode(b"b1 secret").decode()}


async def seed(api: Api) -> dict[str, str]:
    """One document in each place of interest, plus a shared one; returns id -> rev."""
    docs: list[dict[str, Any]] = [
        {"_id": "doc-a1", "place": "area-a1"},
        {"_id": "doc-a2", "place": "area-a2"},
        {"_id": "doc-b1", "place": "area-b1", "_attachments": {"s.txt": ATT}},
        {"_id": "form-p"},  # shared: no place
    ]
    return {r["id"]: r["rev"] for r in await api.bulk(docs)}


async def visible_changes(api: Api, user: str, **params: Any) -> list[str]:
    status, body = await api.call("GET", "/health/_changes", user, **params)
    assert status == 200, body
    return [row["id"] for row in body["results"]]


async def all_doc_ids(api: Api, user: str) -> list[str]:
    return [row["id"] for row in (await api.call("GET", "/health/_all_docs", user))[1]["rows"]]


# -- reads ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("alice", ["doc-a1", "form-p"]),
        ("bob", ["doc-b1", "form-p"]),
        ("sam", ["doc-a1", "doc-a2", "doc-b1", "form-p"]),
        ("admin", ["doc-a1", "doc-a2", "doc-b1", "form-p"]),
    ],
)
async def test_each_user_sees_their_set(api: Api, user: str, expected: list[str]) -> None:
    await seed(api)
    assert sorted(await visible_changes(api, user)) == expected
    assert await all_doc_ids(api, user) == expected


async def test_get_outside_the_set_is_a_plain_404(api: Api) -> None:
    await seed(api)
    assert await api.call("GET", "/health/doc-b1", "alice") == (404, NOT_FOUND)
    assert await api.call("GET", "/health/no-such-doc", "alice") == (404, NOT_FOUND)
    assert (await api.call("GET", "/health/doc-b1", "bob"))[0] == 200


async def test_get_with_rev_outside_the_set_is_404(api: Api) -> None:
    revs = await seed(api)
    assert await api.call("GET", "/health/doc-b1", "alice", rev=revs["doc-b1"]) == (404, NOT_FOUND)


async def test_open_revs_outside_the_set(api: Api) -> None:
    revs = await seed(api)
    assert (await api.call("GET", "/health/doc-b1", "alice", open_revs="all"))[0] == 404
    wanted = json.dumps([revs["doc-b1"]])
    status, body = await api.call("GET", "/health/doc-b1", "alice", open_revs=wanted)
    assert status == 200 and body == [{"missing": revs["doc-b1"]}]


async def test_bulk_get_outside_the_set_is_an_error_entry(api: Api) -> None:
    revs = await seed(api)
    wanted = {"docs": [{"id": "doc-b1", "rev": revs["doc-b1"]}, {"id": "doc-b1"}]}
    body = (await api.call("POST", "/health/_bulk_get", "alice", wanted))[1]
    for result in body["results"]:
        assert list(result["docs"][0]) == ["error"]
        assert result["docs"][0]["error"]["error"] == "not_found"


async def test_all_docs_keys_outside_the_set_are_not_found(api: Api) -> None:
    await seed(api)
    body = (await api.call("POST", "/health/_all_docs", "alice", {"keys": ["doc-b1", "doc-a1"]}))[1]
    assert body["rows"][0] == {"key": "doc-b1", "error": "not_found"}
    assert body["rows"][1]["id"] == "doc-a1"
    assert body["total_rows"] == 2


async def test_changes_doc_ids_outside_the_set(api: Api) -> None:
    await seed(api)
    ids = json.dumps(["doc-b1", "doc-a1"])
    assert await visible_changes(api, "alice", filter="_doc_ids", doc_ids=ids) == ["doc-a1"]


async def test_attachment_url_outside_the_set(api: Api, client: Client) -> None:
    await seed(api)
    response = await client.get("/health/doc-b1/s.txt", headers=as_user("alice"))
    assert response.status == 404
    assert await response.json() == NOT_FOUND
    response = await client.get("/health/doc-b1/s.txt", headers=as_user("bob"))
    assert await response.read() == b"b1 secret"


async def test_revs_diff_reports_hidden_documents_missing(api: Api) -> None:
    revs = await seed(api)
    body = {"doc-b1": [revs["doc-b1"]], "doc-a1": [revs["doc-a1"]]}
    assert await api.call("POST", "/health/_revs_diff", "alice", body) == (
        200,
        {"doc-b1": {"missing": [revs["doc-b1"]]}},
    )


async def test_db_info_counts_only_the_set(api: Api) -> None:
    await seed(api)
    assert (await api.call("GET", "/health/", "alice"))[1]["doc_count"] == 2
    assert (await api.call("GET", "/health/", "admin"))[1]["doc_count"] == 4


# -- writes ---------------------------------------------------------------------------
async def assert_unchanged(api: Api, before: int) -> None:
    assert (await api.call("GET", "/health/", "admin"))[1]["update_seq"] == before


async def update_seq(api: Api) -> int:
    return int((await api.call("GET", "/health/", "admin"))[1]["update_seq"])


@pytest.mark.parametrize(
    "doc",
    [
        {"_id": "new-b1", "place": "area-b1"},  # a place outside her capture scope
        {"_id": "new-shared"},  # no place: only admins write shared documents
        {"_id": "new-nowhere", "place": "atlantis"},  # a place that does not exist
    ],
)
async def test_alice_cannot_create_outside_her_scope(api: Api, doc: dict[str, Any]) -> None:
    before = await update_seq(api)
    [result] = await api.bulk([doc], "alice")
    assert result["id"] == doc["_id"] and result["error"] == "forbidden"
    await assert_unchanged(api, before)
    assert (await api.call("GET", f"/health/{doc['_id']}", "admin"))[0] == 404


async def test_forbidden_documents_do_not_fail_the_batch(api: Api) -> None:
    answer = await api.bulk(
        [{"_id": "x", "place": "area-b1"}, {"_id": "y", "place": "area-a1"}], "alice"
    )
    assert answer[0]["error"] == "forbidden" and answer[1]["ok"] is True


@pytest.mark.parametrize(
    "edit",
    [
        {"place": "area-b1", "v": 2},  # keeps it in area-b1
        {"place": "area-a1", "v": 2},  # tries to pull it into her area
        {"_deleted": True},  # tries to delete it
    ],
)
async def test_alice_cannot_edit_a_document_of_area_b1(api: Api, edit: dict[str, Any]) -> None:
    revs = await seed(api)
    before = await update_seq(api)
    [result] = await api.bulk([{"_id": "doc-b1", "_rev": revs["doc-b1"], **edit}], "alice")
    assert result["error"] == "forbidden"
    await assert_unchanged(api, before)
    assert (await api.call("GET", "/health/doc-b1", "bob"))[1]["_rev"] == revs["doc-b1"]


async def test_alice_cannot_replicate_a_branch_into_a_hidden_document(api: Api) -> None:
    await seed(api)
    before = await update_seq(api)
    doc = {"_id": "doc-b1", "_rev": "1-ffff", "place": "area-a1"}
    [result] = await api.bulk([doc], "alice", new_edits=False)
    assert result["error"] == "forbidden"
    await assert_unchanged(api, before)


async def test_alice_cannot_create_with_put_outside_her_scope(api: Api) -> None:
    status, body = await api.call("PUT", "/health/p", "alice", {"place": "area-b1"})
    assert status == 403 and body["error"] == "forbidden"


async def attachment_call(client: Client, method: str, doc_id: str, rev: str) -> tuple[int, Any]:
    url = f"/health/{doc_id}/s.txt?rev={rev}"
    response = await client.request(method, url, data=b"x", headers=as_user("alice"))
    return response.status, await response.json()


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_alice_cannot_touch_an_attachment_of_area_b1(
    api: Api, client: Client, method: str
) -> None:
    revs = await seed(api)
    before = await update_seq(api)
    hidden = await attachment_call(client, method, "doc-b1", revs["doc-b1"])
    missing = await attachment_call(client, method, "no-such-doc", revs["doc-b1"])
    assert hidden == missing and hidden[0] >= 400
    await assert_unchanged(api, before)


async def test_alice_cannot_delete_a_hidden_document(api: Api) -> None:
    revs = await seed(api)
    status, _ = await api.call("DELETE", "/health/doc-b1", "alice", rev=revs["doc-b1"])
    assert status == 404


async def test_sam_reads_both_districts_but_writes_only_district_a(api: Api) -> None:
    revs = await seed(api)
    answer = await api.bulk(
        [
            {"_id": "sam-a2", "place": "area-a2"},
            {"_id": "sam-b1", "place": "area-b1"},
            {"_id": "doc-b1", "_rev": revs["doc-b1"], "place": "area-b1", "v": 2},
        ],
        "sam",
    )
    assert [r.get("error") for r in answer] == [None, "forbidden", "forbidden"]
    assert (await api.call("GET", "/health/doc-b1", "sam"))[0] == 200


async def test_shared_documents_reach_everyone_but_only_admins_edit_them(api: Api) -> None:
    revs = await seed(api)
    for user in ("alice", "bob", "sam"):
        assert (await api.call("GET", "/health/form-p", user))[0] == 200
    [result] = await api.bulk([{"_id": "form-p", "_rev": revs["form-p"], "v": 2}], "alice")
    assert result["error"] == "forbidden"


async def test_an_edit_without_place_never_shares_a_workers_record(api: Api) -> None:
    """An admin's correction that forgets "place" is refused: it would reach every worker."""
    revs = await seed(api)
    [result] = await api.bulk([{"_id": "doc-a1", "_rev": revs["doc-a1"], "v": 2}])
    assert result["error"] == "forbidden" and "area-a1" in result["reason"]
    status, kept = await api.call("GET", "/health/doc-a1", "admin")
    assert (status, kept["_rev"], kept["place"]) == (200, revs["doc-a1"], "area-a1")
    assert (await api.call("GET", "/health/doc-a1", "bob"))[0] == 404
    put = await api.call("PUT", "/health/doc-a1", "admin", {"_rev": revs["doc-a1"], "v": 2})
    assert put[0] == 403 and put[1]["error"] == "forbidden"
    [fixed] = await api.bulk([{"_id": "doc-a1", "_rev": revs["doc-a1"], "place": "area-a1"}])
    assert "error" not in fixed


# -- documents that leave a set -----------------------------------------------------
async def test_a_moved_document_stops_reaching_alice(api: Api) -> None:
    revs = await seed(api)
    token = (await api.call("GET", "/health/_changes", "alice"))[1]["last_seq"]
    await api.bulk([{"_id": "doc-a1", "_rev": revs["doc-a1"], "place": "area-b1"}])
    body = (await api.call("GET", "/health/_changes", "alice", since=token))[1]
    assert body["results"] == []
    assert (await api.call("GET", "/health/doc-a1", "alice"))[0] == 404
    assert (await api.call("GET", "/health/doc-a1", "bob"))[0] == 200
    assert "doc-a1" not in await all_doc_ids(api, "alice")


async def test_later_revisions_of_a_moved_document_stay_hidden(api: Api) -> None:
    revs = await seed(api)
    [moved] = await api.bulk([{"_id": "doc-a1", "_rev": revs["doc-a1"], "place": "area-b1"}])
    await api.bulk([{"_id": "doc-a1", "_rev": moved["rev"], "place": "area-b1", "v": 3}])
    assert "doc-a1" not in await visible_changes(api, "alice")
    wanted = {"docs": [{"id": "doc-a1", "rev": revs["doc-a1"]}]}
    body = (await api.call("POST", "/health/_bulk_get", "alice", wanted, latest="true"))[1]
    assert "ok" not in body["results"][0]["docs"][0]


async def test_old_revision_of_a_moved_document_is_hidden(api: Api) -> None:
    revs = await seed(api)
    await api.bulk([{"_id": "doc-a1", "_rev": revs["doc-a1"], "place": "area-b1", "v": 2}])
    status, _ = await api.call("GET", "/health/doc-a1", "alice", rev=revs["doc-a1"])
    assert status == 404


# -- scope growth ----------------------------------------------------------------------
def give_alice_area_b1(data_dir: Path) -> None:
    """The command an admin runs beside the server: it answers once the change holds."""
    args = ["--place", "area-a1", "--place", "area-b1", "--data-dir", str(data_dir)]
    assert main(["user", "set-places", "alice", *args]) == 0


async def pull_all(api: Api, user: str, since: Any, limit: int = 2) -> tuple[list[str], Any]:
    """Page through _changes from ``since`` until a page is empty; (ids in order, last token)."""
    seen: list[str] = []
    while True:
        body = (await api.call("GET", "/health/_changes", user, since=since, limit=limit))[1]
        if not body["results"]:
            return seen, body["last_seq"]
        seen += [row["id"] for row in body["results"]]
        since = body["last_seq"]


async def test_scope_growth_backfills_old_documents(api: Api, data_dir: Path) -> None:
    await api.bulk([{"_id": f"old-b1-{i}", "place": "area-b1"} for i in range(5)])
    await api.bulk([{"_id": "a1-first", "place": "area-a1"}])
    seen, token = await pull_all(api, "alice", 0)
    assert seen == ["a1-first"]
    give_alice_area_b1(data_dir)
    await api.bulk(
        [{"_id": "a1-after", "place": "area-a1"}, {"_id": "b1-after", "place": "area-b1"}]
    )
    seen, token = await pull_all(api, "alice", token)
    assert sorted(seen[:5]) == [f"old-b1-{i}" for i in range(5)]
    assert seen[5:] == ["a1-after", "b1-after"]
    assert len(seen) == len(set(seen))
    assert (await pull_all(api, "alice", token))[0] == []


async def test_scope_growth_tokens_are_usable_mid_backfill(api: Api, data_dir: Path) -> None:
    await api.bulk([{"_id": f"old-b1-{i}", "place": "area-b1"} for i in range(5)])
    token = (await api.call("GET", "/health/_changes", "alice"))[1]["last_seq"]
    give_alice_area_b1(data_dir)
    first = (await api.call("GET", "/health/_changes", "alice", since=token, limit=2))[1]
    assert len(first["results"]) == 2
    rest, _ = await pull_all(api, "alice", first["last_seq"])
    assert sorted([r["id"] for r in first["results"]] + rest) == [f"old-b1-{i}" for i in range(5)]


async def test_scope_growth_updates_db_info_token(api: Api, data_dir: Path) -> None:
    await api.bulk([{"_id": "old-b1", "place": "area-b1"}])
    before = (await api.call("GET", "/health/", "alice"))[1]["update_seq"]
    give_alice_area_b1(data_dir)
    after = (await api.call("GET", "/health/", "alice"))[1]["update_seq"]
    assert before != after


# -- conflicts across places ----------------------------------------------------------
async def cross_place_conflict(api: Api) -> None:
    """doc-x in area-a1 (winner 2-zzz) with a losing branch 2-aaa that sam put in area-a2."""

    def branch(h: str, place: str) -> dict[str, Any]:
        return {"_id": "doc-x", "_rev": f"2-{h}", "place": place,
                "_revisions": {"start": 2, "ids": [h, "root"]}}  # fmt: skip

    assert await api.bulk([branch("zzz", "area-a1")], "alice", new_edits=False) == []
    assert await api.bulk([branch("aaa", "area-a2")], "sam", new_edits=False) == []


async def test_changes_advertise_only_leaves_the_worker_can_fetch(api: Api) -> None:
    """PouchDB fails a whole batch when _bulk_get answers an error for any advertised leaf."""
    await cross_place_conflict(api)
    body = (await api.call("GET", "/health/_changes", "alice", style="all_docs"))[1]
    [row] = body["results"]
    assert row["changes"] == [{"rev": "2-zzz"}]
    wanted = {"docs": [{"id": "doc-x", "rev": c["rev"]} for c in row["changes"]]}
    got = (
        await api.call("POST", "/health/_bulk_get", "alice", wanted, revs="true", latest="true")
    )[1]
    assert all("ok" in d for r in got["results"] for d in r["docs"])
    sam = (await api.call("GET", "/health/_changes", "sam", style="all_docs"))[1]
    assert sam["results"][0]["changes"] == [{"rev": "2-zzz"}, {"rev": "2-aaa"}]


async def test_open_revs_all_returns_only_readable_leaves(api: Api) -> None:
    await cross_place_conflict(api)
    entries = (await api.call("GET", "/health/doc-x", "alice", open_revs="all"))[1]
    assert [e["ok"]["_rev"] for e in entries] == ["2-zzz"]


async def test_latest_omits_descendants_outside_the_set(api: Api) -> None:
    await cross_place_conflict(api)
    wanted = {"docs": [{"id": "doc-x", "rev": "1-root"}]}
    got = (await api.call("POST", "/health/_bulk_get", "alice", wanted, latest="true"))[1]
    assert got["results"][0]["docs"] == [{"ok": ANY_DOC}]
    assert got["results"][0]["docs"][0]["ok"]["_rev"] == "2-zzz"
    opened = (
        await api.call("GET", "/health/doc-x", "alice", open_revs='["1-root"]', latest="true")
    )[1]
    assert [e["ok"]["_rev"] for e in opened] == ["2-zzz"]


async def test_conflicts_name_only_branches_the_caller_can_read(api: Api) -> None:
    """``conflicts=true`` never names a rev whose branch lies outside the caller's set."""
    await cross_place_conflict(api)
    status, alice = await api.call("GET", "/health/doc-x", "alice", conflicts="true")
    assert status == 200 and alice["_rev"] == "2-zzz" and "_conflicts" not in alice
    listed = (
        await api.call("GET", "/health/_all_docs", "alice", include_docs="true", conflicts="true")
    )[1]
    assert [r["doc"].get("_conflicts") for r in listed["rows"]] == [None]
    sam = (await api.call("GET", "/health/doc-x", "sam", conflicts="true"))[1]
    assert sam["_conflicts"] == ["2-aaa"]


async def test_deleted_conflicts_name_only_branches_the_caller_can_read(api: Api) -> None:
    """A record with a deleted branch in area-a2 moves to area-a1: alice never sees that branch."""

    def branch(h: str) -> dict[str, Any]:
        return {"_id": "doc-y", "_rev": f"2-{h}", "place": "area-a2",
                "_revisions": {"start": 2, "ids": [h, "root"]}}  # fmt: skip

    assert await api.bulk([branch("aaa"), branch("bbb")], "sam", new_edits=False) == []
    status, gone = await api.call("DELETE", "/health/doc-y", "sam", rev="2-aaa")
    assert status == 200
    moved = {"_id": "doc-y", "_rev": "2-bbb", "place": "area-a1"}
    [row] = await api.bulk([moved], "sam")
    alice = (await api.call("GET", "/health/doc-y", "alice", deleted_conflicts="true"))[1]
    assert alice["_rev"] == row["rev"] and "_deleted_conflicts" not in alice
    sam = (await api.call("GET", "/health/doc-y", "sam", deleted_conflicts="true"))[1]
    assert sam["_deleted_conflicts"] == [gone["rev"]]
