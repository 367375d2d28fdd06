"""A branch of another place does not exist for the caller, on any route (issue 9, point 4).

``rec`` lives in area-a1 (alice's): its winner is ``4-www``.  A losing branch lies
in area-b1 (bob's): ``3-bobleaf`` (with a body field and an attachment of its own) on
``2-bobbase``, and a deleted branch ``2-bobgone``; all share the root ``1-root``::

    1-root ─ 2-zzz ─ 3-vvv ─ 4-www          area-a1 (the winner)
           ├ 2-bobbase ─ 3-bobleaf          area-b1 (hidden.txt, "b1-only")
           └ 2-bobgone (deleted)            area-b1

(The hidden rev ids hold letters no generated rev id has, so a search finds only them.)

Alice plays the attacker.  Nothing of the area-b1 branches (rev ids, the
attachment's name or digest, body fields) may appear in any answer she gets; a
hidden revision she names is answered exactly like one that does not exist.
"""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest
from sync_fixtures import Api, Client, as_user

from sync.appkeys import STORE
from sync.replication.routes import REPLICATION
from sync.replication.writes import md5_digest

SECRET = b"b1 secret attachment"
DIGEST = md5_digest(SECRET)
HIDDEN = [
    "bobleaf",
    "bobbase",
    "bobgone",
    "hidden.txt",
    DIGEST,
    "b1-only",
    base64.b64encode(SECRET).decode(),
]


def revisions(start: int, *ids: str) -> dict[str, Any]:
    return {"start": start, "ids": list(ids)}


async def build(api: Api) -> None:
    docs = [
        {"_id": "rec", "_rev": "4-www", "place": "area-a1", "name": "visible",
         "_revisions": revisions(4, "www", "vvv", "zzz", "root")},
        {"_id": "rec", "_rev": "3-bobleaf", "place": "area-b1", "secret": "b1-only",
         "_revisions": revisions(3, "bobleaf", "bobbase", "root"),
         "_attachments": {"hidden.txt": {"content_type": "text/plain",
                                         "data": base64.b64encode(SECRET).decode()}}},
        {"_id": "rec", "_rev": "2-bobgone", "place": "area-b1", "_deleted": True,
         "_revisions": revisions(2, "bobgone", "root")},
    ]  # fmt: skip
    assert await api.bulk(docs, new_edits=False) == []


@pytest.fixture
async def rec(api: Api) -> Api:
    await build(api)
    return api


def assert_hidden(answer: Any) -> None:
    text = json.dumps(answer)
    assert [h for h in HIDDEN if h in text] == []


def like_absent(answer: Any, asked: str, fake: str) -> Any:
    """An answer about a hidden rev, written as if it had been asked about ``fake``."""
    return json.loads(json.dumps(answer).replace(asked, fake))


# -- the attack seen in the review ---------------------------------------------------
async def test_revs_diff_names_no_hidden_revision(rec: Api) -> None:
    """possible_ancestors come from readable branches only; hidden revs are "missing"."""
    status, answer = await rec.call("POST", "/health/_revs_diff", "alice", {"rec": ["5-new"]})
    assert status == 200
    assert answer == {"rec": {"missing": ["5-new"], "possible_ancestors": ["4-www"]}}
    asked = {"rec": ["3-bobleaf", "2-bobbase", "2-bobgone", "4-www"]}
    answer = (await rec.call("POST", "/health/_revs_diff", "alice", asked))[1]
    assert answer == {"rec": {"missing": ["3-bobleaf", "2-bobbase", "2-bobgone"]}}
    sam = (await rec.call("POST", "/health/_revs_diff", "sam", {"rec": ["5-new"]}))[1]
    assert sam["rec"]["possible_ancestors"] == ["2-bobgone", "3-bobleaf", "4-www"]
    # sam reads both places: he sees both branches.
    doc = (await rec.call("GET", "/health/rec", "sam", conflicts="true", deleted_conflicts="true"))[
        1
    ]
    assert doc["_conflicts"] == ["3-bobleaf"] and doc["_deleted_conflicts"] == ["2-bobgone"]
    changes = (await rec.call("GET", "/health/_changes", "sam", style="all_docs"))[1]
    assert [c["rev"] for c in changes["results"][0]["changes"]] == [
        "4-www",
        "3-bobleaf",
        "2-bobgone",
    ]


