"""Whatever is stored can be served: a property over random documents (issue 9, point 2).

Random JSON trees (unicode keys, 64-bit integers, tiny and huge floats, nulls),
wrapped to nest around the depth limit, are written in batches (``new_edits``
true and false).  A batch with a document over the limit is refused whole with
400, and each document is then written alone.  Every accepted document must
read back unchanged through every read route, alone and beside the others:
``GET``, ``open_revs``, ``_bulk_get``, ``_changes?include_docs``,
``_all_docs?include_docs``.  No answer may be a 5xx.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from served import Served, served
from sync_fixtures import as_user

from sync.app import create_app
from sync.config import Config
from sync.replication.documents import MAX_DOCUMENT_DEPTH

TOO_DEEP = f"Document nesting depth exceeds the limit of {MAX_DOCUMENT_DEPTH} levels."
HEADERS = {**as_user("admin"), "Content-Type": "application/json"}

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -0.0, 1e16]),
    st.text(max_size=12),
)
TREES = st.recursive(
    SCALARS,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=10,
)
FIELD_NAMES = st.text(min_size=1, max_size=8).filter(lambda k: not k.startswith("_"))


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A document body nested around the limit, as deep as a request can carry, or shallow.

    252 levels was stored and then failed every read; the request that carries it
    (``{"docs": [...]}``) adds two, and orjson (here too) writes at most 254.
    """
    value = draw(TREES)
    near = st.integers(MAX_DOCUMENT_DEPTH - 4, MAX_DOCUMENT_DEPTH + 2)
    target = draw(st.one_of(st.none(), near, st.sampled_from([200, 251, 252])))
    for _ in range(0 if target is None else target - 1 - depth(value)):
        value = [value] if draw(st.booleans()) else {draw(st.text(max_size=4)): value}
    fields = draw(st.dictionaries(FIELD_NAMES.filter(lambda k: k != "place"), TREES, max_size=3))
    return {**fields, "place": "area-a1", "v": value}


def depth(value: Any) -> int:
    """Levels of objects and arrays, the outermost counted (an independent count)."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


class Roundtrip:
    """One app for every example; each example's documents get fresh ids."""

    def __init__(self, app: Served) -> None:
        self.app = app
        self.numbers = itertools.count()

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else orjson.dumps(body)
        response = await self.app.client.request(method, path, data=data, headers=HEADERS)
        answer = await response.json()
        assert response.status < 500, (method, path, response.status, answer)
        return response.status, answer

    async def write(self, docs: list[dict[str, Any]], new_edits: bool) -> list[str]:
        """The ids stored: the whole batch, or (refused whole) each document that fits alone."""
        status, answer = await self.call(
            "POST", "/health/_bulk_docs", {"docs": docs, "new_edits": new_edits}
        )
        fits = [depth(doc) <= MAX_DOCUMENT_DEPTH for doc in docs]
        if all(fits):
            assert status == 201, answer
            assert all("error" not in row for row in answer), answer
            return [doc["_id"] for doc in docs]
        assert status == 400 and answer["reason"] == TOO_DEEP, (status, answer)
        query = "" if new_edits else "?new_edits=false"
        for doc, fit in zip(docs, fits, strict=True):
            status, answer = await self.call("PUT", f"/health/{doc['_id']}{query}", doc)
            assert status == (201 if fit else 400), answer
        return [doc["_id"] for doc, fit in zip(docs, fits, strict=True) if fit]

    async def served(self, sent: dict[str, bytes]) -> None:
        ids = list(sent)
        for doc_id in ids:
            status, doc = await self.call("GET", f"/health/{doc_id}")
            assert status == 200 and _body(doc) == sent[doc_id]
            status, rows = await self.call("GET", f"/health/{doc_id}?open_revs=all&revs=true")
            assert status == 200 and _body(rows[0]["ok"]) == sent[doc_id]
        status, got = await self.call("POST", "/health/_bulk_get", {"docs": _refs(ids)})
        assert status == 200
        assert {r["id"]: _body(r["docs"][0]["ok"]) for r in got["results"]} == sent
        status, got = await self.call(
            "POST", "/health/_changes?include_docs=true&filter=_doc_ids", {"doc_ids": ids}
        )
        assert status == 200 and {r["id"]: _body(r["doc"]) for r in got["results"]} == sent
        status, got = await self.call("POST", "/health/_all_docs?include_docs=true", {"keys": ids})
        assert status == 200 and {r["id"]: _body(r["doc"]) for r in got["rows"]} == sent


def _refs(ids: list[str]) -> list[dict[str, str]]:
    return [{"id": doc_id} for doc_id in ids]


def _body(doc: dict[str, Any]) -> bytes:
    """The fields a client sent, as canonical JSON: 1 and 1.0 differ there, as do 0.0 and -0.0."""
    kept = {k: v for k, v in doc.items() if k not in ("_id", "_rev", "_revisions")}
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)


def test_every_stored_document_is_served(config: Config) -> None:
    with served(create_app(config)) as app:
        _property(Roundtrip(app))


def _property(trip: Roundtrip) -> None:
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(bodies(), min_size=1, max_size=3), st.booleans())
    def roundtrip(batch: list[dict[str, Any]], new_edits: bool) -> None:
        docs = [{"_id": f"doc-{next(trip.numbers)}", **body} for body in batch]
        if not new_edits:
            docs = [{**doc, "_rev": f"1-{i:032x}"} for i, doc in enumerate(docs, 1)]
        stored = trip.app.run(trip.write(docs, new_edits))
        sent = {doc["_id"]: _body(doc) for doc in docs if doc["_id"] in stored}
        if sent:
            trip.app.run(trip.served(sent))

    roundtrip()
