"""Single documents over HTTP: PUT/GET/DELETE, revisions, tombstones, conflicts, attachments.

Each answer is compared with CouchDB's documented one:
https://docs.couchdb.org/en/stable/api/document/common.html and
https://docs.couchdb.org/en/stable/api/document/attachments.html
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from sync_fixtures import Api, Client, as_user

from sync.appkeys import STORE

DOC = "/health/p1"


async def put(api: Api, doc_id: str = "p1", user: str = "admin", **fields: Any) -> str:
    status, body = await api.call("PUT", f"/health/{doc_id}", user, {"place": "area-a1", **fields})
    assert status == 201, body
    return str(body["rev"])


async def conflicted(api: Api) -> tuple[str, str, str]:
    """p1 with two branches 2-aaa (loser) and 2-bbb (winner) under 1-root, and a deleted 2-ccc."""
    docs = [
        {"_id": "p1", "_rev": f"2-{h}", "place": "area-a1", "v": h, "_deleted": h == "ccc",
         "_revisions": {"start": 2, "ids": [h, "root"]}}
        for h in ("aaa", "bbb", "ccc")
    ]  # fmt: skip
    assert await api.bulk(docs, new_edits=False) == []
    return "2-aaa", "2-bbb", "2-ccc"


def md5(data: bytes) -> str:
    return "md5-" + base64.b64encode(hashlib.md5(data).digest()).decode()


# -- create, read, update, delete ------------------------------------------------------
async def test_put_then_get(api: Api) -> None:
    rev = await put(api, name="Jane")
    assert rev.startswith("1-")
    status, doc = await api.call("GET", DOC)
    assert status == 200
    assert doc == {"_id": "p1", "_rev": rev, "place": "area-a1", "name": "Jane"}


async def test_update_with_the_current_rev(api: Api) -> None:
    rev = await put(api)
    new = await put(api, _rev=rev, name="Jane")
    assert new.startswith("2-")
    assert (await api.call("GET", DOC))[1]["_rev"] == new


async def test_rev_in_query_or_if_match(api: Api, client: Client) -> None:
    rev = await put(api)
    status, body = await api.call("PUT", DOC, body={"place": "area-a1"}, rev=rev)
    assert status == 201
    headers = {**as_user("admin"), "If-Match": f'"{body["rev"]}"'}
    response = await client.put(DOC, json={"place": "area-a1", "x": 1}, headers=headers)
    assert response.status == 201


@pytest.mark.parametrize(
    "body",
    [
        {"place": "area-a1"},  # no rev on an existing document
        {"place": "area-a1", "_rev": "1-0123456789abcdef"},  # stale rev
    ],
)
async def test_conflicting_puts_are_409(api: Api, body: dict[str, Any]) -> None:
    await put(api)
    status, answer = await api.call("PUT", DOC, body=body)
    assert status == 409
    assert answer == {"error": "conflict", "reason": "Document update conflict."}


async def test_stale_rev_after_update_is_409(api: Api) -> None:
    first = await put(api)
    await put(api, _rev=first)
    assert (await api.call("PUT", DOC, body={"place": "area-a1", "_rev": first}))[0] == 409


async def test_get_missing_is_404(api: Api) -> None:
    assert await api.call("GET", "/health/nope") == (
        404,
        {"error": "not_found", "reason": "missing"},
    )


async def test_delete_leaves_a_tombstone(api: Api) -> None:
    rev = await put(api)
    status, body = await api.call("DELETE", DOC, rev=rev)
    assert status == 200 and body["ok"] and body["rev"].startswith("2-")
    assert await api.call("GET", DOC) == (404, {"error": "not_found", "reason": "deleted"})
    status, tomb = await api.call("GET", DOC, rev=body["rev"])
    assert status == 200 and tomb["_deleted"] is True


async def test_delete_needs_the_current_rev(api: Api) -> None:
    await put(api)
    assert (await api.call("DELETE", DOC))[0] == 409
    assert (await api.call("DELETE", DOC, rev="1-0123456789abcdef"))[0] == 409


async def test_recreating_a_deleted_document_continues_its_tree(api: Api) -> None:
    rev = await put(api)
    await api.call("DELETE", DOC, rev=rev)
    again = await put(api, name="back")
    assert again.startswith("3-")
    status, doc = await api.call("GET", DOC, revs="true")
    assert status == 200 and doc["name"] == "back"
    assert len(doc["_revisions"]["ids"]) == 3


async def test_post_generates_an_id(api: Api) -> None:
    status, body = await api.call("POST", "/health", body={"place": "area-a1"})
    assert status == 201 and body["ok"] and len(body["id"]) >= 16
    assert (await api.call("GET", f"/health/{body['id']}"))[0] == 200


async def test_post_to_db_with_trailing_slash(api: Api) -> None:
    status, body = await api.call("POST", "/health/", body={"_id": "given", "place": "area-a1"})
    assert status == 201 and body["id"] == "given"


async def test_put_body_id_must_match_url(api: Api) -> None:
    status, body = await api.call("PUT", DOC, body={"_id": "other", "place": "area-a1"})
    assert status == 400 and body["error"] == "bad_request"


# -- reading revisions ---------------------------------------------------------------
async def test_get_an_older_rev(api: Api) -> None:
    first = await put(api, v=1)
    await put(api, _rev=first, v=2)
    status, doc = await api.call("GET", DOC, rev=first)
    assert status == 200 and doc["v"] == 1 and doc["_rev"] == first


async def test_get_an_unknown_rev_is_404(api: Api) -> None:
    await put(api)
    assert (await api.call("GET", DOC, rev="1-0123456789abcdef"))[0] == 404


async def test_revs_true_gives_the_history(api: Api) -> None:
    revs = [await put(api)]
    for _ in range(2):
        revs.append(await put(api, _rev=revs[-1], n=len(revs)))
    doc = (await api.call("GET", DOC, revs="true"))[1]
    assert doc["_revisions"] == {
        "start": 3,
        "ids": [r.split("-", 1)[1] for r in reversed(revs)],
    }


async def test_revs_info(api: Api) -> None:
    first = await put(api)
    second = await put(api, _rev=first, n=2)
    doc = (await api.call("GET", DOC, revs_info="true"))[1]
    assert doc["_revs_info"] == [
        {"rev": second, "status": "available"},
        {"rev": first, "status": "available"},
    ]


async def test_conflicts_and_deleted_conflicts(api: Api) -> None:
    loser, winner, deleted = await conflicted(api)
    doc = (await api.call("GET", DOC, conflicts="true", deleted_conflicts="true"))[1]
    assert doc["_rev"] == winner and doc["v"] == "bbb"
    assert doc["_conflicts"] == [loser]
    assert doc["_deleted_conflicts"] == [deleted]
    plain = (await api.call("GET", DOC))[1]
    assert "_conflicts" not in plain and "_deleted_conflicts" not in plain


async def test_open_revs_all_returns_every_leaf(api: Api) -> None:
    await conflicted(api)
    status, entries = await api.call("GET", DOC, open_revs="all")
    assert status == 200
    assert sorted(e["ok"]["_rev"] for e in entries) == ["2-aaa", "2-bbb", "2-ccc"]
    deleted = next(e["ok"] for e in entries if e["ok"]["_rev"] == "2-ccc")
    assert deleted["_deleted"] is True


async def test_open_revs_list_marks_missing_revs(api: Api) -> None:
    await conflicted(api)
    wanted = json.dumps(["2-aaa", "9-zzz"])
    status, entries = await api.call("GET", DOC, open_revs=wanted, revs="true")
    assert status == 200
    assert entries[1] == {"missing": "9-zzz"}
    assert entries[0]["ok"]["_revisions"] == {"start": 2, "ids": ["aaa", "root"]}


async def test_open_revs_latest_follows_to_the_leaf(api: Api) -> None:
    first = await put(api)
    second = await put(api, _rev=first, n=2)
    wanted = json.dumps([first])
    entries = (await api.call("GET", DOC, open_revs=wanted, latest="true"))[1]
    assert [e["ok"]["_rev"] for e in entries] == [second]
    plain = (await api.call("GET", DOC, open_revs=wanted))[1]
    assert [e["ok"]["_rev"] for e in plain] == [first]


async def test_open_revs_bad_value_is_400(api: Api) -> None:
    await put(api)
    assert (await api.call("GET", DOC, open_revs="[1, 2]"))[0] == 400


# -- attachments ---------------------------------------------------------------------
async def test_standalone_attachment_put_get_delete(api: Api, client: Client) -> None:
    rev = await put(api)
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    headers = {**as_user("admin"), "Content-Type": "image/png"}
    response = await client.put(f"{DOC}/photo.png?rev={rev}", data=data, headers=headers)
    assert response.status == 201, await response.text()
    new_rev = (await response.json())["rev"]
    got = await client.get(f"{DOC}/photo.png", headers=as_user("admin"))
    assert await got.read() == data and got.content_type == "image/png"
    stub = (await api.call("GET", DOC))[1]["_attachments"]["photo.png"]
    assert stub == {
        "content_type": "image/png", "digest": md5(data), "length": len(data),
        "revpos": 2, "stub": True,
    }  # fmt: skip
    status, body = await api.call("DELETE", f"{DOC}/photo.png", rev=new_rev)
    assert status == 200 and body["rev"].startswith("3-")
    assert (await api.call("GET", f"{DOC}/photo.png"))[0] == 404


async def test_attachment_put_needs_the_current_rev(client: Client, api: Api) -> None:
    await put(api)
    response = await client.put(f"{DOC}/a.txt", data=b"x", headers=as_user("admin"))
    assert response.status == 409


async def test_attachment_put_creates_a_document(client: Client) -> None:
    headers = {**as_user("admin"), "Content-Type": "text/plain"}
    response = await client.put("/health/shared-note/a.txt", data=b"hello", headers=headers)
    assert response.status == 201
    got = await client.get("/health/shared-note/a.txt", headers=as_user("admin"))
    assert await got.read() == b"hello"


async def test_attachments_true_inlines_data(api: Api) -> None:
    data = b"hello world"
    att = {"content_type": "text/plain", "data": base64.b64encode(data).decode()}
    await put(api, _attachments={"note.txt": att})
    doc = (await api.call("GET", DOC, attachments="true"))[1]
    inline = doc["_attachments"]["note.txt"]
    assert base64.b64decode(inline["data"]) == data and "stub" not in inline
    assert inline["digest"] == md5(data) and inline["revpos"] == 1


async def test_attachment_survives_an_edit_as_a_stub(api: Api, client: Client) -> None:
    att = {"content_type": "text/plain", "data": base64.b64encode(b"kept").decode()}
    rev = await put(api, _attachments={"a.txt": att})
    stubs = (await api.call("GET", DOC))[1]["_attachments"]
    await put(api, _rev=rev, _attachments=stubs, edited=True)
    got = await client.get(f"{DOC}/a.txt", headers=as_user("admin"))
    assert await got.read() == b"kept"
    assert (await api.call("GET", DOC))[1]["_attachments"]["a.txt"]["revpos"] == 1


async def test_missing_attachment_is_404(api: Api) -> None:
    await put(api)
    status, body = await api.call("GET", f"{DOC}/nothing.bin")
    assert status == 404 and body["error"] == "not_found"


async def test_attachment_name_with_a_slash(api: Api, client: Client) -> None:
    rev = await put(api)
    headers = {**as_user("admin"), "Content-Type": "text/plain"}
    url = f"{DOC}/dir%2Fa.txt?rev={rev}"
    assert (await client.put(url, data=b"deep", headers=headers)).status == 201
    got = await client.get(f"{DOC}/dir%2Fa.txt", headers=as_user("admin"))
    assert await got.read() == b"deep"


async def test_rev_in_query_and_body_must_agree(api: Api) -> None:
    rev = await put(api)
    body = {"place": "area-a1", "_rev": "1-0123456789abcdef"}
    status, answer = await api.call("PUT", DOC, body=body, rev=rev)
    assert status == 400 and answer["error"] == "bad_request"


async def test_deleting_the_winner_promotes_the_conflict(api: Api) -> None:
    loser, winner, _ = await conflicted(api)
    assert (await api.call("DELETE", DOC, rev=winner))[0] == 200
    doc = (await api.call("GET", DOC, conflicts="true"))[1]
    assert doc["_rev"] == loser and "_conflicts" not in doc


async def test_attachment_of_an_older_revision(api: Api, client: Client) -> None:
    att = {"content_type": "text/plain", "data": base64.b64encode(b"v1").decode()}
    first = await put(api, _attachments={"a.txt": att})
    att2 = {"content_type": "text/plain", "data": base64.b64encode(b"v2").decode()}
    await put(api, _rev=first, _attachments={"a.txt": att2})
    old = await client.get(f"{DOC}/a.txt?rev={first}", headers=as_user("admin"))
    new = await client.get(f"{DOC}/a.txt", headers=as_user("admin"))
    assert (await old.read(), await new.read()) == (b"v1", b"v2")


async def test_a_write_that_conflicts_leaves_no_attachment_behind(api: Api, client: Client) -> None:
    await api.bulk([{"_id": "a", "place": "area-a1"}])
    data = b"orphan scan"
    stale = {
        "_id": "a",
        "place": "area-a1",
        "_attachments": {
            "scan.txt": {"content_type": "text/plain", "data": base64.b64encode(data).decode()}
        },
    }
    [result] = await api.bulk([stale])  # no _rev: a conflict
    assert result["error"] == "conflict"
    digest = "md5-" + base64.b64encode(hashlib.md5(data).digest()).decode()
    rows = await client.app[STORE].read(
        lambda c: c.execute("SELECT count(*) FROM attachments WHERE digest=?", (digest,)).fetchone()
    )
    assert rows == (0,)
