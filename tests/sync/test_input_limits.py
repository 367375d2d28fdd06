"""Input limits on the write routes: nesting depth, ids with control characters, batch sizes.

A document that can be stored must be servable (issue 9, point 2); every bad
input is a 4xx (point 9); one request names a bounded number of documents
(point 10).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from sync_fixtures import Api, Client, as_user
from yarl import URL

from sync.app import create_app
from sync.config import Config, ConfigError, from_env
from sync.replication.documents import MAX_DOCUMENT_DEPTH

JSON = {"Content-Type": "application/json"}
TOO_DEEP = f"Document nesting depth exceeds the limit of {MAX_DOCUMENT_DEPTH} levels."


def nested(depth: int, **fields: Any) -> bytes:
    """A document ``depth`` levels deep (the document itself is level 1), as JSON.

    Built as text: orjson refuses to encode past 254 levels, the stdlib past ~1000.
    """
    opening = "".join('{"k":' if level % 2 else "[" for level in range(depth - 1))
    closing = "".join("}" if level % 2 else "]" for level in reversed(range(depth - 1)))
    head = orjson.dumps({"place": "area-a1", **fields})[:-1]
    return head + f',"deep":{opening}"leaf"{closing}}}'.encode()


async def send(client: Client, method: str, path: str, body: Any, user: str = "admin") -> Any:
    """``body`` encoded with orjson (the stdlib encoder recurses and stops near 1000 levels)."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    response = await client.request(method, path, data=data, headers={**as_user(user), **JSON})
    return response.status, await response.json()


async def reads(client: Client, doc_id: str) -> list[int]:
    """The status of every read route that includes ``doc_id``."""
    admin = as_user("admin")
    gets = [
        f"/health/{doc_id}",
        f"/health/{doc_id}?open_revs=all&revs=true",
        "/health/_changes?include_docs=true&style=all_docs",
        "/health/_all_docs?include_docs=true",
    ]
    statuses = [(await client.get(path, headers=admin)).status for path in gets]
    bulk_get = {"docs": [{"id": doc_id}]}
    statuses.append((await send(client, "POST", "/health/_bulk_get?revs=true", bulk_get))[0])
    return statuses


# -- nesting depth -------------------------------------------------------------------------
async def test_a_document_at_the_limit_is_stored_and_served(client: Client) -> None:
    doc = nested(MAX_DOCUMENT_DEPTH)
    status, body = await send(client, "PUT", "/health/deep", doc)
    assert status == 201, body
    assert await reads(client, "deep") == [200] * 5
    status, back = await send(client, "GET", "/health/deep", b"")
    assert back["deep"] == orjson.loads(doc)["deep"]


async def test_deeper_documents_are_refused_on_put_and_post(client: Client) -> None:
    for depth in [MAX_DOCUMENT_DEPTH + 1, 252, 253, 300, 1000]:
        await _refused(client, nested(depth), depth)


async def _refused(client: Client, doc: bytes, depth: int) -> None:
    assert await send(client, "PUT", "/health/deep", doc) == (
        400,
        {"error": "bad_request", "reason": TOO_DEEP},
    )
    assert (await send(client, "POST", "/health", doc))[0] == 400
    replicated = nested(depth, _rev="1-a")
    assert (await send(client, "PUT", "/health/deep?new_edits=false", replicated))[0] == 400
    assert (await client.get("/health/deep", headers=as_user("admin"))).status == 404


@pytest.mark.parametrize("new_edits", [True, False])
async def test_bulk_docs_refuses_the_whole_request(client: Client, new_edits: bool) -> None:
    fine = orjson.dumps({"_id": "fine", "_rev": "1-a", "place": "area-a1"})
    deep = nested(252, _id="deep", _rev="1-b")
    body = b'{"docs": [' + fine + b"," + deep + b'], "new_edits": ' + orjson.dumps(new_edits) + b"}"
    assert await send(client, "POST", "/health/_bulk_docs", body) == (
        400,
        {"error": "bad_request", "reason": TOO_DEEP},
    )
    assert (await client.get("/health/fine", headers=as_user("admin"))).status == 404


