"""The replicator's endpoints: _bulk_docs, _revs_diff, _bulk_get, _all_docs, _local, revs_limit.

https://docs.couchdb.org/en/stable/api/database/bulk-api.html and
https://docs.couchdb.org/en/stable/replication/protocol.html
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from sync_fixtures import Api

A1 = "area-a1"


def replicated(
    doc_id: str, *hashes: str, deleted: bool = False, start: int = 0, **fields: Any
) -> dict[str, Any]:
    """A revision as a replicator sends it: newest hash first (history from ``start``)."""
    start = start or len(hashes)
    return {
        "_id": doc_id,
        "_rev": f"{start}-{hashes[0]}",
        "_revisions": {"start": start, "ids": list(hashes)},
        "_deleted": deleted,
        "place": A1,
        **fields,
    }


async def get(api: Api, doc_id: str, user: str = "admin", **params: Any) -> dict[str, Any]:
    status, doc = await api.call("GET", f"/health/{doc_id}", user, **params)
    assert status == 200, doc
    return dict(doc)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- _bulk_docs, new_edits=true ---------------------------------------------------------
async def test_bulk_docs_reports_each_document(api: Api) -> None:
    rev = (await api.bulk([{"_id": "a", "place": A1}]))[0]["rev"]
    answer = await api.bulk(
        [
            {"_id": "a", "_rev": rev, "place": A1, "v": 2},
            {"_id": "a", "place": A1},  # conflicts with the first
            {"_id": "b", "place": A1},
            {"_id": "c", "_rev": "1-abc", "place": A1},  # parent the server never saw
        ]
    )
    assert [r.get("error") for r in answer] == [None, "conflict", None, "conflict"]
    assert answer[0]["ok"] and answer[0]["rev"].startswith("2-")
    assert answer[1] == {"id": "a", "error": "conflict", "reason": "Document update conflict."}


async def test_bulk_docs_generates_missing_ids(api: Api) -> None:
    [result] = await api.bulk([{"place": A1}])
    assert result["ok"] and len(result["id"]) >= 16


async def test_bulk_docs_deletes(api: Api) -> None:
    rev = (await api.bulk([{"_id": "a", "place": A1}]))[0]["rev"]
    [result] = await api.bulk([{"_id": "a", "_rev": rev, "_deleted": True}])
    assert result["ok"]
    assert (await api.call("GET", "/health/a"))[1]["reason"] == "deleted"


# -- _bulk_docs, new_edits=false --------------------------------------------------------
async def test_new_edits_false_answers_nothing_on_success(api: Api) -> None:
    assert await api.bulk([replicated("a", "x1")], new_edits=False) == []
    assert (await get(api, "a"))["_rev"] == "1-x1"


@pytest.mark.parametrize(
    ("branches", "winner", "conflicts"),
    [
        ([("b2", "a1"), ("c2", "a1")], "2-c2", ["2-b2"]),  # same pos: highest hash
        ([("z2", "a1"), ("b3", "b2", "a1")], "3-b3", ["2-z2"]),  # highest pos first
        ([("b3", "b2", "a1"), ("c2", "a1")], "3-b3", ["2-c2"]),
        ([("x2", "a1"), ("y2", "a1"), ("z2", "a1")], "2-z2", ["2-y2", "2-x2"]),
    ],
)
async def test_new_edits_false_builds_conflicts(
    api: Api, branches: list[tuple[str, ...]], winner: str, conflicts: list[str]
) -> None:
    docs = [replicated("a", *hashes, v=hashes[0]) for hashes in branches]
    assert await api.bulk(docs, new_edits=False) == []
    doc = await get(api, "a", conflicts="true")
    assert doc["_rev"] == winner and doc["v"] == winner.split("-")[1]
    assert doc["_conflicts"] == conflicts


async def test_deleted_leaf_never_wins_over_a_live_one(api: Api) -> None:
    docs = [replicated("a", "z3", "b2", "a1", deleted=True), replicated("a", "c2", "a1")]
    await api.bulk(docs, new_edits=False)
    doc = await get(api, "a", deleted_conflicts="true", conflicts="true")
    assert doc["_rev"] == "2-c2" and doc["_deleted_conflicts"] == ["3-z3"]
    assert "_conflicts" not in doc


async def test_new_edits_false_is_idempotent(api: Api) -> None:
    docs = [replicated("a", "b2", "a1"), replicated("a", "c2", "a1")]
    await api.bulk(docs, new_edits=False)
    seq = (await api.call("GET", "/health/"))[1]["update_seq"]
    assert await api.bulk(docs, new_edits=False) == []
    assert (await api.call("GET", "/health/"))[1]["update_seq"] == seq
    assert (await get(api, "a", conflicts="true"))["_conflicts"] == ["2-b2"]


async def test_new_edits_false_without_rev_fails_the_request(api: Api) -> None:
    body = {"docs": [replicated("b", "b1"), {"_id": "a", "place": A1}], "new_edits": False}
    status, answer = await api.call("POST", "/health/_bulk_docs", body=body)
    assert status == 400 and answer["error"] == "bad_request"
    assert (await api.call("GET", "/health/b"))[0] == 404


async def test_new_edits_false_history_joins_a_stemmed_tree(api: Api) -> None:
    await api.bulk([replicated("a", "a2", "a1")], new_edits=False)
    await api.bulk([replicated("a", "a4", "a3", "a2", start=4)], new_edits=False)
    doc = await get(api, "a", revs="true")
    assert doc["_revisions"] == {"start": 4, "ids": ["a4", "a3", "a2", "a1"]}


# -- revs_limit ------------------------------------------------------------------------
async def test_revs_limit_stems_history(api: Api) -> None:
    assert await api.call("PUT", "/health/_revs_limit", body=3) == (200, {"ok": True})
    assert await api.call("GET", "/health/_revs_limit") == (200, 3)
    rev = (await api.bulk([{"_id": "a", "place": A1}]))[0]["rev"]
    for n in range(6):
        rev = (await api.bulk([{"_id": "a", "_rev": rev, "place": A1, "n": n}]))[0]["rev"]
    doc = await get(api, "a", revs="true")
    assert doc["_revisions"]["start"] == 7 and len(doc["_revisions"]["ids"]) == 3


@pytest.mark.parametrize("body", [0, -1, "3", True, {"limit": 3}])
async def test_revs_limit_must_be_a_positive_integer(api: Api, body: Any) -> None:
    assert (await api.call("PUT", "/health/_revs_limit", body=body))[0] == 400


async def test_only_admins_set_revs_limit(api: Api) -> None:
    assert (await api.call("PUT", "/health/_revs_limit", "alice", 3))[0] == 403


# -- _revs_diff -------------------------------------------------------------------------
async def test_revs_diff_reports_missing_and_possible_ancestors(api: Api) -> None:
    await api.bulk([replicated("a", "a2", "a1")], new_edits=False)
    status, diff = await api.call(
        "POST", "/health/_revs_diff", body={"a": ["2-a2", "3-a3", "1-zz"], "new": ["1-n1"]}
    )
    assert status == 200
    assert diff == {
        "a": {"missing": ["3-a3", "1-zz"], "possible_ancestors": ["2-a2"]},
        "new": {"missing": ["1-n1"]},
    }


async def test_revs_diff_omits_documents_with_nothing_missing(api: Api) -> None:
    await api.bulk([replicated("a", "a1")], new_edits=False)
    assert await api.call("POST", "/health/_revs_diff", body={"a": ["1-a1"]}) == (200, {})


async def test_revs_diff_rejects_non_lists(api: Api) -> None:
    assert (await api.call("POST", "/health/_revs_diff", body={"a": "1-a1"}))[0] == 400


# -- _bulk_get ------------------------------------------------------------------------
async def test_bulk_get_with_revs(api: Api) -> None:
    await api.bulk([replicated("a", "a2", "a1", v=1)], new_edits=False)
    status, body = await api.call(
        "POST", "/health/_bulk_get", body={"docs": [{"id": "a", "rev": "2-a2"}]}, revs="true"
    )
    assert status == 200
    [result] = body["results"]
    doc = result["docs"][0]["ok"]
    assert result["id"] == "a" and doc["v"] == 1
    assert doc["_revisions"] == {"start": 2, "ids": ["a2", "a1"]}


async def test_bulk_get_without_rev_gives_the_winner(api: Api) -> None:
    await api.bulk([replicated("a", "b2", "a1"), replicated("a", "c2", "a1")], new_edits=False)
    body = (await api.call("POST", "/health/_bulk_get", body={"docs": [{"id": "a"}]}))[1]
    assert [d["ok"]["_rev"] for d in body["results"][0]["docs"]] == ["2-c2"]


async def test_bulk_get_latest_follows_to_the_leaf(api: Api) -> None:
    await api.bulk([replicated("a", "a3", "a2", "a1")], new_edits=False)
    body = (
        await api.call(
            "POST", "/health/_bulk_get", body={"docs": [{"id": "a", "rev": "1-a1"}]}, latest="true"
        )
    )[1]
    assert body["results"][0]["docs"][0]["ok"]["_rev"] == "3-a3"


async def test_bulk_get_missing_revs_are_error_entries(api: Api) -> None:
    await api.bulk([replicated("a", "a1")], new_edits=False)
    wanted = [{"id": "a", "rev": "9-zz"}, {"id": "nope", "rev": "1-x"}, {"id": "a", "rev": "1-a1"}]
    results = (await api.call("POST", "/health/_bulk_get", body={"docs": wanted}))[1]["results"]
    assert results[0] == {
        "id": "a",
        "docs": [{"error": {"id": "a", "rev": "9-zz", "error": "not_found", "reason": "missing"}}],
    }
    assert results[1]["docs"][0]["error"]["id"] == "nope"
    assert results[2]["docs"][0]["ok"]["_rev"] == "1-a1"


async def test_bulk_get_attachments_true_inlines_data(api: Api) -> None:
    att = {"content_type": "text/plain", "data": b64(b"scan")}
    await api.bulk([replicated("a", "a1", _attachments={"s.txt": att})], new_edits=False)
    wanted = {"docs": [{"id": "a", "rev": "1-a1"}]}
    body = (await api.call("POST", "/health/_bulk_get", body=wanted, attachments="true"))[1]
    inline = body["results"][0]["docs"][0]["ok"]["_attachments"]["s.txt"]
    assert base64.b64decode(inline["data"]) == b"scan"
    plain = (await api.call("POST", "/health/_bulk_get", body=wanted))[1]
    assert plain["results"][0]["docs"][0]["ok"]["_attachments"]["s.txt"]["stub"] is True


@pytest.mark.parametrize("body", [{}, {"docs": "a"}, {"docs": [{"rev": "1-a"}]}, {"docs": [1]}])
async def test_bulk_get_bad_requests(api: Api, body: dict[str, Any]) -> None:
    assert (await api.call("POST", "/health/_bulk_get", body=body))[0] == 400


# -- attachments through _bulk_docs ----------------------------------------------------
async def test_inline_attachment_is_stored_once_by_digest(api: Api) -> None:
    data = b"same bytes"
    digest = "md5-" + b64(hashlib.md5(data).digest())
    att = {"content_type": "text/plain", "data": b64(data)}
    await api.bulk([{"_id": d, "place": A1, "_attachments": {"f": att}} for d in ("a", "b")])
    for doc_id in ("a", "b"):
        stub = (await get(api, doc_id))["_attachments"]["f"]
        assert stub["digest"] == digest and stub["length"] == len(data) and stub["stub"]


async def test_stub_for_an_unknown_digest_is_missing_stub(api: Api) -> None:
    stub = {"stub": True, "digest": "md5-AAAAAAAAAAAAAAAAAAAAAA==", "content_type": "text/plain"}
    answer = await api.bulk([replicated("a", "a1", _attachments={"f": stub})], new_edits=False)
    assert answer[0]["id"] == "a" and answer[0]["error"] == "missing_stub"
    assert (await api.call("GET", "/health/a"))[0] == 404


async def test_stub_may_refer_to_an_attachment_of_an_earlier_revision(api: Api) -> None:
    att = {"content_type": "text/plain", "data": b64(b"first")}
    await api.bulk([replicated("a", "a1", _attachments={"f": att})], new_edits=False)
    stub = {**(await get(api, "a"))["_attachments"]["f"], "stub": True}
    answer = await api.bulk(
        [replicated("a", "a2", "a1", _attachments={"f": stub})], new_edits=False
    )
    assert answer == []


# -- _all_docs -------------------------------------------------------------------------
async def seed_all_docs(api: Api) -> None:
    await api.bulk([{"_id": i, "place": A1} for i in ("a", "b", "c", "d", "e")])
    rev = (await get(api, "c"))["_rev"]
    await api.bulk([{"_id": "c", "_rev": rev, "_deleted": True}])


def ids(body: dict[str, Any]) -> list[str]:
    return [row["id"] for row in body["rows"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["a", "b", "d", "e"]),
        ({"startkey": '"b"', "endkey": '"d"'}, ["b", "d"]),
        ({"start_key": '"b"', "end_key": '"d"', "inclusive_end": "false"}, ["b"]),
        ({"descending": "true"}, ["e", "d", "b", "a"]),
        ({"descending": "true", "startkey": '"d"', "endkey": '"b"'}, ["d", "b"]),
        ({"descending": "true", "startkey": '"d"', "endkey": '"b"', "inclusive_end": "false"},
         ["d"]),
        ({"limit": "2", "skip": "1"}, ["b", "d"]),
        ({"limit": "0"}, []),
    ],
)  # fmt: skip
async def test_all_docs_ranges(api: Api, params: dict[str, str], expected: list[str]) -> None:
    await seed_all_docs(api)
    status, body = await api.call("GET", "/health/_all_docs", **params)
    assert status == 200 and ids(body) == expected
    assert body["total_rows"] == 4


async def test_all_docs_rows_and_include_docs(api: Api) -> None:
    await seed_all_docs(api)
    body = (await api.call("GET", "/health/_all_docs", include_docs="true", limit="1"))[1]
    [row] = body["rows"]
    assert row["key"] == "a" and row["value"] == {"rev": row["doc"]["_rev"]}
    assert row["doc"]["_id"] == "a" and row["doc"]["place"] == A1


async def test_all_docs_keys_include_missing_and_deleted(api: Api) -> None:
    await seed_all_docs(api)
    body = (
        await api.call(
            "POST", "/health/_all_docs", body={"keys": ["d", "zz", "c"]}, include_docs="true"
        )
    )[1]
    d, zz, c = body["rows"]
    assert d["id"] == "d" and d["doc"]["_id"] == "d"
    assert zz == {"key": "zz", "error": "not_found"}
    assert c["value"]["deleted"] is True and c["doc"] is None


async def test_all_docs_keys_as_a_get_parameter(api: Api) -> None:
    await seed_all_docs(api)
    body = (await api.call("GET", "/health/_all_docs", keys=json.dumps(["e", "a"])))[1]
    assert ids(body) == ["e", "a"]


# -- _local documents ------------------------------------------------------------------
async def test_local_docs_count_revisions_from_zero(api: Api) -> None:
    path = "/health/_local/checkpoint"
    status, body = await api.call("PUT", path, "alice", {"last_seq": 1})
    assert status == 201 and body == {"ok": True, "id": "_local/checkpoint", "rev": "0-1"}
    status, body = await api.call("PUT", path, "alice", {"_rev": "0-1", "last_seq": 2})
    assert body["rev"] == "0-2"
    assert await api.call("GET", path, "alice") == (
        200,
        {"_id": "_local/checkpoint", "_rev": "0-2", "last_seq": 2},
    )


@pytest.mark.parametrize("rev", [None, "0-1", "0-9"])
async def test_local_doc_stale_rev_is_409(api: Api, rev: str | None) -> None:
    path = "/health/_local/x"
    await api.call("PUT", path, "alice", {"n": 1})
    await api.call("PUT", path, "alice", {"_rev": "0-1", "n": 2})
    body = {"n": 3} if rev is None else {"_rev": rev, "n": 3}
    assert (await api.call("PUT", path, "alice", body))[0] == 409


async def test_local_docs_are_per_user(api: Api) -> None:
    await api.call("PUT", "/health/_local/x", "alice", {"secret": "alice's"})
    assert (await api.call("GET", "/health/_local/x", "bob"))[0] == 404
    status, body = await api.call("PUT", "/health/_local/x", "bob", {"mine": True})
    assert status == 201 and body["rev"] == "0-1"
    assert (await api.call("GET", "/health/_local/x", "alice"))[1]["secret"] == "alice's"


async def test_local_docs_never_appear_in_changes_or_all_docs(api: Api) -> None:
    await api.call("PUT", "/health/_local/x", "alice", {"n": 1})
    for user in ("alice", "admin"):
        changes = (await api.call("GET", "/health/_changes", user))[1]
        assert changes["results"] == []
        assert (await api.call("GET", "/health/_all_docs", user))[1]["rows"] == []


async def test_a_local_doc_put_with_deleted_deletes_it_and_keeps_no_revisions(api: Api) -> None:
    """PouchDB's own suite: ``_revisions`` is no part of a ``_local`` document, and a PUT
    with ``_deleted: true`` deletes it (CouchDB answers rev 0-0), as in ``_bulk_docs``."""
    path = "/health/_local/x"
    status, made = await api.call("PUT", path, "alice", {"n": 1, "_revisions": {"start": 0}})
    assert status == 201, made
    status, doc = await api.call("GET", path, "alice")
    assert doc == {"_id": "_local/x", "_rev": made["rev"], "n": 1}
    gone = {"_rev": made["rev"], "_deleted": True, "n": 1}
    status, answer = await api.call("PUT", path, "alice", gone)
    assert (status, answer) == (201, {"ok": True, "id": "_local/x", "rev": "0-0"})
    assert (await api.call("GET", path, "alice"))[0] == 404
    status, again = await api.call("PUT", path, "alice", {"n": 2})
    assert (status, again["rev"]) == (201, "0-1")


async def test_local_doc_delete(api: Api) -> None:
    await api.call("PUT", "/health/_local/x", "alice", {"n": 1})
    assert (await api.call("DELETE", "/health/_local/x", "alice", rev="0-2"))[0] == 409
    assert (await api.call("DELETE", "/health/_local/x", "alice", rev="0-1"))[0] == 200
    assert (await api.call("GET", "/health/_local/x", "alice"))[0] == 404


async def test_local_ids_in_bulk_docs_stay_local(api: Api) -> None:
    answer = await api.bulk([{"_id": "_local/x", "n": 1}, {"_id": "a", "place": A1}], "alice")
    assert answer[0] == {"ok": True, "id": "_local/x", "rev": "0-1"}
    assert (await api.call("GET", "/health/_local/x", "alice"))[1]["n"] == 1
    assert (await api.call("GET", "/health/_local/x", "bob"))[0] == 404
    for user in ("alice", "admin"):
        assert [
            r["id"] for r in (await api.call("GET", "/health/_changes", user))[1]["results"]
        ] == ["a"]
        assert [r["id"] for r in (await api.call("GET", "/health/_all_docs", user))[1]["rows"]] == [
            "a"
        ]


async def test_local_id_posted_to_the_database_stays_local(api: Api) -> None:
    status, body = await api.call("POST", "/health", "alice", {"_id": "_local/y", "n": 1})
    assert status == 201 and body["rev"] == "0-1"
    assert (await api.call("GET", "/health/_changes", "admin"))[1]["results"] == []
    [deleted] = await api.bulk([{"_id": "_local/y", "_rev": "0-1", "_deleted": True}], "alice")
    assert deleted["ok"] and (await api.call("GET", "/health/_local/y", "alice"))[0] == 404


@pytest.mark.parametrize(("path", "status"), [("/health/_local", 404), ("/health/_local/x/a", 400)])
async def test_local_paths_without_a_document(api: Api, path: str, status: int) -> None:
    assert (await api.call("GET", path, "alice"))[0] == status


@pytest.mark.parametrize("new_edits", [True, False])
async def test_a_bare_tombstone_of_an_unknown_document_is_accepted(
    api: Api, new_edits: bool
) -> None:
    """PouchDB's remove() keeps no fields: a doc made and removed offline arrives as {_deleted}."""
    doc: dict[str, Any] = {"_id": "gone", "_deleted": True}
    if not new_edits:
        doc.update(_rev="2-b", _revisions={"start": 2, "ids": ["b", "a"]})
    answer = await api.bulk([doc], "alice", new_edits=new_edits)
    assert all("error" not in r for r in answer)
    [row] = (await api.call("GET", "/health/_changes", "alice"))[1]["results"]
    assert row["id"] == "gone" and row["deleted"] is True
    assert (await api.call("GET", "/health/_changes", "bob"))[1]["results"] == []


async def test_all_docs_single_key(api: Api) -> None:
    await seed_all_docs(api)
    assert ids((await api.call("GET", "/health/_all_docs", key='"d"'))[1]) == ["d"]
    assert ids((await api.call("GET", "/health/_all_docs", key='"zz"'))[1]) == []


async def test_stub_length_comes_from_the_stored_attachment(api: Api) -> None:
    att = {"content_type": "text/plain", "data": b64(b"12345")}
    await api.bulk([replicated("a", "a1", _attachments={"f": att})], new_edits=False)
    stub = {**(await get(api, "a"))["_attachments"]["f"], "length": 999}
    await api.bulk([replicated("a", "a2", "a1", _attachments={"f": stub})], new_edits=False)
    assert (await get(api, "a"))["_attachments"]["f"]["length"] == 5