async def test_an_edit_of_a_hidden_leaf_is_a_conflict(rec: Api) -> None:
    """Alice cannot extend bob's branch, nor steal its attachment through a stub."""
    edit = {"_rev": "3-bobleaf", "place": "area-a1", "_attachments": {"hidden.txt": {"stub": True}}}
    status, answer = await rec.call("PUT", "/health/rec", "alice", edit)
    assert (status, answer) == (409, {"error": "conflict", "reason": "Document update conflict."})
    plain = {"_rev": "3-bobleaf", "place": "area-a1"}
    assert (await rec.call("PUT", "/health/rec", "alice", plain))[0] == 409
    assert (await rec.call("DELETE", "/health/rec", "alice", rev="3-bobleaf"))[0] == 409
    by_digest = {"_rev": "4-www", "place": "area-a1",
                 "_attachments": {"x": {"stub": True, "digest": DIGEST}}}  # fmt: skip
    status, answer = await rec.call("PUT", "/health/rec", "alice", by_digest)
    assert status == 412 and "hidden.txt" not in answer["reason"]
    leaves = (await rec.call("GET", "/health/rec", "admin", open_revs="all"))[1]
    assert sorted(e["ok"]["_rev"] for e in leaves) == ["2-bobgone", "3-bobleaf", "4-www"]
    for params in ({}, {"rev": "3-bobleaf"}):
        got = await rec.client.get(
            "/health/rec/hidden.txt", headers=as_user("alice"), params=params
        )
        assert got.status == 404


async def test_a_replicated_write_does_not_graft_onto_a_hidden_branch(rec: Api) -> None:
    """A path through hidden revisions is cut there: bob's branch stays a leaf, untouched."""
    graft = {"_id": "rec", "_rev": "4-ggg", "place": "area-a1",
             "_revisions": revisions(4, "ggg", "bobleaf", "bobbase", "root")}  # fmt: skip
    assert await rec.bulk([graft], "alice", new_edits=False) == []
    leaves = (await rec.call("GET", "/health/rec", "admin", open_revs="all"))[1]
    assert sorted(e["ok"]["_rev"] for e in leaves) == ["2-bobgone", "3-bobleaf", "4-ggg", "4-www"]
    mine = (await rec.call("GET", "/health/rec", "alice", rev="4-ggg", revs="true"))[1]
    assert_hidden(mine)
    stolen = {"_id": "rec", "_rev": "5-sss", "place": "area-a1",
              "_revisions": revisions(5, "sss", "www", "vvv", "zzz", "root"),
              "_attachments": {"a.txt": {"stub": True, "digest": DIGEST, "revpos": 3}}}  # fmt: skip
    [refused] = await rec.bulk([stolen], "alice", new_edits=False)
    assert refused["error"] == "missing_stub"
    # _revs_diff said "missing": re-sending a hidden rev succeeds like any other, storing nothing.
    upload = {"_id": "rec", "_rev": "3-bobleaf", "place": "area-a1", "mine": True,
              "_revisions": revisions(3, "bobleaf", "bobbase", "root")}  # fmt: skip
    assert await rec.bulk([upload], "alice", new_edits=False) == []
    bob_branch = (await rec.call("GET", "/health/rec", "admin", rev="3-bobleaf"))[1]
    assert bob_branch["secret"] == "b1-only" and "mine" not in bob_branch
    assert (await rec.call("GET", "/health/rec", "alice", rev="3-bobleaf"))[0] == 404


# -- every read route answers as if the hidden branch did not exist --------------------
async def test_open_revs_of_a_hidden_rev_is_like_a_missing_one(rec: Api) -> None:
    for hidden, latest in itertools.product(
        ["2-bobbase", "3-bobleaf", "2-bobgone"], ["true", "false"]
    ):
        fake = hidden.split("-")[0] + "-fff"
        params = {"latest": latest, "revs": "true"}
        got = (await rec.call("GET", "/health/rec", "alice", open_revs=f'["{hidden}"]', **params))[
            1
        ]
        absent = (await rec.call("GET", "/health/rec", "alice", open_revs=f'["{fake}"]', **params))[
            1
        ]
        assert like_absent(got, hidden, fake) == absent == [{"missing": fake}]


async def test_bulk_get_of_a_hidden_rev_is_like_a_missing_one(rec: Api) -> None:
    for hidden, latest in itertools.product(
        ["2-bobbase", "3-bobleaf", "2-bobgone"], ["true", "false"]
    ):
        fake = hidden.split("-")[0] + "-fff"
        asked = {"docs": [{"id": "rec", "rev": hidden}]}
        got = (await rec.call("POST", "/health/_bulk_get", "alice", asked, latest=latest))[1]
        asked = {"docs": [{"id": "rec", "rev": fake}]}
        absent = (await rec.call("POST", "/health/_bulk_get", "alice", asked, latest=latest))[1]
        assert like_absent(got, hidden, fake) == absent
        assert "ok" not in absent["results"][0]["docs"][0]


