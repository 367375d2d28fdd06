"""Refused pushes are recorded and listed: ``GET /api/v1/refusals`` (in process, real SQLite).

The shared organisation (``shared_org``) plus ``dina``, a supervisor of district-b
only: she must see none of district-a's refusals, not even the workers' names.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from shared_org import PLACES, USERS
from sync_fixtures import Api, Client, as_user, running, seed

from sync import cli
from sync.appkeys import CONFIG
from sync.audit import AUDIT
from sync.config import Config
from sync.refusals import REFUSALS
from sync.refusals.routes import RECORDER
from sync.scopes import Role
from sync.store.schema import db_path

MARKER = "zebra-marker-7f3a9c"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    users = [*USERS, ("dina", Role.SUPERVISOR, ["district-b"], [])]
    seed(tmp_path / "data", PLACES, users)
    return tmp_path / "data"


@pytest.fixture
def config(data_dir: Path) -> Config:
    return Config(
        data_dir=data_dir,
        max_request_bytes=2 * 1024 * 1024,
        max_document_bytes=64 * 1024,
        require_enrolment=False,
        refusals_per_worker=4,
    )


def report(doc_id: str, weeks: int, place: str = "area-a1", **extra: Any) -> dict[str, Any]:
    fields = {"weeks": weeks, "name": f"Jane {MARKER}"}
    return {
        "_id": doc_id,
        "type": "data_record",
        "form": "P",
        "place": place,
        "fields": fields,
        **extra,
    }


async def refusals(api: Api, user: str = "sam", **params: Any) -> list[dict[str, Any]]:
    status, body = await api.call("GET", "/api/v1/refusals", user, **params)
    assert status == 200, body
    found: list[dict[str, Any]] = body["refusals"]
    return found


async def test_refused_pushes_are_listed_with_reason_and_counted(api: Api) -> None:
    docs = [report("out-1", 3, place="area-b1"), report("bad-1", 50), report("ok-1", 3)]
    answer = await api.bulk(docs, user="alice")
    assert [a.get("error") for a in answer] == ["forbidden", "forbidden", None]

    found = {r["doc_id"]: r for r in await refusals(api)}
    assert set(found) == {"out-1", "bad-1"}
    assert found["out-1"]["reason"] == "outside_scope"
    assert found["bad-1"]["reason"] == "form_schema"
    assert "field 'weeks': must be at most 42" in found["bad-1"]["detail"]
    assert found["bad-1"]["advice"] and found["bad-1"]["reason_words"] == "Does not match its form"
    assert {r["worker"] for r in found.values()} == {"alice"}
    assert {r["count"] for r in found.values()} == {1}

    await api.bulk(docs[:2], user="alice")  # the phone tries again at its next sync
    again = {r["doc_id"]: r for r in await refusals(api)}
    assert {r["count"] for r in again.values()} == {2}
    assert again["bad-1"]["first_at"] == found["bad-1"]["first_at"]
    assert again["bad-1"]["at"] >= found["bad-1"]["at"]


async def test_put_refusals_and_whole_request_failures_are_recorded(api: Api) -> None:
    status, _ = await api.call("PUT", "/health/put-1", "alice", report("put-1", 99))
    assert status == 403
    status, _ = await api.call(
        "PUT", "/health/big-1", "alice", report("big-1", 3, pad="x" * 70_000)
    )
    assert status == 413
    status, _ = await api.call("POST", "/health/_bulk_docs", "alice", {"docs": [{"_bad": 1}]})
    assert status == 400
    response = await api.client.post(
        "/health/_bulk_docs", data=b"{not json", headers=as_user("alice")
    )
    assert response.status == 400
    found = {r["doc_id"]: r for r in await refusals(api)}
    assert found["put-1"]["reason"] == "form_schema"
    assert found["big-1"]["reason"] == "too_large"
    assert found["big-1"]["body_bytes"] > 64 * 1024
    assert found["(no id)"]["reason"] == "malformed"
    assert found["(unreadable)"]["reason"] == "unreadable"


async def test_scope_another_district_sees_nothing_and_chw_is_refused(api: Api) -> None:
    await api.bulk([report("out-1", 3, place="area-b1"), report("bad-1", 50)], user="alice")
    assert len(await refusals(api, "sam")) == 2
    assert len(await refusals(api, "admin")) == 2
    assert await refusals(api, "dina") == []
    assert await refusals(api, "dina", worker="alice") == []
    status, body = await api.call("GET", "/api/v1/refusals", "alice")
    assert status == 403 and body["error"] == "forbidden"
    status, _ = await api.call("GET", "/api/v1/refusals", "bob")
    assert status == 403


async def test_a_worker_cannot_make_refusals_look_like_anothers(api: Api) -> None:
    # bob pushes the very same (doc id, rev) alice did: each keeps their own row and count
    doc = report("same-1", 50, place="area-b1", _rev="1-abc", worker="alice")
    await api.bulk([{**doc, "place": "area-a1"}], user="alice", new_edits=False)
    await api.bulk([doc], user="bob", new_edits=False)
    rows = await refusals(api, "admin")
    assert sorted((r["worker"], r["count"]) for r in rows) == [("alice", 1), ("bob", 1)]
    assert [r["worker"] for r in await refusals(api, "dina")] == ["bob"]


async def test_filters_limit_cursor_and_bad_parameters(api: Api) -> None:
    await api.bulk([report(f"bad-{i}", 50 + i) for i in range(3)], user="alice")
    await api.bulk([report("bob-1", 50, place="area-b1")], user="bob")
    assert {r["worker"] for r in await refusals(api, worker="bob")} == {"bob"}
    status, page = await api.call("GET", "/api/v1/refusals", "sam", limit=2)
    assert status == 200 and len(page["refusals"]) == 2 and page["next"]
    _, rest = await api.call("GET", "/api/v1/refusals", "sam", limit=2, before=page["next"])
    ids = [r["doc_id"] for r in page["refusals"] + rest["refusals"]]
    assert len(ids) == len(set(ids)) == 4
    times = [r["at"] for r in page["refusals"] + rest["refusals"]]
    assert times == sorted(times, reverse=True)
    for bad in ({"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"before": "yesterday"}):
        status, body = await api.call("GET", "/api/v1/refusals", "sam", **bad)
        assert status == 400, bad
        assert body["error"] == "bad_request" and body["reason"]


async def test_cap_per_worker_keeps_the_newest_and_counts_the_rest(
    api: Api, client: Client
) -> None:
    for i in range(6):  # one batch each: distinct times
        await api.bulk([report(f"bad-{i}", 50)], user="alice")
    rows = await refusals(api, worker="alice")
    assert sorted(r["doc_id"] for r in rows) == ["bad-2", "bad-3", "bad-4", "bad-5"]
    store = client.server.app[REFUSALS]
    assert await store.counts(["alice", "bob"]) == {"alice": 6}


async def test_bodies_are_sealed_and_reads_audited(api: Api, client: Client) -> None:
    await api.bulk([report("bad-1", 50)], user="alice")
    rows = await refusals(api)
    app = client.server.app
    store, recorder = app[REFUSALS], app[RECORDER]
    found = await store.get(rows[0]["id"])
    assert found is not None and found[1] is not None
    refusal, sealed = found
    opened = await recorder.sealer.open(refusal.worker, refusal.doc_id, refusal.rev, sealed)
    assert MARKER.encode() in opened
    await app[AUDIT].commit()
    path = db_path(app[CONFIG].data_dir)
    raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert MARKER.encode() not in raw
    with sqlite3.connect(path) as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM audit")]
    assert "refusals_read" in actions


async def _opened_body(client: Client) -> tuple[str, bytes]:
    app = client.server.app
    await app[RECORDER].drain()
    [refusal] = await app[REFUSALS].for_workers(None, 10)
    found = await app[REFUSALS].get(refusal.id)
    assert found is not None and found[1] is not None
    body = await app[RECORDER].sealer.open(refusal.worker, refusal.doc_id, refusal.rev, found[1])
    return found[1].key_ref, body


async def test_key_rotation_reseals_refused_bodies(config: Config) -> None:
    async with running(config) as client:
        await Api(client).bulk([report("bad-1", 50)], user="alice")
        before_ref, before = await _opened_body(client)
    assert cli.main(["keys", "rotate", "--all", "--data-dir", str(config.data_dir)]) == 0
    async with running(config) as client:
        after_ref, after = await _opened_body(client)
    assert after == before and MARKER.encode() in after
    assert (before_ref, after_ref) == (":1", ":2")