async def test_local_documents_have_the_same_limit(client: Client) -> None:
    deep = nested(300)
    status, body = await send(client, "PUT", "/health/_local/ckpt", deep)
    assert (status, body["reason"]) == (400, TOO_DEEP)
    in_batch = b'{"docs": [' + nested(MAX_DOCUMENT_DEPTH + 1, _id="_local/ckpt") + b"]}"
    assert (await send(client, "POST", "/health/_bulk_docs", in_batch))[0] == 400
    assert (await client.get("/health/_local/ckpt", headers=as_user("admin"))).status == 404
    fine = nested(MAX_DOCUMENT_DEPTH)
    assert (await send(client, "PUT", "/health/_local/ckpt", fine))[0] == 201
    assert (await client.get("/health/_local/ckpt", headers=as_user("admin"))).status == 200


async def test_attachment_metadata_counts_towards_the_depth(client: Client) -> None:
    stub: Any = {"content_type": "text/plain", "data": "aGk="}
    inner: Any = "x"
    for _ in range(MAX_DOCUMENT_DEPTH):
        inner = [inner]
    doc = {"place": "area-a1", "_attachments": {"a.txt": {**stub, "extra": inner}}}
    status, body = await send(client, "PUT", "/health/att", doc)
    assert (status, body["reason"]) == (400, TOO_DEEP)


async def test_attachments_that_could_not_be_downloaded_are_refused(api: Api) -> None:
    """An attachment's content type becomes a header when it is downloaded."""
    for content_type in ["text/plain\r\nSet-Cookie: a=b", "text/plain\x00", 5, ["a"], "a" * 256]:
        att = {"f": {"content_type": content_type, "data": "aGk="}}
        status, body = await api.call(
            "PUT", "/health/a", body={"place": "area-a1", "_attachments": att}
        )
        assert (status, body["error"]) == (400, "bad_request"), content_type
    for junk in ["aGk=", 5, None, ["x"]]:
        status, body = await api.call(
            "PUT", "/health/a", body={"place": "area-a1", "_attachments": {"f": junk}}
        )
        assert (status, body["error"]) == (400, "bad_request"), junk
    att = {"f": {"content_type": "text/plain; charset=utf-8", "data": "aGk="}}
    status, _ = await api.call("PUT", "/health/a", body={"place": "area-a1", "_attachments": att})
    assert status == 201
    response = await api.client.get("/health/a/f", headers=as_user("admin"))
    assert (response.status, await response.read()) == (200, b"hi")


async def test_a_body_deeper_than_the_json_parser_allows_is_400(client: Client) -> None:
    raw = b'{"place": "area-a1", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    for method, path in [("PUT", "/health/d"), ("POST", "/health/_bulk_docs")]:
        status, body = await send(client, method, path, raw)
        assert (status, body["error"]) == (400, "bad_request")


async def test_deeply_nested_keys_are_400(client: Client) -> None:
    """``_all_docs`` sends each key back in its row: a key too deep to write is refused."""
    deep = b'{"keys": ["p1", ' + b"[" * 300 + b"]" * 300 + b"]}"
    status, body = await send(client, "POST", "/health/_all_docs", deep)
    assert (status, body["reason"]) == (400, TOO_DEEP.replace("Document", "keys"))


async def test_a_deeply_nested_query_parameter_is_400(client: Client) -> None:
    deep = "[" * 1300 + "]" * 1300  # past Python's recursion limit, within aiohttp's URL limit
    for path in [f"/health/_all_docs?keys={deep}", f"/health/_changes?doc_ids={deep}"]:
        response = await client.get(path, headers=as_user("admin"))
        assert response.status == 400, path
        assert (await response.json())["error"] == "bad_request"
    status, body = await send(client, "POST", "/health/_changes", {"doc_ids": deep})
    assert (status, body["error"]) == (400, "bad_request")