async def test_every_read_route_hides_the_other_branch(rec: Api) -> None:
    """The routes that list revisions, conflicts or attachments name only alice's branch."""
    reads: list[tuple[str, str, Any, dict[str, str]]] = [
        ("GET", "/health/rec", None,
         {"revs": "true", "revs_info": "true", "conflicts": "true", "deleted_conflicts": "true"}),
        ("GET", "/health/rec", None, {"open_revs": "all", "revs": "true", "latest": "true"}),
        ("GET", "/health/rec", None, {"rev": "3-vvv", "latest": "true", "revs": "true"}),
        ("POST", "/health/_bulk_get", {"docs": [{"id": "rec"}, {"id": "rec", "rev": "1-root"}]},
         {"revs": "true", "latest": "true", "attachments": "true"}),
        ("GET", "/health/_changes", None,
         {"style": "all_docs", "include_docs": "true", "conflicts": "true"}),
        ("GET", "/health/_all_docs", None, {"include_docs": "true", "conflicts": "true"}),
        ("POST", "/health/_all_docs", {"keys": ["rec"]}, {"include_docs": "true"}),
        ("POST", "/health/_revs_diff", {"rec": ["9-z", "4-www", "1-root"]}, {}),
    ]  # fmt: skip
    for method, path, body, params in reads:
        status, answer = await rec.call(method, path, "alice", body, **params)
        assert status == 200, (path, answer)
        assert_hidden(answer)
    status, answer = await rec.call("GET", "/health/rec", "alice", revs_info="true", rev="4-www")
    assert [r["rev"] for r in answer["_revs_info"]] == ["4-www", "3-vvv", "2-zzz", "1-root"]
    # What alice sees of ``rec`` is exactly what she would see without bob's branches.
    latest = {"open_revs": "all", "revs": "true", "latest": "true", "conflicts": "true"}
    seen = (await rec.call("GET", "/health/rec", "alice", **latest))[1]
    plain = {"_id": "plain", "_rev": "4-www", "place": "area-a1", "name": "visible",
             "_revisions": revisions(4, "www", "vvv", "zzz", "root")}  # fmt: skip
    assert await rec.bulk([plain], new_edits=False) == []
    alone = (await rec.call("GET", "/health/plain", "alice", **latest))[1]
    assert like_absent(seen, '"rec"', '"plain"') == alone


# -- refused writes to a document of another place --------------------------------------
async def test_writes_refused_for_another_place_are_audited_and_counted(
    rec: Api, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = client.app[REPLICATION].parts
    recorded: list[tuple[str, str, str, list[str]]] = []
    original = parts.record

    def spy(caller: Any, action: str, db: str, doc_ids: Any) -> None:
        ids = sorted(set(doc_ids))
        if ids:
            recorded.append((caller.name, action, db, ids))
        original(caller, action, db, ids)

    monkeypatch.setattr(parts, "record", spy)
    before = parts.refused_writes
    status, _ = await rec.call("PUT", "/health/rec", "bob", {"_rev": "4-www", "place": "area-b1"})
    assert status == 403
    branch = {"_id": "rec", "_rev": "5-bbb", "place": "area-b1",
              "_revisions": revisions(5, "bbb", "www")}  # fmt: skip
    [refused] = await rec.bulk([branch, {"_id": "mine", "_rev": "1-m", "place": "area-b1"}], "bob",
                               new_edits=False)  # fmt: skip
    assert refused["error"] == "forbidden"
    assert ("bob", "write_refused", "health", ["rec"]) in recorded
    assert [r for r in recorded if r[1] == "write_refused"] == [
        ("bob", "write_refused", "health", ["rec"])
    ] * 2
    assert parts.refused_writes == before + 2
    await rec.bulk([{"_id": "new-a1", "place": "area-a1"}], "alice")
    assert parts.refused_writes == before + 2  # an allowed write counts nothing
    status, stats = await rec.call("GET", "/_node/_local/_stats", "admin")
    assert status == 200 and stats["fieldsync"]["refused_writes"]["value"] == before + 2
    assert (await rec.call("GET", "/_node/_local/_stats", "alice"))[0] == 403


# -- the cost of the rule --------------------------------------------------------------
@pytest.fixture
def store_calls(client: Client, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every store call that reads metadata or revisions, in order."""
    store = client.app[STORE]
    calls: list[str] = []
    for name in ("get_metas", "get_revisions"):
        original = getattr(store, name)

        def counting(
            *args: Any, _name: str = name, _original: Any = original, **kwargs: Any
        ) -> Any:
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(store, name, counting)
    return calls


async def test_documents_of_one_branch_cost_no_extra_store_call(
    rec: Api, store_calls: list[str]
) -> None:
    """Only documents with several leaves are looked at, all of a batch in one call."""
    plain = [{"_id": f"p{i}", "place": "area-a1"} for i in range(20)]
    revs = {r["id"]: r["rev"] for r in await rec.bulk(plain, "alice")}
    edits = [{"_id": i, "_rev": r, "place": "area-a1", "v": 2} for i, r in revs.items()]
    store_calls.clear()
    await rec.bulk(edits, "alice")
    assert store_calls == ["get_metas"]
    store_calls.clear()
    asked = {"docs": [{"id": i} for i in revs]}
    await rec.call("POST", "/health/_bulk_get", "alice", asked, revs="true", latest="true")
    assert store_calls == ["get_metas", "get_revisions"]
    store_calls.clear()
    asked = {"docs": [{"id": i} for i in [*revs, "rec"]]}
    got = (await rec.call("POST", "/health/_bulk_get", "alice", asked, revs="true"))[1]
    assert_hidden(got)
    assert store_calls == ["get_metas", "get_revisions", "get_revisions"]
