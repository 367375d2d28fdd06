"""Bad requests get a specific CouchDB-shaped error and change nothing (issue 2, point 6).

https://docs.couchdb.org/en/stable/api/basics.html#http-status-codes
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from sync_fixtures import Api, Client, as_user

from sync.app import create_app
from sync.config import Config

A1 = "area-a1"
LIMIT = 2 * 1024 * 1024  # the fixture's max_request_bytes


async def update_seq(api: Api) -> int:
    return int((await api.call("GET", "/health/"))[1]["update_seq"])


async def raw(client: Client, method: str, path: str, data: bytes) -> tuple[int, Any]:
    headers = {**as_user("admin"), "Content-Type": "application/json"}
    response = await client.request(method, path, data=io.BytesIO(data), headers=headers)
    return response.status, await response.json()


@pytest.fixture
async def existing(api: Api) -> str:
    """A document ``p1`` in area-a1; its rev."""
    [result] = await api.bulk([{"_id": "p1", "place": A1, "v": 1}])
    return str(result["rev"])


# -- request bodies -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/health/_bulk_docs"),
        ("PUT", "/health/p2"),
        ("POST", "/health"),
        ("POST", "/health/_bulk_get"),
        ("POST", "/health/_revs_diff"),
        ("POST", "/health/_all_docs"),
        ("PUT", "/health/_local/c"),
        ("POST", "/_session"),
    ],
)
@pytest.mark.parametrize("data", [b"{not json", b"", b"\xff\xfe", b'{"docs": [}'])
async def test_malformed_json_is_400(
    api: Api, client: Client, existing: str, method: str, path: str, data: bytes
) -> None:
    before = await update_seq(api)
    status, body = await raw(client, method, path, data)
    assert status == 400 and body["error"] == "bad_request" and body["reason"]
    assert await update_seq(api) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/health/_bulk_docs"), ("PUT", "/health/p2"), ("POST", "/health/_revs_diff")],
)
@pytest.mark.parametrize("data", [b"[]", b'"doc"', b"42", b"null"])
async def test_body_must_be_an_object(
    api: Api, client: Client, method: str, path: str, data: bytes
) -> None:
    status, body = await raw(client, method, path, data)
    assert status == 400 and body["error"] == "bad_request"
    assert await update_seq(api) == 0


@pytest.mark.parametrize(
    "body",
    [{"docs": {"a": 1}}, {"docs": [{"_id": "a"}], "new_edits": "no"}, {}],
)
async def test_bulk_docs_shape_errors(api: Api, body: dict[str, Any]) -> None:
    status, answer = await api.call("POST", "/health/_bulk_docs", body=body)
    assert status == 400 and answer["error"] == "bad_request"
    assert await update_seq(api) == 0


async def test_a_non_object_document_fails_the_request(api: Api) -> None:
    """CouchDB parses every document before writing any (test_http_couch_compat)."""
    status, answer = await api.call(
        "POST", "/health/_bulk_docs", body={"docs": [{"_id": "ok", "place": A1}, "nope"]}
    )
    assert status == 400
    assert answer == {"error": "bad_request", "reason": "Document must be a JSON object"}
    assert await update_seq(api) == 0


# -- oversized bodies ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/health/_bulk_docs"), ("PUT", "/health/big"), ("PUT", "/health/p1/big.bin")],
)
async def test_oversized_body_is_413(
    api: Api, client: Client, existing: str, method: str, path: str
) -> None:
    before = await update_seq(api)
    padding = "x" * (LIMIT + 1024)
    data = f'{{"docs": [{{"_id": "big", "place": "{A1}", "pad": "{padding}"}}]}}'.encode()
    status, body = await raw(client, method, f"{path}?rev={existing}", data)
    assert status == 413
    assert body["error"] == "too_large" and str(LIMIT) in body["reason"]
    assert await update_seq(api) == before
    assert (await api.call("GET", "/health/big"))[0] == 404


async def test_oversized_document_in_a_batch_is_a_per_doc_error(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> None:
    small = Api(await aiohttp_client(create_app(replace(config, max_document_bytes=1024))))
    docs = [{"_id": "big", "place": A1, "pad": "x" * 2048}, {"_id": "small", "place": A1}]
    big, ok = await small.bulk(docs)
    assert big["id"] == "big" and big["error"] == "too_large" and ok["ok"] is True
    status, body = await small.call("PUT", "/health/big", body=docs[0])
    assert status == 413 and body["error"] == "too_large"


async def test_body_just_under_the_limit_is_accepted(client: Client) -> None:
    data = f'{{"place": "{A1}", "pad": "{"x" * (LIMIT - 1024)}"}}'.encode()
    status, _ = await raw(client, "PUT", "/health/big", data)
    assert status == 201


# -- revisions --------------------------------------------------------------------
@pytest.mark.parametrize("rev", ["abc", "1-", "-abc", "0-abc", "x-abc", "1-ab\tcd", "1-a\nb"])
async def test_bad_rev_on_put_is_400(api: Api, existing: str, rev: str) -> None:
    status, body = await api.call("PUT", "/health/p1", body={"_rev": rev, "place": A1})
    assert status == 400 and body == {"error": "bad_request", "reason": "Invalid rev format"}
    assert (await api.call("GET", "/health/p1"))[1]["_rev"] == existing


@pytest.mark.parametrize("rev", ["abc", "1-", "0-abc"])
async def test_bad_rev_in_the_query_is_400(api: Api, existing: str, rev: str) -> None:
    before = await update_seq(api)
    for method, params in [("PUT", {"rev": rev}), ("DELETE", {"rev": rev}), ("GET", {"rev": rev})]:
        status, body = await api.call(method, "/health/p1", body={"place": A1}, **params)
        assert (status, body["error"]) == (400, "bad_request"), (method, body)
    assert await update_seq(api) == before


@pytest.mark.parametrize("rev", ["abc", 12, "1-x\ty"])
async def test_bad_rev_in_bulk_docs_is_a_per_doc_error(api: Api, rev: Any) -> None:
    answer = await api.bulk([{"_id": "a", "_rev": rev, "place": A1}, {"_id": "b", "place": A1}])
    assert answer[0] == {"id": "a", "error": "bad_request", "reason": "Invalid rev format"}
    assert answer[1]["ok"] is True
    assert (await api.call("GET", "/health/a"))[0] == 404


@pytest.mark.parametrize(
    "revisions",
    [
        {"start": 1, "ids": ["b", "a"]},  # start smaller than the history
        {"start": 2, "ids": ["b", ""]},  # an empty revision id
    ],
)
async def test_inconsistent_revisions_are_rejected(api: Api, revisions: dict[str, Any]) -> None:
    doc = {"_id": "a", "_rev": "1-b", "_revisions": revisions, "place": A1}
    [result] = await api.bulk([doc], new_edits=False)
    assert result["error"] == "bad_request"
    assert await update_seq(api) == 0


@pytest.mark.parametrize(
    ("revisions", "reason"),
    [
        ({"start": 2, "ids": "ab"}, "_revisions.ids isn't a array."),
        ({"start": True, "ids": ["b"]}, "_revisions.start isn't an integer."),
        ({"start": 1, "ids": [5]}, "RevId isn't a string"),
        ("1-b", "Bad special document member: _revisions"),
    ],
)
async def test_malformed_revisions_fail_the_request(api: Api, revisions: Any, reason: str) -> None:
    doc = {"_id": "a", "_rev": "1-b", "_revisions": revisions, "place": A1}
    status, body = await api.call("POST", "/health/_bulk_docs", body={"docs": [doc]})
    assert (status, body) == (400, {"error": "doc_validation", "reason": reason})
    assert await update_seq(api) == 0


# -- document members and ids ----------------------------------------------------------
@pytest.mark.parametrize("member", ["_foo", "_access", "_id_"])
async def test_unknown_special_member_is_doc_validation(api: Api, member: str) -> None:
    status, body = await api.call("PUT", "/health/p2", body={"place": A1, member: 1})
    assert status == 400 and body["error"] == "doc_validation"
    docs = [{"_id": "p4", "place": A1}, {"_id": "p3", "place": A1, member: 1}]
    status, body = await api.call("POST", "/health/_bulk_docs", body={"docs": docs})
    assert status == 400
    assert body == {"error": "doc_validation", "reason": f"Bad special document member: {member}"}
    assert await update_seq(api) == 0


@pytest.mark.parametrize("doc_id", ["_foo", "_users", "_bar/baz"])
async def test_ids_starting_with_underscore_are_illegal(api: Api, doc_id: str) -> None:
    docs = [{"_id": "fine", "place": A1}, {"_id": doc_id, "place": A1}]
    status, body = await api.call("POST", "/health/_bulk_docs", body={"docs": docs})
    assert status == 400 and body["error"] == "illegal_docid"
    assert await update_seq(api) == 0


@pytest.mark.parametrize(
    ("doc_id", "reason"),
    [
        ("", "Document id must not be empty"),
        (42, "Document id must be a string"),
        (["a"], "Document id must be a string"),
        ("_design/", "Illegal document id `_design/`"),
    ],
)
async def test_non_string_ids_are_illegal(api: Api, doc_id: Any, reason: str) -> None:
    status, body = await api.call(
        "POST", "/health/_bulk_docs", body={"docs": [{"_id": doc_id, "place": A1}]}
    )
    assert (status, body) == (400, {"error": "illegal_docid", "reason": reason})
    assert await update_seq(api) == 0


async def test_put_to_a_reserved_id_is_rejected(api: Api) -> None:
    status, body = await api.call("PUT", "/health/_foo", body={"place": A1})
    assert status in (400, 404) and body["error"] in ("illegal_docid", "not_found")
    assert await update_seq(api) == 0


@pytest.mark.parametrize("place", [12, ["area-a1"], {"id": "area-a1"}])
async def test_place_must_be_a_string(api: Api, place: Any) -> None:
    [result] = await api.bulk([{"_id": "a", "place": place}])
    assert result["error"] == "bad_request"


# -- routing -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/nodb/", 404, "not_found"),
        ("GET", "/nodb/doc", 404, "not_found"),
        ("POST", "/nodb/_bulk_docs", 404, "not_found"),
        ("GET", "/health/_bulk_docs", 405, "method_not_allowed"),
        ("GET", "/health/_nonsense", 404, "not_found"),
        ("PATCH", "/health/p1", 405, "method_not_allowed"),
    ],
)
async def test_routing_errors(api: Api, method: str, path: str, status: int, error: str) -> None:
    body: dict[str, Any] | None = {"docs": []} if method == "POST" else None
    got_status, got = await api.call(method, path, body=body)
    assert (got_status, got["error"]) == (status, error)


@pytest.mark.parametrize(
    ("params", "name"),
    [({"revs": "maybe"}, "revs"), ({"limit": "ten"}, "limit"), ({"startkey": "a"}, "startkey")],
)
async def test_bad_query_parameters_are_400(api: Api, params: dict[str, str], name: str) -> None:
    path = "/health/_all_docs" if name != "revs" else "/health/p1"
    status, body = await api.call("GET", path, **params)
    assert status == 400 and name in body["reason"]


# -- a bug -------------------------------------------------------------------------------
async def test_a_failure_nobody_foresaw_answers_json_naming_the_request_not_the_error(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception no handler turns into an error of ours (a bug) answers a JSON 500, as
    CouchDB does, which PouchDB can show (aiohttp's own page is text: "invalid json"),
    naming the request id the server's log has it under, never the exception's text."""

    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("patient Jane Wanjiru, 12 Mango Street")

    monkeypatch.setattr("sync.replication.reads.Reader.bulk_get", broken)
    headers = {**as_user("admin"), "X-Request-Id": "trace-42"}
    body = {"docs": [{"id": "p1"}]}
    response = await client.request("POST", "/health/_bulk_get", json=body, headers=headers)
    answer = await response.json()
    assert response.status == 500 and response.content_type == "application/json"
    assert answer["error"] == "unknown_error" and "trace-42" in answer["reason"]
    assert "Jane" not in await response.text()
    assert response.headers["X-Request-Id"] == "trace-42"
    status, _ = await Api(client).call("GET", "/health/")  # the server goes on
    assert status == 200


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/health/_all_docs", "limit"),
        ("/health/_all_docs", "skip"),
        ("/health/_changes", "limit"),
    ],
)
async def test_a_number_past_any_count_is_refused_by_name_and_the_largest_taken(
    api: Api, path: str, name: str
) -> None:
    """Found by the read fuzz: ``limit=10^23`` reached SQLite, which cannot hold it (500)."""
    status, body = await api.call("GET", path, **{name: str(10**23)})
    assert (
        status == 400 and body["reason"] == f"Query parameter {name} must be at most {2**53 - 1}."
    )
    status, _ = await api.call("GET", path, **{name: str(2**53 - 1)})
    assert status == 200