# -- numbers -----------------------------------------------------------------------------
async def test_numbers_json_cannot_hold_are_refused(client: Client) -> None:
    for literal in [b"1e400", b"-1e400", b"NaN", b"Infinity"]:
        raw = b'{"place": "area-a1", "n": ' + literal + b"}"
        assert (await send(client, "PUT", "/health/n", raw))[0] == 400, literal


async def test_large_and_tiny_numbers_are_served(client: Client) -> None:
    raw = (
        b'{"place": "area-a1", "big": 18446744073709551615, "neg": -9223372036854775808,'
        b' "huge": 123456789012345678901234567890, "tiny": 1e-400, "max": 1.7976931348623157e308,'
        b' "sub": 5e-324}'
    )
    assert (await send(client, "PUT", "/health/n", raw))[0] == 201
    assert await reads(client, "n") == [200] * 5
    _, doc = await send(client, "GET", "/health/n", b"")
    assert (doc["big"], doc["neg"], doc["max"], doc["sub"]) == (
        2**64 - 1,
        -(2**63),
        1.7976931348623157e308,
        5e-324,
    )


# -- ids, attachment names, user names and place ids --------------------------------------
UNSAFE = ["\x00", "\x01", "\n", "\x1f", "\x7f", "\x85", "\x9f"] + [
    chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]
]


async def test_ids_with_control_characters_are_refused(api: Api) -> None:
    for char in UNSAFE:  # one app for all: starting one costs more than these requests
        await _refused_everywhere(api, char)
    status, body = await api.call("GET", "/health/_all_docs")
    assert (status, body["rows"]) == (200, [])


async def _refused_everywhere(api: Api, char: str) -> None:
    doc_id = f"patient{char}1"
    status, body = await api.call("POST", "/health", body={"_id": doc_id, "place": "area-a1"})
    assert (status, body["error"]) == (400, "illegal_docid"), char
    batch = {"docs": [{"_id": "ok", "place": "area-a1"}, {"_id": doc_id, "place": "area-a1"}]}
    status, body = await api.call("POST", "/health/_bulk_docs", body=batch)
    assert (status, body["error"]) == (400, "illegal_docid"), char
    local = URL(f"/health/_local/ck{quote(char)}pt", encoded=True)  # yarl drops a raw \n
    response = await api.client.put(local, json={"x": 1}, headers=as_user("admin"))
    # The router's {tail:.*} does not match a newline: that one is not found at all.
    expected = (404, "not_found") if char == "\n" else (400, "illegal_docid")
    assert (response.status, (await response.json())["error"]) == expected, char
    att = {f"photo{char}.jpg": {"content_type": "image/jpeg", "data": "aGk="}}
    status, body = await api.call(
        "PUT", "/health/p1", body={"place": "area-a1", "_attachments": att}
    )
    assert (status, body["error"]) == (400, "bad_request"), char


async def test_ids_with_other_unicode_are_fine(api: Api) -> None:
    for doc_id in ["nané-✓", "עברית", "a\u00a0b", "emoji-🙂"]:
        status, body = await api.call("PUT", f"/health/{doc_id}", body={"place": "area-a1"})
        assert status == 201, (doc_id, body)


async def test_user_names_and_place_ids_refuse_control_characters(api: Api) -> None:
    for char in UNSAFE:
        status, body = await api.call("POST", "/api/v1/places", body={"id": f"area9{char}"})
        assert (status, body["reason"][:16]) == (400, "invalid place id"), char
        status, body = await api.call("POST", "/api/v1/users", body=_user(f"eve{char}"))
        assert (status, body["reason"][:17]) == (400, "invalid user name"), char
    assert (await api.call("POST", "/api/v1/places", body={"id": "area9"}))[0] == 201
    assert (await api.call("POST", "/api/v1/users", body=_user("eve")))[0] == 201


def _user(name: str) -> dict[str, Any]:
    return {"name": name, "role": "chw", "password": "long enough pw", "places": ["area-a1"]}


# -- documents per request ----------------------------------------------------------------
@pytest.fixture
async def capped(aiohttp_client: Callable[..., Awaitable[Client]], config: Config) -> Client:
    return await aiohttp_client(create_app(replace(config, max_bulk_docs=3)))


