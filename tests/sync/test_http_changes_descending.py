"""``_changes?descending=true``: newest first, ``since`` ignored, ``last_seq`` as CouchDB has it.

CouchDB starts a descending feed at the database's update sequence whatever
``since`` says (fabric ``get_start_seq``), and its ``last_seq`` is the last
change the walk looked at (filtered out or not).  A worker's feed reads their
set only.  https://docs.couchdb.org/en/stable/api/database/changes.html
"""

from __future__ import annotations

from typing import Any

import pytest
from sync_fixtures import Api

A1, A2, B1 = "area-a1", "area-a2", "area-b1"
VIEWS = {"odd": {"map": "function (doc) { emit(doc._id); }"}}

# Writes, oldest first; then "a" is edited, so it is the newest change of all.
WRITES: list[tuple[str, str, int]] = [("a", A1, 0), ("x", B1, 1), ("b", A1, 2), ("y", A2, 3)]
NEWEST_FIRST = {
    "admin": ["a", "c", "_design/app", "y", "b", "x"],
    "alice": ["a", "c", "_design/app", "b"],
    "bob": ["_design/app", "x"],
    "sam": ["a", "c", "_design/app", "y", "b", "x"],
}
READS = {"alice": {A1, ""}, "bob": {B1, ""}}
USERS = list(NEWEST_FIRST)


async def seed_docs(api: Api) -> None:
    written = await api.bulk([{"_id": i, "place": p, "n": n} for i, p, n in WRITES])
    await api.bulk([{"_id": "_design/app", "views": VIEWS}])
    await api.bulk([{"_id": "c", "place": A1, "n": 4}])
    await api.bulk([{"_id": "a", "_rev": written[0]["rev"], "place": A1, "n": 5}])


async def feed(
    api: Api, user: str, body: Any = None, method: str = "GET", **params: str
) -> dict[str, Any]:
    status, answer = await api.call(method, "/health/_changes", user, body, **params)
    assert status == 200, answer
    return dict(answer)


def ids(body: dict[str, Any]) -> list[str]:
    return [row["id"] for row in body["results"]]


def expect(user: str, keep: set[str]) -> list[str]:
    return [i for i in NEWEST_FIRST[user] if i in keep]


@pytest.fixture
async def seeded(api: Api) -> Api:
    await seed_docs(api)
    return api


# -- order, limit, since, filters: one table ----------------------------------------
CASES: list[tuple[str, dict[str, str], Any, set[str] | int]] = [
    ("plain", {}, None, set(NEWEST_FIRST["admin"])),
    ("limit", {"limit": "2"}, None, 2),
    ("limit zero acts like one", {"limit": "0"}, None, 1),
    ("since is ignored", {"since": "3"}, None, set(NEWEST_FIRST["admin"])),
    ("since=now is ignored", {"since": "now"}, None, set(NEWEST_FIRST["admin"])),
    ("doc_ids", {"filter": "_doc_ids"}, {"doc_ids": ["b", "x", "zz"]}, {"b", "x"}),
    ("doc_ids + limit", {"filter": "_doc_ids", "limit": "1"}, {"doc_ids": ["b", "x"]}, 1),
    ("selector", {"filter": "_selector"}, {"selector": {"n": {"$gte": 2}}}, {"a", "b", "c", "y"}),
    ("design", {"filter": "_design"}, None, {"_design/app"}),
]


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize(("name", "params", "body", "want"), CASES, ids=[c[0] for c in CASES])
async def test_descending_feed(
    seeded: Api,
    user: str,
    name: str,
    params: dict[str, str],
    body: Any,
    want: set[str] | int,
) -> None:
    method = "GET" if body is None else "POST"
    answer = await feed(seeded, user, body, method, descending="true", **params)
    if isinstance(want, int):  # the first ``want`` of the (filtered) newest-first list
        everything = await feed(seeded, user, body, method, descending="true")
        assert ids(answer) == ids(everything)[:want]
    else:
        assert ids(answer) == expect(user, want)


