"""Every write the routes can be sent is answered, and never with a 5xx (issue 9, point 9).

Hypothesis builds requests from the shapes clients send and from junk: special
members of every JSON type, ids with odd characters, attachments with bad
stubs and bad base64, places that are not strings, bodies that are not objects;
over ``PUT``/``POST`` of documents, ``_bulk_docs`` (``new_edits`` true and
false), ``_local`` documents and attachment uploads, as an admin and as a CHW.
Whatever is accepted is then read back, with its attachments: what can be
stored must be servable.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
from hypothesis import given
from hypothesis import strategies as st
from served import Served, fuzz_settings, json_junk, served
from sync_fixtures import as_user
from yarl import URL

from sync.app import create_app
from sync.config import Config

JUNK = json_junk(10)
IDS = st.one_of(
    st.sampled_from(["p1", "p2", "_design/x", "_local/c", "_local/", "_design/", "_x", ""]),
    st.text(max_size=12),
    JUNK,
)
REVS = st.one_of(
    st.sampled_from(["1-abc", "2-" + "a" * 32, "0-x", "1-", "-1-a", "99999999999999999999-a"]),
    JUNK,
)
ATTACHMENT = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "content_type": st.one_of(
                st.sampled_from(["text/plain", "image/png", "text/plain\r\nX-A: b", "a\x00"]),
                JUNK,
            ),
            "data": st.one_of(st.sampled_from(["aGk=", "not base64!", "", "a"]), JUNK),
            "stub": JUNK,
            "digest": st.one_of(st.just("md5-xyz"), JUNK),
            "revpos": JUNK,
            "length": JUNK,
            "follows": JUNK,
        },
    ),
    JUNK,
)
SPECIAL = {
    "_id": IDS,
    "_rev": REVS,
    "_deleted": JUNK,
    "_revisions": st.one_of(
        st.fixed_dictionaries({}, optional={"start": JUNK, "ids": st.lists(JUNK, max_size=3)}),
        JUNK,
    ),
    "_attachments": st.one_of(st.dictionaries(st.text(max_size=6), ATTACHMENT, max_size=2), JUNK),
    "_conflicts": JUNK,
    "_unknown": JUNK,
    "place": st.one_of(st.sampled_from(["area-a1", "area-b1", "nowhere"]), JUNK),
}
DOCS = st.one_of(
    st.fixed_dictionaries({}, optional=SPECIAL).flatmap(
        lambda special: st.dictionaries(st.text(max_size=6), JUNK, max_size=3).map(
            lambda rest: {**rest, **special}
        )
    ),
    JUNK,
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, str]:
    """(method, path, body, content type)."""
    doc_id = quote(draw(st.text(min_size=1, max_size=8)), safe="")
    kind = draw(st.sampled_from(["put", "post", "bulk", "local", "attachment", "raw", "deep"]))
    doc = draw(DOCS)
    if kind == "deep":
        return draw(deep_requests(doc_id))
    if kind == "put":
        query = draw(st.sampled_from(["", "?new_edits=false", "?rev=1-abc", "?rev=junk"]))
        return "PUT", f"/health/{doc_id}{query}", orjson.dumps(doc), "application/json"
    if kind == "post":
        return "POST", "/health", orjson.dumps(doc), "application/json"
    if kind == "bulk":
        docs = draw(st.lists(DOCS, max_size=3))
        body = {"docs": docs, **draw(st.fixed_dictionaries({}, optional={"new_edits": JUNK}))}
        return "POST", "/health/_bulk_docs", orjson.dumps(body), "application/json"
    if kind == "local":
        return "PUT", f"/health/_local/{doc_id}", orjson.dumps(doc), "application/json"
    if kind == "attachment":
        name = quote(draw(st.text(min_size=1, max_size=8)), safe="")
        query = draw(st.sampled_from(["", "?rev=1-abc", "?rev=junk"]))
        content_type = draw(st.sampled_from(["text/plain", "image/png", "", "x/y; a=b"]))
        return "PUT", f"/health/{doc_id}/{name}{query}", draw(st.binary(max_size=64)), content_type
    path = draw(st.sampled_from(["/health", "/health/_bulk_docs", "/health/p1"]))
    method = "PUT" if path == "/health/p1" else "POST"
    body = draw(st.one_of(st.binary(max_size=64), st.builds(orjson.dumps, JUNK)))
    return method, path, body, draw(st.sampled_from(["application/json", "text/plain", ""]))


def nested(depth: int, inner: bytes) -> bytes:
    """``inner`` under ``depth`` levels of arrays and objects, written as text (past orjson's
    254 levels)."""
    opening = "".join('{"k":' if level % 2 else "[" for level in range(depth))
    closing = "".join("}" if level % 2 else "]" for level in reversed(range(depth)))
    return opening.encode() + inner + closing.encode()


@st.composite
def deep_requests(draw: st.DrawFn, doc_id: str) -> tuple[str, str, bytes, str]:
    """A document nested from near the limit to past the JSON parser's 1024 levels."""
    levels = draw(st.one_of(st.integers(55, 70), st.integers(240, 270), st.integers(1000, 1100)))
    doc = b'{"place": "area-a1", "deep": ' + nested(levels, orjson.dumps(draw(JUNK))) + b"}"
    where = draw(st.sampled_from(["PUT doc", "POST", "bulk", "bulk replicated", "local"]))
    if where == "PUT doc":
        return "PUT", f"/health/{doc_id}", doc, "application/json"
    if where == "POST":
        return "POST", "/health", doc, "application/json"
    if where == "local":
        return "PUT", f"/health/_local/{doc_id}", doc, "application/json"
    if where == "bulk":
        return "POST", "/health/_bulk_docs", b'{"docs": [' + doc + b"]}", "application/json"
    replicated = doc[:-1] + b', "_id": "r1", "_rev": "1-abc"}'
    body = b'{"new_edits": false, "docs": [' + replicated + b"]}"
    return "POST", "/health/_bulk_docs", body, "application/json"


