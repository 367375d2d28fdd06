"""Every read the routes can be sent is answered, and never with a 5xx (issue 9, point 9).

Junk query parameters and bodies for ``_changes`` (including selectors nested
past the parsers' limits), ``_all_docs``, ``open_revs``, ``_bulk_get`` and
``_revs_diff``, as an admin and as a CHW, over a few stored documents.
"""

from __future__ import annotations

from urllib.parse import quote

import orjson
from hypothesis import given
from hypothesis import strategies as st
from served import Served, fuzz_settings, json_junk, served
from sync_fixtures import as_user
from yarl import URL

from sync.app import create_app
from sync.config import Config

JUNK = json_junk(
    8,
    keys=st.sampled_from(["$and", "$or", "$not", "$gt", "place"]),
    words=st.sampled_from(["$eq", "$and", "$or", "$regex", "$elemMatch", "$in", "$exists", "_id"]),
    max_leaves=8,
)
TEXT_PARAM = st.one_of(
    st.builds(lambda v: orjson.dumps(v).decode(), JUNK),
    st.text(max_size=10),
    st.sampled_from(["0", "-1", "now", "true", "all", "1e400", "99999999999999999999999"]),
    st.integers(300, 1300).map(lambda n: "[" * n + "]" * n),
)
PARAMS = {
    "_changes": ["since", "limit", "feed", "style", "filter", "doc_ids", "include_docs",
                 "descending", "heartbeat", "timeout", "conflicts", "attachments", "seq_interval"],
    "_all_docs": ["keys", "key", "startkey", "endkey", "start_key", "limit", "skip",
                  "descending", "include_docs", "inclusive_end", "update_seq", "conflicts"],
    "p1": ["rev", "open_revs", "revs", "revs_info", "latest", "conflicts", "attachments",
           "local_seq", "deleted_conflicts"],
    "_bulk_get": ["revs", "latest", "attachments"],
    "_revs_diff": [],
}  # fmt: skip


def deep_selector(levels: int) -> bytes:
    return b'{"selector": ' + b'{"$and": [' * levels + b"{}" + b"]}" * levels + b"}"


def deep_body(levels: int, template: bytes) -> bytes:
    """``template`` with ``DEEP`` replaced by a value nested ``levels`` deep."""
    return template.replace(b"DEEP", b"[" * levels + b"]" * levels)


DEEP_BODIES = st.builds(
    deep_body,
    st.integers(60, 1100),
    st.sampled_from(
        [
            b'{"docs": [{"id": DEEP}]}',
            b'{"docs": [{"id": "p1", "rev": DEEP}]}',
            b'{"docs": [{"id": "p1", "atts_since": DEEP}]}',
            b'{"p1": DEEP}',
            b'{"p1": [DEEP]}',
            b'{"keys": [DEEP]}',
            b'{"doc_ids": DEEP}',
            b'{"doc_ids": [DEEP]}',
            b"DEEP",
        ]
    ),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes]:
    route = draw(st.sampled_from(sorted(PARAMS)))
    names = draw(st.lists(st.sampled_from(PARAMS[route]), max_size=4)) if PARAMS[route] else []
    query = "&".join(f"{n}={quote(draw(TEXT_PARAM), safe='')}" for n in names)
    path = f"/health/{route}" + (f"?{query}" if query else "")
    if route in ("_bulk_get", "_revs_diff", "_changes", "_all_docs") and draw(st.booleans()):
        body = draw(
            st.one_of(
                st.builds(orjson.dumps, JUNK),
                st.builds(lambda d: orjson.dumps({"docs": d}), st.lists(JUNK, max_size=3)),
                st.builds(lambda s: orjson.dumps({"selector": s}), JUNK),
                st.builds(deep_selector, st.integers(100, 1100)),
                DEEP_BODIES,
            )
        )
        return "POST", path, body
    return "GET", path, b""


async def setup_docs(app: Served) -> None:
    docs = [{"_id": "p1", "place": "area-a1", "n": 1}, {"_id": "p2", "place": "area-b1"}]
    body = orjson.dumps({"docs": docs})
    headers = {**as_user("admin"), "Content-Type": "application/json"}
    response = await app.client.post("/health/_bulk_docs", data=body, headers=headers)
    assert response.status == 201


async def send(app: Served, request: tuple[str, str, bytes], user: str) -> tuple[int, str]:
    method, path, body = request
    headers = {**as_user(user), "Content-Type": "application/json"}
    url = URL(path, encoded=True)
    response = await app.client.request(method, url, data=body or None, headers=headers)
    return response.status, await response.text()


def test_no_read_is_a_server_error(config: Config) -> None:
    with served(create_app(config)) as app:
        app.run(setup_docs(app))
        _fuzz(app)


def _fuzz(app: Served) -> None:
    @fuzz_settings(300)
    @given(requests(), st.sampled_from(["admin", "alice"]))
    def read(request: tuple[str, str, bytes], user: str) -> None:
        status, text = app.run(send(app, request, user))
        assert status < 500, (status, text, request)

    read()
