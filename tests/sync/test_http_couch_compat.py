"""Answers PouchDB 9's integration suite expects, as CouchDB gives them.

Each case pins down a difference the suite found between fieldsync and CouchDB
(chttpd_db, couch_doc, couch_att, couch_changes); the suite itself runs
against a real server (see tests/clients), these run in-process.
https://docs.couchdb.org/en/stable/api/database/bulk-api.html
https://docs.couchdb.org/en/stable/api/document/common.html
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from typing import Any

import pytest
from aiohttp import web
from sync_fixtures import Api, Client, as_user

from sync.app import create_app
from sync.config import Config
from sync.replication.routes import REPLICATION

A1 = "area-a1"
DATA = b"hello world"
DIGEST = "md5-" + base64.b64encode(hashlib.md5(DATA).digest()).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def inline(data: bytes = DATA, **extra: Any) -> dict[str, Any]:
    return {"content_type": "text/plain", "data": b64(data), **extra}


def replicated(doc_id: str, *hashes: str, **fields: Any) -> dict[str, Any]:
    """A revision as a replicator sends it, newest hash first."""
    start = len(hashes)
    return {
        "_id": doc_id,
        "_rev": f"{start}-{hashes[0]}",
        "_revisions": {"start": start, "ids": list(hashes)},
        "place": A1,
        **fields,
    }


async def update_seq(api: Api) -> int:
    return int((await api.call("GET", "/health/"))[1]["update_seq"])


async def put(api: Api, doc_id: str, **fields: Any) -> str:
    status, body = await api.call("PUT", f"/health/{doc_id}", body={"place": A1, **fields})
    assert status == 201, body
    return str(body["rev"])


async def bulk_status(api: Api, docs: list[Any], **extra: Any) -> tuple[int, Any]:
    return await api.call("POST", "/health/_bulk_docs", body={"docs": docs, **extra})


# -- 1. inline attachments carry no length --------------------------------------------------------
async def _get(api: Api) -> dict[str, Any]:
    return dict((await api.call("GET", "/health/a", attachments="true"))[1])


async def _open_revs(api: Api) -> dict[str, Any]:
    found = (await api.call("GET", "/health/a", open_revs="all", attachments="true"))[1]
    return dict(found[0]["ok"])


async def _bulk_get(api: Api) -> dict[str, Any]:
    body = {"docs": [{"id": "a"}]}
    found = (await api.call("POST", "/health/_bulk_get", body=body, attachments="true"))[1]
    return dict(found["results"][0]["docs"][0]["ok"])


async def _all_docs(api: Api) -> dict[str, Any]:
    params = {"include_docs": "true", "attachments": "true"}
    return dict((await api.call("GET", "/health/_all_docs", **params))[1]["rows"][0]["doc"])


async def _changes(api: Api) -> dict[str, Any]:
    params = {"include_docs": "true", "attachments": "true"}
    return dict((await api.call("GET", "/health/_changes", **params))[1]["results"][0]["doc"])


@pytest.mark.parametrize("read", [_get, _open_revs, _bulk_get, _all_docs, _changes])
async def test_inline_attachments_have_no_length(api: Api, read: Any) -> None:
    await put(api, "a", _attachments={"f.txt": inline()})
    att = (await read(api))["_attachments"]["f.txt"]
    assert list(att) == ["content_type", "revpos", "digest", "data"]  # couch_att:to_json
    assert att == {"content_type": "text/plain", "revpos": 1, "digest": DIGEST, "data": b64(DATA)}


async def test_stubs_keep_length(api: Api) -> None:
    await put(api, "a", _attachments={"f.txt": inline()})
    stub = (await api.call("GET", "/health/a"))[1]["_attachments"]["f.txt"]
    assert stub == {
        "content_type": "text/plain", "revpos": 1, "digest": DIGEST, "length": 11, "stub": True,
    }  # fmt: skip


# -- 2. what CouchDB refuses for the whole _bulk_docs request -------------------------------------
@pytest.mark.parametrize(
    ("bad", "new_edits", "error", "reason"),
    [
        ({"_id": "_invalid"}, True, "illegal_docid",
         "Only reserved document ids may start with underscore."),
        ({"_id": 123}, True, "illegal_docid", "Document id must be a string"),
        ({"_zing": 4}, True, "doc_validation", "Bad special document member: _zing"),
        ({"_id": "z", "_deleted": "yes"}, True, "doc_validation",
         "Bad special document member: _deleted"),
        ({"_id": "foo", "integer": 1}, False, "bad_request",
         "When `new_edits: false`, the document needs `_rev` or `_revisions` specified"),
        ({"_id": "z", "_attachments": {"_x": inline()}}, True, "bad_request",
         "Attachment name '_x' starts with prohibited character '_'"),
        ("not a document", True, "bad_request", "Document must be a JSON object"),
    ],
)  # fmt: skip
async def test_request_level_errors_write_nothing(
    api: Api, bad: Any, new_edits: bool, error: str, reason: str
) -> None:
    good = replicated("good", "g1") if not new_edits else {"_id": "good", "place": A1}
    local = {"_id": "_local/ckpt", "_rev": "0-1" if not new_edits else None, "x": 1}
    status, body = await bulk_status(api, [good, local, bad], new_edits=new_edits)
    assert (status, body) == (400, {"error": error, "reason": reason})
    assert await update_seq(api) == 0
    assert (await api.call("GET", "/health/_local/ckpt"))[0] == 404


async def test_per_document_errors_stay_per_document(api: Api) -> None:
    rev = await put(api, "a")
    stub = {"stub": True, "digest": DIGEST, "content_type": "text/plain"}
    docs = [
        {"_id": "a", "place": A1},  # no rev: conflict
        {"_id": "b", "place": "area-b1"},  # outside alice's capture scope
        {"_id": "a", "_rev": rev, "place": A1, "_attachments": {"f": stub}},  # parent lacks it
        {"_id": "c", "place": A1},
    ]
    status, body = await api.call("POST", "/health/_bulk_docs", "alice", {"docs": docs})
    assert status == 201
    assert [r.get("error") for r in body] == ["conflict", "forbidden", "missing_stub", None]


# -- 3. _local documents take no attachments ------------------------------------------------------
async def test_local_documents_drop_attachments(api: Api) -> None:
    status, _ = await api.call(
        "PUT", "/health/_local/bin", body={"x": 1, "_attachments": {"f.txt": inline()}}
    )
    assert status == 201
    await api.bulk([{"_id": "_local/other", "_attachments": {"f.txt": inline()}}])
    for doc_id in ("bin", "other"):
        doc = (await api.call("GET", f"/health/_local/{doc_id}", attachments="true"))[1]
        assert "_attachments" not in doc


@pytest.mark.parametrize("path", ["_local/bin/f.txt", "_local/bin/nope.txt", "_local/none/f.txt"])
async def test_local_attachment_paths_are_400(api: Api, path: str) -> None:
    await api.call("PUT", "/health/_local/bin", body={"x": 1})
    status, body = await api.call("GET", f"/health/{path}")
    reason = "_local documents do not accept attachments."
    assert (status, body) == (400, {"error": "bad_request", "reason": reason})


# -- 4. ?rev=X&latest=true ------------------------------------------------------------------------
async def _tree(api: Api) -> None:
    """1-a ─ 2-b1 ─ 3-c1 ─ 4-d1 (winner)  and  1-a ─ 2-b2 ─ 3-c2 (losing)."""
    docs = [
        replicated("t", "d1", "c1", "b1", "a", v="d1"),
        replicated("t", "c2", "b2", "a", v="c2"),
    ]
    assert await api.bulk(docs, new_edits=False) == []


@pytest.mark.parametrize(
    ("rev", "latest"),
    [("2-b2", "3-c2"), ("3-c2", "3-c2"), ("2-b1", "4-d1"), ("1-a", "4-d1")],
)
async def test_latest_is_the_leaf_descending_from_rev(api: Api, rev: str, latest: str) -> None:
    await _tree(api)
    doc = (await api.call("GET", "/health/t", rev=rev, latest="true"))[1]
    assert doc["_rev"] == latest and doc["v"] == latest.split("-")[1]


async def test_latest_reaches_a_deleted_leaf(api: Api) -> None:
    first = await put(api, "d", version="first")
    status, body = await api.call(
        "PUT", "/health/d", body={"_rev": first, "_deleted": True, "version": "second"}
    )
    assert status == 201
    doc = (await api.call("GET", "/health/d", rev=first, latest="true"))[1]
    assert doc["_rev"] == body["rev"] and doc["_deleted"] is True and doc["version"] == "second"


# -- 5. with new_edits=false, _revisions beats _rev -----------------------------------------------
@pytest.mark.parametrize("revisions_first", [False, True])
async def test_revisions_win_over_rev(api: Api, revisions_first: bool) -> None:
    members = [("_rev", "1-x"), ("_revisions", {"start": 2, "ids": ["b", "a"]})]
    doc = dict([("_id", "r"), *(reversed(members) if revisions_first else members)])
    assert await api.bulk([{**doc, "place": A1}], new_edits=False) == []
    found = (await api.call("GET", "/health/r", revs="true"))[1]
    assert found["_rev"] == "2-b" and found["_revisions"] == {"start": 2, "ids": ["b", "a"]}
    assert (await api.call("GET", "/health/r", rev="1-x"))[0] == 404


# -- 6. an edit's stubs must be attachments of the revision it edits ------------------------------
async def _branches(api: Api) -> tuple[str, str]:
    """Doc ``s``: 1-a ─ 2-att (with f.txt) and 1-a ─ 2-bare; returns the two leaves."""
    docs = [
        replicated("s", "att", "a", _attachments={"f.txt": inline(revpos=2)}),
        replicated("s", "bare", "a"),
    ]
    assert await api.bulk(docs, new_edits=False) == []
    return "2-att", "2-bare"


@pytest.mark.parametrize(
    ("parent", "name", "stub", "outcome"),
    [
        ("2-att", "f.txt", {"digest": DIGEST}, None),  # same name, same digest
        ("2-att", "f.txt", {}, None),  # same name, no digest given
        ("2-att", "renamed.txt", {"digest": DIGEST}, None),  # the digest is the parent's
        ("2-bare", "f.txt", {"digest": DIGEST}, "missing_stub"),  # only another branch has it
        ("2-att", "f.txt", {"digest": "md5-AAAAAAAAAAAAAAAAAAAAAA=="}, "missing_stub"),
        ("1-a", "f.txt", {"digest": DIGEST}, "conflict"),  # not a leaf: conflict comes first
        ("3-nope", "f.txt", {"digest": DIGEST}, "conflict"),
    ],
)
async def test_stubs_must_exist_in_the_parent(
    api: Api, parent: str, name: str, stub: dict[str, Any], outcome: str | None
) -> None:
    await _branches(api)
    att = {"stub": True, "content_type": "text/plain", **stub}
    doc = {"_id": "s", "_rev": parent, "place": A1, "_attachments": {name: att}}
    [result] = await api.bulk([doc])
    assert result.get("error") == outcome, result
    if outcome is None:
        found = (await api.call("GET", "/health/s", rev=result["rev"]))[1]["_attachments"][name]
        assert (found["digest"], found["length"], found["revpos"]) == (DIGEST, 11, 2)


async def test_a_new_document_has_no_stubs(api: Api) -> None:
    await put(api, "other", _attachments={"f.txt": inline()})
    stub = {"stub": True, "digest": DIGEST, "content_type": "text/plain"}
    status, body = await api.call(
        "PUT", "/health/new", body={"place": A1, "_attachments": {"f": stub}}
    )
    assert status == 412 and body["error"] == "missing_stub"


# -- 7. any revision id after "N-" ----------------------------------------------------------------
async def test_a_fake_but_well_formed_rev_is_a_conflict(api: Api) -> None:
    revs = [r["rev"] for r in await api.bulk([{"_id": str(i), "place": A1} for i in range(3)])]
    docs = [
        {"_id": "0", "_rev": revs[0], "place": A1},
        {"_id": "1", "_rev": "3-totally_fake_rev", "place": A1},
        {"_id": "2", "place": A1},
    ]
    answer = await api.bulk(docs)
    assert [r.get("error") for r in answer] == [None, "conflict", "conflict"]
    assert answer[1] == {"id": "1", "error": "conflict", "reason": "Document update conflict."}


@pytest.mark.parametrize("rev_id", ["totally_fake_rev", "with-dash", "späce ok"])
async def test_replicated_revs_may_use_any_id(api: Api, rev_id: str) -> None:
    assert await api.bulk([replicated("f", rev_id, "root")], new_edits=False) == []
    assert (await api.call("GET", "/health/f", rev=f"2-{rev_id}"))[1]["_rev"] == f"2-{rev_id}"


# -- 8. the replicator's own special members ------------------------------------------------------
async def test_replication_fields_are_kept(api: Api) -> None:
    fields = {
        "_replication_id": "test",
        "_replication_state": "triggered",
        "_replication_state_time": 1,
        "_replication_state_reason": "none",
        "_replication_stats": {},
    }
    status, body = await api.call("POST", "/health", body={"place": A1, **fields})
    assert status == 201
    doc = (await api.call("GET", f"/health/{body['id']}"))[1]
    assert {k: doc[k] for k in fields} == fields


# -- 9. attachment names --------------------------------------------------------------------------
async def test_attachment_names_cannot_start_with_underscore(api: Api) -> None:
    reason = "Attachment name '_text1.txt' starts with prohibited character '_'"
    status, body = await api.call(
        "PUT", "/health/baz", body={"place": A1, "_attachments": {"_text1.txt": inline()}}
    )
    assert (status, body) == (400, {"error": "bad_request", "reason": reason})
    assert (await api.call("GET", "/health/baz"))[0] == 404


# -- 10. revpos of inline data --------------------------------------------------------------------
async def test_edited_inline_data_gets_the_new_revpos(api: Api) -> None:
    rev = await put(api, "a", _attachments={"one": inline(b"one")})
    doc = (await api.call("GET", "/health/a"))[1]
    doc["_attachments"]["two"] = inline(b"two")
    rev = await put(api, "a", **{k: v for k, v in doc.items() if k != "_id"})
    doc = (await api.call("GET", "/health/a"))[1]
    assert [doc["_attachments"][n]["revpos"] for n in ("one", "two")] == [1, 2]
    doc["_attachments"]["one"] = inline(b"one-changed", revpos=1)  # stale revpos sent along
    await put(api, "a", **{k: v for k, v in doc.items() if k != "_id"})
    atts = (await api.call("GET", "/health/a"))[1]["_attachments"]
    assert (atts["one"]["revpos"], atts["two"]["revpos"]) == (3, 2)
    assert rev.startswith("2-")


async def test_replicated_inline_data_keeps_its_revpos(api: Api) -> None:
    doc = replicated("a", "c", "b", "a", _attachments={"f": inline(revpos=2)})
    assert await api.bulk([doc], new_edits=False) == []
    assert (await api.call("GET", "/health/a"))[1]["_attachments"]["f"]["revpos"] == 2


# -- 11. open_revs with a malformed rev -----------------------------------------------------------
async def test_open_revs_with_a_malformed_rev_is_400(api: Api) -> None:
    await put(api, "foo")
    status, body = await api.call(
        "GET", "/health/foo", open_revs='["1-almost", "2-correct", "keys"]'
    )
    assert (status, body) == (400, {"error": "bad_request", "reason": "Invalid rev format"})


# -- 12. _all_docs: keys with key, startkey or endkey ---------------------------------------------
@pytest.mark.parametrize(
    ("params", "body", "status"),
    [
        ({"key": '"1"'}, {"keys": ["1", "2"]}, 400),
        ({"startkey": '"1"'}, {"keys": ["1"]}, 400),
        ({}, {"keys": ["1"], "end_key": "2"}, 400),
        ({"key": '"1"'}, {"keys": []}, 200),  # no keys: CouchDB lets it pass
        ({}, {"keys": ["1", "2"]}, 200),
    ],
)
async def test_keys_is_incompatible_with_key_ranges(
    api: Api, params: dict[str, str], body: dict[str, Any], status: int
) -> None:
    await api.bulk([{"_id": i, "place": A1} for i in ("0", "1", "2")])
    got, answer = await api.call("POST", "/health/_all_docs", body=body, **params)
    assert got == status, answer
    if status == 400:
        reason = "`keys` is incompatible with `key`, `start_key` and `end_key`"
        assert answer == {"error": "query_parse_error", "reason": reason}


# -- 13. long-polls: shutdown and clients that went away ------------------------------------------
async def test_shutdown_answers_open_longpolls_at_once(api: Api, client: Client) -> None:
    since = (await api.call("GET", "/health/_changes"))[1]["last_seq"]
    params = {"feed": "longpoll", "since": str(since), "timeout": "30000", "heartbeat": "10000"}
    poll = asyncio.create_task(api.call("GET", "/health/_changes", "alice", **params))
    await asyncio.sleep(0.2)
    assert not poll.done()
    await client.app.shutdown()  # runs the on_shutdown hooks, as web.run_app does
    status, body = await asyncio.wait_for(poll, 2)
    assert status == 200 and body["results"] == []
    assert client.app[REPLICATION].parts.notifier.closed
    # a long-poll arriving after shutdown began does not wait either
    later = await asyncio.wait_for(api.call("GET", "/health/_changes", **params), 2)
    assert later[0] == 200


async def test_a_client_gone_during_a_longpoll_logs_no_error(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    # web.run_app keeps handlers running when their client goes (aiohttp's test server
    # cancels them instead), so the next heartbeat is what finds the connection closed.
    runner = web.AppRunner(create_app(config), handler_cancellation=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        reader, writer = await asyncio.open_connection(host, port)
        request = "GET /health/_changes?feed=longpoll&since=now&timeout=5000&heartbeat=50"
        auth = as_user("alice")["Authorization"]
        writer.write(
            f"{request} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n\r\n".encode()
        )
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        writer.close()
        await writer.wait_closed()
        with caplog.at_level(logging.DEBUG):
            await asyncio.sleep(0.5)  # heartbeats find the connection closed
    finally:
        await runner.cleanup()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


# -- 14. design documents: kept, never run --------------------------------------------------------
FILTERS = {"even": "function (doc) { return doc.integer % 2 === 0; }"}
VIEWS = {"odd": {"map": "function (doc) { emit(doc._id, null); }"}}


@pytest.mark.parametrize(
    ("params", "status", "reason"),
    [
        ({"filter": "nope/even"}, 404, "missing"),
        ({"filter": "foo/odd"}, 404, "missing json key: odd"),
        ({"filter": "bar/even"}, 404, "missing json key: filters"),
        ({"filter": "foo/even"}, 400, "filter 'foo/even' is not supported"),
        ({"filter": "a/b/c"}, 400, "`filter` must be of the form `designname/filtername`"),
        ({"filter": "_view", "view": "foo/odd"}, 404, "missing json key: views"),
        ({"filter": "_view", "view": "bar/even"}, 404, "missing json key: even"),
        ({"filter": "_view", "view": "bar/odd"}, 400, "filter=_view (view 'bar/odd') is not"),
        ({"filter": "_view"}, 400, "`view` filter parameter is not provided."),
    ],
)
async def test_changes_filters_naming_design_functions(
    api: Api, params: dict[str, str], status: int, reason: str
) -> None:
    await api.bulk(
        [{"_id": "_design/foo", "filters": FILTERS}, {"_id": "_design/bar", "views": VIEWS}]
    )
    got, body = await api.call("GET", "/health/_changes", "alice", **params)
    assert got == status and body["reason"].startswith(reason), body
    assert body["error"] == ("not_found" if status == 404 else "bad_request")


@pytest.mark.parametrize(
    ("path", "status"),
    [("_design/bar/_view/odd", 400), ("_design/nope/_view/odd", 404), ("_design/bar/_show/x", 400)],
)
async def test_design_functions_are_not_run(api: Api, path: str, status: int) -> None:
    await api.bulk([{"_id": "_design/bar", "views": VIEWS}])
    got, body = await api.call("GET", f"/health/{path}", reduce="false")
    assert got == status, body
    if status == 400:
        assert "not supported" in body["reason"] and "missing attachment" not in body["reason"]


async def test_validate_doc_update_is_refused(api: Api) -> None:
    ddoc = {"_id": "_design/validate", "validate_doc_update": "function (newDoc) {}"}
    status, body = await api.call("PUT", "/health/_design/validate", body=ddoc)
    assert status == 400 and "validate_doc_update" in body["reason"]
    [entry, ok] = await api.bulk([ddoc, {"_id": "_design/plain", "views": VIEWS}])
    assert entry["error"] == "bad_request" and ok["ok"] is True
    assert (await api.call("GET", "/health/_design/validate"))[0] == 404