@pytest.mark.parametrize("user", USERS)
async def test_rows_are_the_ascending_rows_reversed(seeded: Api, user: str) -> None:
    up = (await feed(seeded, user))["results"]
    down = (await feed(seeded, user, descending="true"))["results"]
    assert down == list(reversed(up))


# -- last_seq and pending -------------------------------------------------------------
@pytest.mark.parametrize("user", USERS)
async def test_full_walk_ends_at_the_oldest_change(seeded: Api, user: str) -> None:
    body = await feed(seeded, user, descending="true")
    assert body["last_seq"] == body["results"][-1]["seq"] and body["pending"] == 0


@pytest.mark.parametrize("user", USERS)
async def test_limit_ends_at_the_last_row_and_counts_the_rest(seeded: Api, user: str) -> None:
    body = await feed(seeded, user, descending="true", limit="1")
    assert body["last_seq"] == body["results"][0]["seq"]
    assert body["pending"] == len(NEWEST_FIRST[user]) - 1


@pytest.mark.parametrize("user", USERS)
async def test_filtered_out_changes_still_move_last_seq(seeded: Api, user: str) -> None:
    """PouchDB's "Non-live changes filter, descending": same last_seq, filter or not."""
    everything = await feed(seeded, user, descending="true")
    filtered = await feed(
        seeded, user, {"doc_ids": ["c"]}, "POST", descending="true", filter="_doc_ids"
    )
    assert ids(filtered) == expect(user, {"c"})
    assert filtered["last_seq"] == everything["last_seq"]


@pytest.mark.parametrize("user", USERS)
async def test_empty_feed_answers_the_update_seq(api: Api, user: str) -> None:
    body = await feed(api, user, descending="true")
    _, info = await api.call("GET", "/health", user)
    assert body == {"results": [], "last_seq": info["update_seq"], "pending": 0}


@pytest.mark.parametrize("user", USERS)
async def test_each_seq_is_a_since_token_for_an_ascending_feed(seeded: Api, user: str) -> None:
    rows = (await feed(seeded, user, descending="true"))["results"]
    for n, row in enumerate(rows):
        after = await feed(seeded, user, since=str(row["seq"]))
        assert ids(after) == [r["id"] for r in reversed(rows[:n])]


# -- isolation ------------------------------------------------------------------------
@pytest.mark.parametrize("user", ["alice", "bob"])
@pytest.mark.parametrize(
    "params",
    [{}, {"include_docs": "true"}, {"style": "all_docs"}, {"filter": "_doc_ids", "limit": "50"}],
)
async def test_a_workers_feed_never_lists_documents_outside_their_set(
    seeded: Api, user: str, params: dict[str, str]
) -> None:
    body = {"doc_ids": ["a", "b", "c", "x", "y"]} if "filter" in params else None
    method = "GET" if body is None else "POST"
    answer = await feed(seeded, user, body, method, descending="true", **params)
    status, docs = await seeded.call("GET", "/health/_all_docs", user)
    visible = {row["id"] for row in docs["rows"]}
    assert status == 200 and ids(answer) and set(ids(answer)) <= visible
    for row in answer["results"]:
        if "doc" in row:
            assert row["doc"].get("place", "") in READS[user]


async def test_a_filter_finds_a_match_several_pages_down(api: Api) -> None:
    """Filtered walks read 500 rows a page; the match lies on the second page."""
    await api.bulk([{"_id": f"d{i:03}", "place": A1} for i in range(520)])
    for user in ("admin", "alice"):
        body = await feed(
            api, user, {"doc_ids": ["d000"]}, "POST", descending="true", filter="_doc_ids"
        )
        assert ids(body) == ["d000"] and body["last_seq"] == body["results"][0]["seq"]


# -- refused ---------------------------------------------------------------------------
@pytest.mark.parametrize("user", ["admin", "alice"])
async def test_longpoll_descending_is_400(api: Api, user: str) -> None:
    status, body = await api.call(
        "GET", "/health/_changes", user, feed="longpoll", descending="true"
    )
    assert status == 400 and "longpoll" in body["reason"]
