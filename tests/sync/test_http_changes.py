"""The changes feed: since, limit, style, include_docs, filters, longpoll and heartbeats.

https://docs.couchdb.org/en/stable/api/database/changes.html
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sync_fixtures import Api, Client, as_user

from sync.appkeys import STORE

A1 = "area-a1"


async def changes(api: Api, user: str = "admin", **params: Any) -> dict[str, Any]:
    status, body = await api.call("GET", "/health/_changes", user, **params)
    assert status == 200, body
    return dict(body)


async def post_changes(api: Api, body: Any, user: str = "admin", **params: Any) -> dict[str, Any]:
    status, answer = await api.call("POST", "/health/_changes", user, body, **params)
    assert status == 200, answer
    return dict(answer)


def ids(body: dict[str, Any]) -> list[str]:
    return [row["id"] for row in body["results"]]


async def three_docs(api: Api) -> list[dict[str, Any]]:
    return list(await api.bulk([{"_id": i, "place": A1, "n": n} for n, i in enumerate("abc")]))


# -- normal feed --------------------------------------------------------------------
@pytest.mark.parametrize("user", ["admin", "alice"])
async def test_since_zero_lists_every_document_in_order(api: Api, user: str) -> None:
    written = await three_docs(api)
    body = await changes(api, user, since="0")
    assert ids(body) == ["a", "b", "c"]
    assert [row["changes"] for row in body["results"]] == [[{"rev": w["rev"]}] for w in written]
    assert body["last_seq"] == body["results"][-1]["seq"] and body["pending"] == 0


async def test_an_edited_document_appears_once_at_its_latest_change(api: Api) -> None:
    written = await three_docs(api)
    [edit] = await api.bulk([{"_id": "a", "_rev": written[0]["rev"], "place": A1}])
    body = await changes(api)
    assert ids(body) == ["b", "c", "a"]
    assert body["results"][-1]["changes"] == [{"rev": edit["rev"]}]


@pytest.mark.parametrize("user", ["admin", "alice"])
async def test_limit_and_paging_with_seq_tokens(api: Api, user: str) -> None:
    await three_docs(api)
    first = await changes(api, user, limit="2")
    assert ids(first) == ["a", "b"] and first["pending"] == 1
    rest = await changes(api, user, since=first["last_seq"])
    assert ids(rest) == ["c"]
    middle = await changes(api, user, since=first["results"][0]["seq"])
    assert ids(middle) == ["b", "c"]


@pytest.mark.parametrize("user", ["admin", "alice"])
async def test_nothing_changed_keeps_last_seq(api: Api, user: str) -> None:
    await three_docs(api)
    token = (await changes(api, user))["last_seq"]
    again = await changes(api, user, since=token)
    assert again["results"] == [] and again["last_seq"] == token


async def test_since_now_starts_at_the_end(api: Api) -> None:
    await three_docs(api)
    body = await changes(api, since="now")
    assert body["results"] == []
    assert body["last_seq"] == (await changes(api))["last_seq"]


async def test_deleted_documents_are_marked(api: Api) -> None:
    written = await three_docs(api)
    await api.bulk([{"_id": "b", "_rev": written[1]["rev"], "_deleted": True}])
    body = await changes(api, include_docs="true")
    row = body["results"][-1]
    assert row["id"] == "b" and row["deleted"] is True
    assert row["doc"]["_deleted"] is True


async def test_style_all_docs_lists_every_leaf(api: Api) -> None:
    docs = [
        {"_id": "a", "_rev": f"2-{h}", "place": A1, "_revisions": {"start": 2, "ids": [h, "r"]}}
        for h in ("x", "y")
    ]
    await api.bulk(docs, new_edits=False)
    assert (await changes(api))["results"][0]["changes"] == [{"rev": "2-y"}]
    all_leaves = (await changes(api, style="all_docs"))["results"][0]["changes"]
    assert all_leaves == [{"rev": "2-y"}, {"rev": "2-x"}]


async def test_include_docs(api: Api) -> None:
    await three_docs(api)
    body = await changes(api, include_docs="true", limit="1")
    doc = body["results"][0]["doc"]
    assert (
        doc["_id"] == "a"
        and doc["n"] == 0
        and doc["_rev"] == body["results"][0]["changes"][0]["rev"]
    )


async def test_seq_interval_is_accepted(api: Api) -> None:
    await three_docs(api)
    assert ids(await changes(api, seq_interval="2", batch_size="2")) == ["a", "b", "c"]


# -- filters -----------------------------------------------------------------------
async def test_doc_ids_filter_as_a_get_parameter(api: Api) -> None:
    await three_docs(api)
    body = await changes(api, filter="_doc_ids", doc_ids=json.dumps(["c", "a", "zz"]))
    assert ids(body) == ["a", "c"]


@pytest.mark.parametrize("user", ["admin", "alice"])
async def test_doc_ids_filter_in_a_post_body(api: Api, user: str) -> None:
    await three_docs(api)
    body = await post_changes(api, {"doc_ids": ["b"]}, user, filter="_doc_ids")
    assert ids(body) == ["b"]


async def test_selector_filter(api: Api) -> None:
    await three_docs(api)
    body = await post_changes(api, {"selector": {"n": {"$gte": 1}}}, filter="_selector")
    assert ids(body) == ["b", "c"]


@pytest.mark.parametrize(
    ("params", "body"),
    [
        ({"filter": "_selector"}, {}),
        # (a well-formed filter naming a missing design document is 404: test_http_couch_compat)
        ({"filter": "app/by/place"}, {}),
        ({"filter": "_doc_ids"}, {"doc_ids": "a"}),
        ({"feed": "eventsource"}, {}),
        ({"since": "yesterday"}, {}),
        ({"limit": "-1"}, {}),
    ],
)
async def test_bad_changes_requests_are_400(
    api: Api, params: dict[str, str], body: dict[str, Any]
) -> None:
    status, answer = await api.call("POST", "/health/_changes", "admin", body, **params)
    assert status == 400 and answer["error"] == "bad_request"


# -- longpoll -----------------------------------------------------------------------
async def test_longpoll_returns_when_a_write_happens(api: Api) -> None:
    token = (await changes(api))["last_seq"]
    poll = asyncio.create_task(changes(api, "alice", feed="longpoll", since=token, timeout="10000"))
    await asyncio.sleep(0.2)
    assert not poll.done()
    await api.bulk([{"_id": "new", "place": A1}])
    body = await asyncio.wait_for(poll, 5)
    assert ids(body) == ["new"]


async def test_longpoll_ignores_writes_outside_the_set(api: Api) -> None:
    token = (await changes(api, "alice"))["last_seq"]
    poll = asyncio.create_task(changes(api, "alice", feed="longpoll", since=token, timeout="10000"))
    await asyncio.sleep(0.1)
    await api.bulk([{"_id": "b1-doc", "place": "area-b1"}])
    await asyncio.sleep(0.2)
    assert not poll.done()
    await api.bulk([{"_id": "a1-doc", "place": A1}])
    assert ids(await asyncio.wait_for(poll, 5)) == ["a1-doc"]


async def test_longpoll_returns_at_once_when_changes_exist(api: Api) -> None:
    await three_docs(api)
    body = await asyncio.wait_for(changes(api, feed="longpoll", since="0", timeout="10000"), 2)
    assert ids(body) == ["a", "b", "c"]


async def test_longpoll_times_out_with_an_empty_answer(api: Api) -> None:
    await three_docs(api)
    token = (await changes(api))["last_seq"]
    body = await changes(api, feed="longpoll", since=token, timeout="200")
    assert body["results"] == [] and body["last_seq"] == token


async def test_longpoll_sends_heartbeats(client: Client) -> None:
    url = "/health/_changes?feed=longpoll&since=now&timeout=450&heartbeat=100"
    response = await client.get(url, headers=as_user("alice"))
    text = await response.text()
    assert response.status == 200
    assert text.startswith("\n\n") and json.loads(text)["results"] == []


async def test_heartbeat_true_means_the_default_interval(api: Api) -> None:
    body = await changes(api, feed="longpoll", since="now", timeout="100", heartbeat="true")
    assert body["results"] == []


async def test_a_scope_narrowed_during_a_longpoll_takes_effect_before_it_answers(
    api: Api,
) -> None:
    """alice loses area-a1 while her long poll waits: a write there reaches her not at all."""
    token = (await changes(api, "alice"))["last_seq"]
    poll = asyncio.create_task(changes(api, "alice", feed="longpoll", since=token, timeout="10000"))
    await asyncio.sleep(0.2)
    status, answer = await api.call(
        "PUT", "/api/v1/users/alice/places", "admin", {"places": ["area-a2"], "read_places": []}
    )
    assert status == 200, answer
    await api.bulk([{"_id": "after-move", "place": A1}])
    await asyncio.sleep(0.2)
    assert not poll.done()  # the write is outside her set now: she keeps waiting
    await api.bulk([{"_id": "in-a2", "place": "area-a2"}])
    assert ids(await asyncio.wait_for(poll, 5)) == ["in-a2"]


@pytest.fixture
async def body_reads(api: Api, client: Client, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """250 documents of alice's; then the size of every store call that opens bodies."""
    await api.bulk([{"_id": f"d{i:03d}", "place": A1, "n": i} for i in range(250)])
    store = client.app[STORE]
    calls: list[int] = []
    opened = store.get_revisions

    async def counting(db: str, wanted: Any) -> Any:
        calls.append(len(wanted))
        return await opened(db, wanted)

    monkeypatch.setattr(store, "get_revisions", counting)
    return calls


@pytest.mark.parametrize(
    ("params", "body"),
    [({"include_docs": "true"}, None), ({"filter": "_selector"}, {"selector": {"n": {"$gte": 0}}})],
)
async def test_bodies_are_opened_a_chunk_at_a_time(
    api: Api, body_reads: list[int], params: dict[str, str], body: Any
) -> None:
    """250 changes with bodies cost a few store calls, not one (or two) per document."""
    status, answer = await api.call("POST", "/health/_changes", "alice", body or {}, **params)
    assert status == 200 and len(answer["results"]) == 250
    assert [row["doc"]["n"] for row in answer["results"] if "doc" in row] == (
        list(range(250)) if "include_docs" in params else []
    )
    assert len(body_reads) == 3 and sum(body_reads) == 250  # chunks of 100


async def test_include_docs_opens_only_the_documents_it_sends(
    api: Api, body_reads: list[int]
) -> None:
    """With a limit, bodies past it are neither read nor written in the audit trail."""
    body = await changes(api, "alice", include_docs="true", limit="150")
    assert [row["doc"]["n"] for row in body["results"]] == list(range(150))
    assert sum(body_reads) == 150
