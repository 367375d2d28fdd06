"""A real PouchDB 9 client replicating with a real ``fieldsync serve`` process.

Issue 2, point 7: each test is one thing a CHW's offline app does. The place tree and
users come from the ``org`` fixture (see conftest.py): alice works in area-a1, bob in
area-b1, sam supervises district-a and reads district-b.
"""

from __future__ import annotations

import base64
import os

import pytest
from pouch import PouchDriver, PouchError
from realserver import (
    Admin,
    ServerProcess,
    enroll,
    ids,
    inline_attachment,
    local_ids,
    make_docs,
    pull,
    push,
)

WAIT_MS = 20_000


WORKERS = ("alice", "bob", "sam")  # every non-admin phone is enrolled (supervisors too)


@pytest.fixture(autouse=True)
async def enrolled_phones(org: ServerProcess, admin: Admin) -> None:
    """Every worker and supervisor syncs from an enrolled phone, as the server requires."""
    for number, worker in enumerate(WORKERS):
        await enroll(org, admin, worker, number)


async def test_pull_brings_exactly_the_workers_set(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    mine, shared = make_docs("area-a1", 5, "a1"), make_docs(None, 2, "form")
    others = make_docs("area-a2", 3, "a2") + make_docs("area-b1", 4, "b1")
    await admin.bulk_docs(others + mine + shared)
    result = await pull(pouch, org, "alice", "dev")
    assert result["status"] == "complete"
    assert result["docs_written"] == len(mine + shared)
    assert await local_ids(pouch, "dev") == ids(mine + shared)


async def test_pull_again_is_a_noop_then_brings_only_the_changes(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    rows = await admin.bulk_docs(make_docs("area-a1", 10, "a1"))
    rev = {row["id"]: row["rev"] for row in rows}
    await pull(pouch, org, "alice", "dev")
    noop = await pull(pouch, org, "alice", "dev")
    assert (noop["docs_read"], noop["docs_written"], noop["changes_received"]) == (0, 0, 0)
    await admin.bulk_docs(
        [
            {"_id": "a1-000", "_rev": rev["a1-000"], "place": "area-a1", "n": 100},
            {"_id": "a1-001", "_rev": rev["a1-001"], "place": "area-a1", "n": 101},
            {"_id": "a1-002", "_rev": rev["a1-002"], "_deleted": True},
            *make_docs("area-a1", 1, "new"),
        ]
    )
    incremental = await pull(pouch, org, "alice", "dev")
    assert (incremental["docs_read"], incremental["changes_received"]) == (4, 4)
    assert (await pouch.call("get", db="dev", docid="a1-001"))["n"] == 101
    expected = ids(make_docs("area-a1", 10, "a1") + make_docs("area-a1", 1, "new")) - {"a1-002"}
    assert await local_ids(pouch, "dev") == expected


async def test_push_writes_new_and_edited_docs_to_the_server(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    visits = make_docs("area-a1", 5, "visit")
    await pouch.call("bulk_docs", db="dev", docs=visits)
    doc = await pouch.call("get", db="dev", docid="visit-000")
    await pouch.call("put", db="dev", doc={**doc, "n": 42})
    result = await push(pouch, org, "alice", "dev")
    assert (result["docs_written"], result["doc_write_failures"]) == (5, 0)
    status, body = await admin.get("visit-000")
    assert (status, body["n"], body["_rev"][:2]) == (200, 42, "2-")
    await pull(pouch, org, "alice", "other-device")
    assert await local_ids(pouch, "other-device") == ids(visits)


async def test_deletion_on_the_device_reaches_the_server(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    await admin.bulk_docs(make_docs("area-a1", 2, "a1"))
    await pull(pouch, org, "alice", "dev")
    doc = await pouch.call("get", db="dev", docid="a1-000")
    await pouch.call("remove", db="dev", docid="a1-000", rev=doc["_rev"])
    result = await push(pouch, org, "alice", "dev")
    assert (result["docs_written"], result["doc_write_failures"]) == (1, 0)
    status, body = await admin.get("a1-000")
    assert (status, body.get("reason")) == (404, "deleted")
    await pull(pouch, org, "alice", "other-device")
    assert await local_ids(pouch, "other-device") == {"a1-001"}


async def test_live_sync_carries_changes_both_ways(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    started = await pouch.call("sync_start", local="dev", remote=org.remote("alice"))
    handle = started["handle"]
    await pouch.call("sync_wait", handle=handle, until={"event": "paused"}, timeout_ms=WAIT_MS)
    await admin.put({"_id": "from-server", "place": "area-a1"})
    until = {"local_has": "from-server"}
    await pouch.call("sync_wait", handle=handle, until=until, timeout_ms=WAIT_MS)
    await pouch.call("put", db="dev", doc={"_id": "from-device", "place": "area-a1"})
    await pouch.call("sync_wait", handle=handle, until={"pushed": 1}, timeout_ms=WAIT_MS)
    status, _ = await admin.get("from-device")
    assert status == 200
    stopped = await pouch.call("sync_cancel", handle=handle)
    assert not [e for e in stopped["events"] if e["event"] in ("error", "denied")]


async def test_live_sync_catches_up_after_the_server_was_down(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    options = {"back_off_ms": 500}
    started = await pouch.call(
        "sync_start", local="dev", remote=org.remote("alice"), options=options
    )
    handle = started["handle"]
    await pouch.call("sync_wait", handle=handle, until={"event": "paused"}, timeout_ms=WAIT_MS)
    org.kill()
    await pouch.call("put", db="dev", doc={"_id": "offline-visit", "place": "area-a1"})
    org.start()
    await admin.put({"_id": "while-away", "place": "area-a1"})
    await pouch.call("sync_wait", handle=handle, until={"pushed": 1}, timeout_ms=WAIT_MS)
    until = {"local_has": "while-away"}
    await pouch.call("sync_wait", handle=handle, until=until, timeout_ms=WAIT_MS)
    assert (await admin.get("offline-visit"))[0] == 200
    await pouch.call("sync_cancel", handle=handle)


async def test_200kb_attachment_travels_both_ways_byte_for_byte(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    down, up = os.urandom(200 * 1024), os.urandom(200 * 1024)
    attachments = {"photo.jpg": inline_attachment(down)}
    await admin.put({"_id": "photo-server", "place": "area-a1", "_attachments": attachments})
    await pull(pouch, org, "alice", "dev")
    got = await pouch.call("get_attachment", db="dev", docid="photo-server", name="photo.jpg")
    assert base64.b64decode(got) == down
    put = await pouch.call("put", db="dev", doc={"_id": "photo-device", "place": "area-a1"})
    encoded = base64.b64encode(up).decode()
    await pouch.call(
        "put_attachment",
        db="dev",
        docid="photo-device",
        name="card.jpg",
        rev=put["rev"],
        data=encoded,
        content_type="image/jpeg",
    )
    result = await push(pouch, org, "alice", "dev")
    assert (result["docs_written"], result["doc_write_failures"]) == (1, 0)
    assert await admin.get_attachment("photo-device", "card.jpg") == up
    remote = org.remote("alice")
    direct = await pouch.call("get_attachment", db=remote, docid="photo-device", name="card.jpg")
    assert base64.b64decode(direct) == up


async def test_conflicting_edits_on_two_devices_converge(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    devices = ("phone", "chromebook")
    await admin.put({"_id": "patient-1", "place": "area-a1", "name": "Jane"})
    for device in devices:
        await pull(pouch, org, "alice", device)
    for device in devices:  # both edit offline
        doc = await pouch.call("get", db=device, docid="patient-1")
        await pouch.call("put", db=device, doc={**doc, "name": f"Jane ({device})"})
    for device in devices:
        pushed = await push(pouch, org, "alice", device)
        assert (pushed["docs_written"], pushed["doc_write_failures"]) == (1, 0)
    for device in devices:
        await pull(pouch, org, "alice", device)
    options = {"conflicts": True}
    views = [await pouch.call("get", db=d, docid="patient-1", options=options) for d in devices]
    views.append(
        await pouch.call("get", db=org.remote("alice"), docid="patient-1", options=options)
    )
    status, admin_view = await admin.get("patient-1", conflicts="true")
    assert status == 200
    seen = {
        (view["_rev"], tuple(sorted(view.get("_conflicts", [])))) for view in [*views, admin_view]
    }
    assert len(seen) == 1, seen
    [(winner, conflicts)] = seen
    assert winner.startswith("2-") and len(conflicts) == 1


async def test_interrupted_pull_resumes_from_its_checkpoint(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    records = make_docs("area-a1", 60, "rec")
    await admin.bulk_docs(records)
    first = await pull(pouch, org, "alice", "dev", batch_size=5, cancel_after_docs=20)
    assert first["status"] == "cancelled"
    assert 20 <= first["docs_written"] < 60
    second = await pull(pouch, org, "alice", "dev", batch_size=5)
    assert second["status"] == "complete"
    remaining = 60 - first["docs_written"]
    assert (second["docs_read"], second["changes_received"]) == (remaining, remaining)
    assert await local_ids(pouch, "dev") == ids(records)


async def test_two_workers_see_disjoint_sets_and_their_supervisor_both(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    a1, a2 = make_docs("area-a1", 4, "a1"), make_docs("area-a2", 2, "a2")
    b1 = make_docs("area-b1", 3, "b1")
    await admin.bulk_docs(a1 + b1 + a2)
    for user in ("alice", "bob", "sam"):
        await pull(pouch, org, user, f"{user}-device")
    assert await local_ids(pouch, "alice-device") == ids(a1)
    assert await local_ids(pouch, "bob-device") == ids(b1)
    assert await local_ids(pouch, "sam-device") == ids(a1 + a2 + b1)


async def test_scope_growth_brings_older_docs_of_the_new_place(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    older_a2, a1 = make_docs("area-a2", 4, "a2"), make_docs("area-a1", 3, "a1")
    await admin.bulk_docs(older_a2 + a1)
    await pull(pouch, org, "alice", "dev")
    later = make_docs("area-a1", 2, "later")
    await admin.bulk_docs(later)
    await pull(pouch, org, "alice", "dev")  # the checkpoint is now past every a2 doc
    assert await local_ids(pouch, "dev") == ids(a1 + later)
    org.cli("user", "set-places", "alice", "--place", "area-a1", "--place", "area-a2")
    grown = await pull(pouch, org, "alice", "dev")
    assert (grown["docs_written"], grown["doc_write_failures"]) == (4, 0)
    assert await local_ids(pouch, "dev") == ids(a1 + later + older_a2)


async def test_a_doc_outside_the_set_cannot_be_read(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    attachment = {"note.txt": inline_attachment(b"secret", "text/plain")}
    await admin.put({"_id": "b1-secret", "place": "area-b1", "_attachments": attachment})
    remote = org.remote("alice")
    for op, args in [("get", {}), ("get_attachment", {"name": "note.txt"})]:
        with pytest.raises(PouchError) as missing:
            await pouch.call(op, db=remote, docid="b1-secret", **args)
        assert missing.value.status == 404, op
    try:
        options = {"open_revs": "all"}
        leaves = await pouch.call("get", db=remote, docid="b1-secret", options=options)
    except PouchError as missing:
        assert missing.status == 404
    else:
        assert not [leaf for leaf in leaves if "ok" in leaf], leaves
    fetched = await pouch.call("bulk_get", db=remote, docs=[{"id": "b1-secret"}])
    assert not [doc for row in fetched["results"] for doc in row["docs"] if "ok" in doc]


async def test_a_doc_outside_the_set_is_never_listed_nor_pulled(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    await admin.bulk_docs([{"_id": "a1-mine", "place": "area-a1"}])
    await admin.bulk_docs([{"_id": "b1-secret", "place": "area-b1"}])
    remote, both = org.remote("alice"), ["b1-secret", "a1-mine"]
    rows = await pouch.call("all_docs", db=remote, options={"keys": both})
    assert [row.get("error") for row in rows["rows"]] == ["not_found", None]
    listed = await pouch.call("all_docs", db=remote)
    assert [row["id"] for row in listed["rows"]] == ["a1-mine"]
    changes = await pouch.call("changes", db=remote, options={"doc_ids": both})
    assert [row["id"] for row in changes["results"]] == ["a1-mine"]
    await pull(pouch, org, "alice", "dev", doc_ids=both)
    assert await local_ids(pouch, "dev") == {"a1-mine"}


async def test_push_outside_the_capture_scope_is_refused_per_document(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    docs = [
        {"_id": "mine", "place": "area-a1"},
        {"_id": "theirs", "place": "area-b1"},
        {"_id": "a-form", "type": "form"},  # shared documents are written by admins only
    ]
    await pouch.call("bulk_docs", db="dev", docs=docs)
    result = await push(pouch, org, "alice", "dev")
    assert (result["docs_written"], result["doc_write_failures"]) == (1, 2)
    refused = {(error["id"], error["name"]) for error in result["errors"]}
    assert refused == {("theirs", "forbidden"), ("a-form", "forbidden")}
    assert [(await admin.get(docid))[0] for docid in ("mine", "theirs", "a-form")] == [
        200,
        404,
        404,
    ]


async def test_supervisor_reads_but_cannot_write_a_read_only_place(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    docs = [{"_id": "in-a2", "place": "area-a2"}, {"_id": "in-b1", "place": "area-b1"}]
    await pouch.call("bulk_docs", db="dev", docs=docs)
    result = await push(pouch, org, "sam", "dev")
    assert (result["docs_written"], result["doc_write_failures"]) == (1, 1)
    assert [(e["id"], e["name"]) for e in result["errors"]] == [("in-b1", "forbidden")]
    assert [(await admin.get(docid))[0] for docid in ("in-a2", "in-b1")] == [200, 404]


async def test_worker_cannot_move_a_doc_out_of_the_capture_scope(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    rev = await admin.put({"_id": "patient-2", "place": "area-a1", "name": "Ann"})
    await pull(pouch, org, "alice", "dev")
    doc = await pouch.call("get", db="dev", docid="patient-2")
    await pouch.call("put", db="dev", doc={**doc, "place": "area-b1"})
    result = await push(pouch, org, "alice", "dev")
    assert (result["docs_written"], result["doc_write_failures"]) == (0, 1)
    status, body = await admin.get("patient-2")
    assert (status, body["_rev"], body["place"]) == (200, rev, "area-a1")


async def test_doc_moved_out_of_the_set_sends_no_later_revision(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    rev1 = await admin.put({"_id": "patient-9", "place": "area-a1", "name": "Jane"})
    await pull(pouch, org, "alice", "dev")
    rev2 = await admin.put({"_id": "patient-9", "_rev": rev1, "place": "area-b1", "name": "J."})
    rev3 = await admin.put({"_id": "patient-9", "_rev": rev2, "place": "area-b1", "name": "J.."})
    await pull(pouch, org, "alice", "dev")
    options = {"open_revs": "all"}
    leaves = await pouch.call("get", db="dev", docid="patient-9", options=options)
    assert [leaf["ok"]["_rev"] for leaf in leaves] == [rev1]
    with pytest.raises(PouchError) as gone:
        await pouch.call("get", db=org.remote("alice"), docid="patient-9")
    assert gone.value.status == 404
    await pull(pouch, org, "bob", "bob-device")
    moved = await pouch.call("get", db="bob-device", docid="patient-9")
    assert (moved["_rev"], moved["name"]) == (rev3, "J..")


async def test_wrong_password_is_refused(pouch: PouchDriver, org: ServerProcess) -> None:
    wrong = org.remote("alice", password="not-her-password")
    with pytest.raises(PouchError) as refused:
        await pouch.call("replicate", source=wrong, target="dev")
    assert (refused.value.status, refused.value.name) == (401, "unauthorized")