def test_the_cap_is_a_setting() -> None:
    assert Config().max_bulk_docs == 10_000
    assert from_env(env={"FIELDSYNC_MAX_BULK_DOCS": "50"}).max_bulk_docs == 50
    for bad, why in [("0", "at least 1"), ("-5", "at least 1"), ("many", "whole number")]:
        with pytest.raises(ConfigError, match=f"FIELDSYNC_MAX_BULK_DOCS='{bad}': must be .*{why}"):
            from_env(env={"FIELDSYNC_MAX_BULK_DOCS": bad})


async def test_bulk_docs_over_the_cap_is_413_and_writes_nothing(capped: Client) -> None:
    docs = [{"_id": f"d{i}", "place": "area-a1"} for i in range(4)]
    status, body = await send(capped, "POST", "/health/_bulk_docs", {"docs": docs})
    assert (status, body["error"]) == (413, "too_large")
    assert "at most 3 documents" in body["reason"]
    _, all_docs = await send(capped, "GET", "/health/_all_docs", b"")
    assert all_docs["rows"] == []
    assert (await send(capped, "POST", "/health/_bulk_docs", {"docs": docs[:3]}))[0] == 201


async def test_reads_naming_too_many_documents_are_413(capped: Client) -> None:
    ids = [f"d{i}" for i in range(4)]
    requests = [
        ("/health/_bulk_get", {"docs": [{"id": i} for i in ids]}),
        ("/health/_revs_diff", {i: ["1-a"] for i in ids}),
        ("/health/_all_docs", {"keys": ids}),
        ("/health/_changes?filter=_doc_ids", {"doc_ids": ids}),
    ]
    for path, body in requests:
        assert (await send(capped, "POST", path, body))[0] == 413, path
        assert (await send(capped, "POST", path, _first3(body)))[0] == 200, path
    keys = orjson.dumps(ids).decode()
    response = await capped.get(f"/health/_all_docs?keys={keys}", headers=as_user("admin"))
    assert response.status == 413


def _first3(body: dict[str, Any]) -> dict[str, Any]:
    for name in ("docs", "keys", "doc_ids"):
        if name in body:
            return {name: body[name][:3]}
    return dict(list(body.items())[:3])


# -- form bodies --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded; charset=latin-9",  # not a codec Python knows
        "multipart/form-data",  # no boundary
        "multipart/form-data; boundary=x",  # a boundary the body never uses
    ],
)
async def test_unreadable_form_bodies_are_400(client: Client, content_type: str) -> None:
    for path in ["/_session", "/supervisor/login"]:
        headers = {"Content-Type": content_type}
        response = await client.post(path, data=b"name=a&password=b", headers=headers)
        assert response.status == 400, (path, await response.text())


@pytest.mark.parametrize(
    "body",
    [
        b"--X\r\nfoo",  # cut short inside the first part's headers
        b"--X\r\nContent-Disposition form-data\r\n\r\nx\r\n--X--\r\n",  # no colon
        b"--X\r\nContent-Disposition: form-data; name=image\r\n\r\nabc",  # no end
    ],
)
async def test_broken_multipart_bodies_are_400(client: Client, body: bytes) -> None:
    """Before any password or secret is checked (login), or after (the scan)."""
    headers = {"Content-Type": "multipart/form-data; boundary=X"}
    for path, user in [("/supervisor/login", None), ("/api/v1/barcode/scan", "sam")]:
        sent = {**headers, **(as_user(user) if user else {})}
        response = await client.post(path, data=body, headers=sent)
        assert 400 <= response.status < 500, (path, response.status, await response.text())


async def test_a_login_name_that_is_no_unicode_text_is_a_400(client: Client) -> None:
    """A form field in the ``unicode_escape`` charset decodes to a lone surrogate."""
    body = b"name=%5Cud800&password=x"
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=unicode_escape"}
    for path in ["/_session", "/supervisor/login"]:
        response = await client.post(path, data=body, headers=headers)
        assert 400 <= response.status < 500, (path, response.status, await response.text())