async def send(app: Served, request: tuple[str, str, bytes, str], user: str) -> tuple[int, Any]:
    method, path, body, content_type = request
    headers = {**as_user(user), **({"Content-Type": content_type} if content_type else {})}
    url = URL(path, encoded=True)
    response = await app.client.request(method, url, data=body, headers=headers)
    return response.status, await response.read()


async def read_back(app: Served, answer: Any, user: str) -> list[tuple[int, str]]:
    """Every written document, then each of its attachments: (status, path) of each read."""
    rows = answer if isinstance(answer, list) else [answer]
    ids = [r["id"] for r in rows if r.get("ok") and not r["id"].startswith("_local/")]
    seen = []
    for doc_id in ids:
        path = f"/health/{quote(doc_id, safe='')}"
        status, text = await send(app, ("GET", f"{path}?attachments=true", b"", ""), user)
        seen.append((status, path))
        names = orjson.loads(text).get("_attachments", {}) if status == 200 else {}
        for name in names:
            att = f"{path}/{quote(name, safe='')}"
            seen.append(((await send(app, ("GET", att, b"", ""), user))[0], att))
    return seen


def test_no_write_is_a_server_error(config: Config) -> None:
    with served(create_app(config)) as app:
        _fuzz(app)


def _fuzz(app: Served) -> None:
    @fuzz_settings(300)
    @given(requests(), st.sampled_from(["admin", "alice"]))
    def write(request: tuple[str, str, bytes, str], user: str) -> None:
        status, text = app.run(send(app, request, user))
        assert status < 500, (status, text)
        if status >= 400:
            assert set(orjson.loads(text)) == {"error", "reason"}, text
        elif status == 201:
            reads = app.run(read_back(app, orjson.loads(text), user))
            assert all(read < 500 for read, _ in reads), (reads, request)

    write()
