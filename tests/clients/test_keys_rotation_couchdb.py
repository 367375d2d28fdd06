"""Issue 11, point 4 (keys): ``fieldsync keys rotate`` and ``keys shred`` with the documents in
CouchDB, while a ``fieldsync serve`` instance keeps serving.

A real server process on a CouchDB-API server, real PouchDB pulls before and after,
a writer pushing through the server during the rotation, the command itself as an
operator runs it (its own process): killed with SIGKILL in the middle and run
again, and run twice at once.  The server and the command share the master key
file and ``FIELDSYNC_COUCHDB_URL``; the server looks for new key versions every
0.3 s (``FIELDSYNC_KEY_REFRESH_SECONDS``), the command waits three times its own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from couchdb_server import couch_request
from couchdb_server import db_path as couch_path
from pouch import PouchDriver
from realserver import DB, FIELDSYNC, ServerProcess, free_port
from shared_org import PASSWORD, PLACES, basic_auth, seed

from sync.keys import key_from_file

REFRESH = "0.3"
PHOTO = b"\x89PNG-photo-" + bytes(range(256)) * 8


@pytest.fixture
def server(tmp_path: Path, couchdb_url: str, couch_prefix: str) -> Iterator[ServerProcess]:
    data = tmp_path / "data"
    seed(data, PLACES)
    key_from_file(data / "master.key", create=True)
    env = {
        "FIELDSYNC_COUCHDB_URL": couchdb_url,
        "FIELDSYNC_COUCHDB_PREFIX": couch_prefix,
        "FIELDSYNC_REQUIRE_ENROLMENT": "0",
        "FIELDSYNC_KEY_REFRESH_SECONDS": REFRESH,
        # the places get bases (bases.py) at their first pull: what goes must go from them too
        "FIELDSYNC_COUCHDB_BASE_MIN_CHANGES": "3",
    }
    served = ServerProcess(data, free_port(), tmp_path / "server.log", env)
    served.start()
    yield served
    served.stop()


@pytest.fixture
async def pouch() -> AsyncIterator[PouchDriver]:
    driver = await PouchDriver.start()
    yield driver
    await driver.aclose()


def _keys_command(server: ServerProcess, *args: str) -> list[str]:
    return [FIELDSYNC, "keys", *args, "--data-dir", str(server.data_dir)]


def _env(server: ServerProcess, refresh: str = REFRESH) -> dict[str, str]:
    return {**os.environ, **server.env, "FIELDSYNC_KEY_REFRESH_SECONDS": refresh}


def _run(
    server: ServerProcess, *args: str, refresh: str = REFRESH
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _keys_command(server, *args),
        env=_env(server, refresh),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _seed_documents(
    session: aiohttp.ClientSession, server: ServerProcess, marker: str
) -> None:
    async with session.put(f"{server.url}/{DB}", headers=basic_auth("admin")) as resp:
        assert resp.status in (201, 412), await resp.text()
    photo = {
        "content_type": "image/png",
        "data": base64.b64encode(PHOTO + marker.encode()).decode(),
    }
    docs = [{"_id": f"a1-{n}", "place": "area-a1", "note": f"{marker} a1 {n}"} for n in range(12)]
    docs += [{"_id": f"b1-{n}", "place": "area-b1", "note": f"{marker} b1 {n}"} for n in range(6)]
    docs += [{"_id": "form-p", "title": f"shared {marker}"}]
    docs[0]["_attachments"] = {"photo.png": photo}
    docs[-2]["_attachments"] = {"photo.png": photo}
    big = {"_id": "a1-big", "place": "area-a1", "note": marker + "x" * 70_000}  # not inline
    async with session.post(
        f"{server.url}/{DB}/_bulk_docs", json={"docs": [*docs, big]}, headers=basic_auth("admin")
    ) as resp:
        answer = await resp.json()
        assert resp.status == 201 and all(r.get("ok") for r in answer), answer
    # An edit, so that documents have more than one revision (the old body is kept too).
    async with session.get(f"{server.url}/{DB}/a1-1", headers=basic_auth("admin")) as resp:
        doc = await resp.json()
    doc["note"] += " edited"
    async with session.put(
        f"{server.url}/{DB}/a1-1", json=doc, headers=basic_auth("admin")
    ) as resp:
        assert resp.status == 201, await resp.text()


async def _put(session: aiohttp.ClientSession, server: ServerProcess, doc: dict[str, Any]) -> str:
    """``doc`` written as admin; its new revision."""
    where = f"{server.url}/{DB}/{doc['_id']}"
    async with session.put(where, json=doc, headers=basic_auth("admin")) as resp:
        answer = await resp.json()
        assert resp.status == 201, answer
    return str(answer["rev"])


async def _pulled(pouch: PouchDriver, server: ServerProcess, name: str) -> dict[str, Any]:
    """Everything sam's PouchDB holds after a pull from scratch: documents and attachments."""
    await pouch.call("replicate", source=server.remote("sam", PASSWORD), target=name, options={})
    rows = await pouch.call(
        "all_docs", db=name, options={"include_docs": True, "attachments": True}
    )
    found = {}
    for row in rows["rows"]:
        doc = row["doc"]
        for attachment in doc.get("_attachments", {}).values():
            attachment.pop("revpos", None)
        found[row["id"]] = doc
    return found


async def _writer(
    session: aiohttp.ClientSession, server: ServerProcess, stop: asyncio.Event, marker: str
) -> list[str]:
    """Push a document at a time as alice, and read an older one and its photo back, until
    told to stop; the ids the server took."""
    written, number = [], 0
    while not stop.is_set():
        older = f"{server.url}/{DB}/a1-{number % 12}"
        async with session.get(older, headers=basic_auth("alice")) as resp:
            assert resp.status == 200 and marker in (await resp.json())["note"]
        async with session.get(
            f"{server.url}/{DB}/a1-0/photo.png", headers=basic_auth("alice")
        ) as resp:
            assert resp.status == 200 and (await resp.read()).startswith(PHOTO)
        doc = {"_id": f"during-{number}", "place": "area-a1", "note": f"written during {number}"}
        async with session.post(
            f"{server.url}/{DB}/_bulk_docs", json={"docs": [doc]}, headers=basic_auth("alice")
        ) as resp:
            answer = await resp.json()
            assert resp.status == 201 and answer[0].get("ok"), answer
        written.append(doc["_id"])
        number += 1
        await asyncio.sleep(0.05)
    return written


async def _until_based(couchdb_url: str, prefix: str, place: str) -> None:
    """``place`` has a base: its pointer names chunks (made after a first pull)."""
    deadline = time.monotonic() + 30
    where = couch_path(f"{prefix}{DB}$data") + "/" + quote(f"b:{place}", safe="")
    while True:
        status, pointer = couch_request(couchdb_url, "GET", where)
        if status == 200 and pointer.get("token"):
            return
        assert time.monotonic() < deadline, f"no base of {place} was made"
        await asyncio.sleep(0.2)


def _key_versions(couchdb_url: str, prefix: str) -> dict[str, list[int]]:
    status, listing = couch_request(
        couchdb_url, "GET", couch_path(prefix + "keys") + "/_all_docs?include_docs=true"
    )
    assert status == 200, listing
    found: dict[str, list[int]] = {}
    for row in listing["rows"]:
        if row["id"].startswith("dk:"):
            found.setdefault(row["doc"]["place"], []).append(int(row["doc"]["version"]))
    return {place: sorted(v) for place, v in found.items()}


def _everything_in_couchdb(couchdb_url: str, prefix: str, but: str = "") -> str:
    """Every document of every database of the deployment (``but`` one), attachments inline,
    every leaf of a document that forked (CouchDB's listing shows only the winner)."""
    _, names = couch_request(couchdb_url, "GET", "/_all_dbs")
    texts = []
    for name in names:
        if name.startswith(prefix) and name != but:
            texts += [json.dumps(leaf) for leaf in _leaves(couchdb_url, name, attachments=True)]
    return "\n".join(texts)


def _leaves(couchdb_url: str, couch_db: str, *, attachments: bool = False) -> list[Any]:
    """Every live leaf of every document of ``couch_db``."""
    inline = "&attachments=true" if attachments else ""
    where = couch_path(couch_db) + "/_all_docs?include_docs=true&conflicts=true" + inline
    status, body = couch_request(couchdb_url, "GET", where)
    assert status == 200, body
    leaves = []
    for row in body["rows"]:
        if not row["doc"].get("_conflicts"):
            leaves.append(row["doc"])
            continue
        one = couch_path(couch_db) + "/" + quote(row["id"], safe="") + "?open_revs=all" + inline
        status, found = couch_request(couchdb_url, "GET", one)
        assert status == 200, found
        leaves += [item["ok"] for item in found if "ok" in item]
    return leaves


def _refs_in_couchdb(couchdb_url: str, prefix: str) -> set[str]:
    """The key refs of every sealed body and attachment in the health database, of every
    body a meta holds, and of every body a base's chunk holds (``bases.py``), in every leaf."""
    data = _leaves(couchdb_url, f"{prefix}{DB}$data")
    refs = {d["key_ref"] for d in data if "key_ref" in d}
    held = [d.get("wb") for d in _leaves(couchdb_url, f"{prefix}{DB}")]
    held += [
        row[2].get("wb") for d in data if "rows" in d for row in json.loads(d["rows"]) if row[2]
    ]
    return refs | {wb["key_ref"] for wb in held if wb}


def _fork(couchdb_url: str, couch_db: str, doc_id: str, change: dict[str, Any]) -> None:
    """Give ``doc_id`` a losing branch: its winner with ``change``, under a first revision
    that sorts below every other (as a cluster's fork leaves behind, before it is settled)."""
    where = couch_path(couch_db)
    status, winner = couch_request(couchdb_url, "GET", f"{where}/{quote(doc_id, safe='')}")
    assert status == 200, winner
    branch = {**winner, **change, "_rev": "1-" + "0" * 32}
    body = {"docs": [branch], "new_edits": False}
    status, answer = couch_request(couchdb_url, "POST", f"{where}/_bulk_docs", body)
    assert status == 201, answer
    one = f"{where}/{quote(doc_id, safe='')}?conflicts=true"
    for _ in range(50):  # on a cluster, a read may come from a copy that has not got it yet
        status, forked = couch_request(couchdb_url, "GET", one)
        if forked.get("_conflicts"):
            break
        time.sleep(0.1)
    assert forked["_rev"] == winner["_rev"] and forked["_conflicts"] == [branch["_rev"]], forked


def _entry_naming(couchdb_url: str, prefix: str, place: str, doc_id: str) -> str:
    """The id of the first log entry of ``place`` that names ``doc_id``."""
    where = couch_path(f"{prefix}{DB}$log") + "/_all_docs?include_docs=true"
    status, body = couch_request(couchdb_url, "GET", where)
    assert status == 200, body
    for row in body["rows"]:
        if row["id"].startswith(place + "!") and doc_id in [i for i, _ in row["doc"]["ids"]]:
            return str(row["id"])
    raise AssertionError(f"no entry of {place} names {doc_id}")


async def test_rotation_while_serving_reseals_everything_and_deletes_the_old_keys(
    server: ServerProcess, pouch: PouchDriver, couchdb_url: str, couch_prefix: str
) -> None:
    marker = f"MARKER{secrets.token_hex(6)}"
    async with aiohttp.ClientSession() as session:
        await _seed_documents(session, server, marker)
        await pouch.call(
            "replicate", source=server.remote("alice", PASSWORD), target="alice", options={}
        )
        before = await _pulled(pouch, server, "before")
        assert before["a1-0"]["_attachments"]["photo.png"]["data"]
        await _until_based(couchdb_url, couch_prefix, "area-a1")
        assert _key_versions(couchdb_url, couch_prefix) == {"": [1], "area-a1": [1], "area-b1": [1]}
        # Forks a cluster can leave (a body two instances stored at once, a meta not yet
        # settled): their losing leaves hold blobs sealed under the keys that go too.
        meta = _leaves(couchdb_url, f"{couch_prefix}{DB}")
        held = next(d for d in meta if d["_id"] == "d:a1-3")["wb"]
        _fork(couchdb_url, f"{couch_prefix}{DB}$data", f"r:{held['rev']}:a1-3", {})
        _fork(couchdb_url, f"{couch_prefix}{DB}", "d:a1-3", {})
        assert "area-a1:1" in _refs_in_couchdb(couchdb_url, couch_prefix)

        stop = asyncio.Event()
        writing = asyncio.create_task(_writer(session, server, stop, marker))
        rotation = await asyncio.create_subprocess_exec(
            *_keys_command(server, "rotate", "--all"),
            env=_env(server),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        said = (await rotation.communicate())[0].decode()
        stop.set()
        written = await writing
        assert rotation.returncode == 0, said
        assert "new data keys: (shared) v2, area-a1 v2, area-b1 v2" in said, said
        assert "old data keys deleted: area-a1 v1, area-b1 v1" in said, said
        assert written, "the writer pushed nothing during the rotation"

        after = await _pulled(pouch, server, "after")
        for doc_id, doc in before.items():
            assert after[doc_id] == doc, doc_id
        for doc_id in written:  # every write made during the rotation is there and opens
            assert after[doc_id]["note"].startswith("written during")
        # alice's checkpoint still opens: her next pull starts where she left off
        again = await pouch.call(
            "replicate", source=server.remote("alice", PASSWORD), target="alice", options={}
        )
        assert again["docs_read"] == len(written), again

    assert _key_versions(couchdb_url, couch_prefix) == {
        "": [1, 2],  # kept: refused records in data dirs may be sealed under it
        "area-a1": [2],
        "area-b1": [2],
    }
    assert _refs_in_couchdb(couchdb_url, couch_prefix) <= {":2", "area-a1:2", "area-b1:2"}
    assert marker not in _everything_in_couchdb(couchdb_url, couch_prefix)
    server.cli("audit", "verify")  # the command's own chain in <prefix>audit verifies too


async def test_a_rotation_killed_half_way_finishes_when_run_again(
    server: ServerProcess, pouch: PouchDriver, couchdb_url: str, couch_prefix: str
) -> None:
    marker = f"MARKER{secrets.token_hex(6)}"
    async with aiohttp.ClientSession() as session:
        await _seed_documents(session, server, marker)
    before = await _pulled(pouch, server, "before")
    slow = subprocess.Popen(
        _keys_command(server, "rotate", "--place", "area-a1"),
        env=_env(server, refresh="20"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert slow.stdout is not None
    for line in slow.stdout:  # killed once its new key exists and it holds the lease
        if line.startswith("waiting"):
            break
    os.kill(slow.pid, signal.SIGKILL)
    slow.wait()
    slow.stdout.close()
    assert _key_versions(couchdb_url, couch_prefix)["area-a1"] == [1, 2]

    done = _run(server, "rotate", "--place", "area-a1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "old data keys deleted: area-a1 v1, area-a1 v2" in done.stdout, done.stdout
    assert _key_versions(couchdb_url, couch_prefix)["area-a1"] == [3]
    after = await _pulled(pouch, server, "after")
    assert after == before


async def test_two_rotations_at_once_one_is_refused_naming_the_holder(
    server: ServerProcess, couchdb_url: str, couch_prefix: str
) -> None:
    async with aiohttp.ClientSession() as session:
        await _seed_documents(session, server, "m")
    first = subprocess.Popen(
        _keys_command(server, "rotate", "--place", "area-b1"),
        env=_env(server, refresh="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert first.stdout is not None
    for line in first.stdout:
        if line.startswith("waiting"):
            break
    second = _run(server, "rotate", "--all")
    rest = first.stdout.read()
    first.stdout.close()
    assert first.wait() == 0, rest
    assert second.returncode != 0
    said = second.stdout + second.stderr
    assert "cannot rotate the data keys now: the lease key-rotation is held by" in said, said
    assert f"-{first.pid}-" in said and "(fieldsync keys rotate)" in said, said
    assert _key_versions(couchdb_url, couch_prefix)["area-b1"] == [2]


async def test_shredding_a_place_in_couchdb(
    server: ServerProcess, pouch: PouchDriver, couchdb_url: str, couch_prefix: str
) -> None:
    marker = f"MARKER{secrets.token_hex(6)}"
    async with aiohttp.ClientSession() as session:
        await _seed_documents(session, server, marker)
        # Written in area-a1, then moved into area-b1: area-a1's log names it, and a
        # document written there after it must still reach area-a1's phones.
        moved = {"_id": "moved-in", "place": "area-a1", "note": marker}
        moved["_rev"] = await _put(session, server, moved)
        await _put(session, server, {**moved, "place": "area-b1"})
        await _put(session, server, {"_id": "a1-after", "place": "area-a1"})
        await pouch.call(
            "replicate", source=server.remote("sam", PASSWORD), target="sam", options={}
        )
        await _until_based(couchdb_url, couch_prefix, "area-b1")
        # Forks a cluster can leave (two instances took one log position, or wrote one
        # meta at once): a losing branch of an entry of each place, and of a meta, that
        # name documents the shred takes away.
        log_db = f"{couch_prefix}{DB}$log"
        a1_entry = _entry_naming(couchdb_url, couch_prefix, "area-a1", "moved-in")
        _fork(couchdb_url, log_db, a1_entry, {"ids": [["moved-in", 1]]})
        b1_entry = _entry_naming(couchdb_url, couch_prefix, "area-b1", "b1-0")
        _fork(couchdb_url, log_db, b1_entry, {"ids": [["b1-3", 1], ["b1-0", 1]]})
        _fork(couchdb_url, f"{couch_prefix}{DB}", "d:b1-3", {})

        refused = _run(server, "shred", "area-b1", "--confirm", "area-b2")
        assert refused.returncode != 0
        assert "repeat the place's id, --confirm area-b1" in refused.stdout + refused.stderr
        done = _run(server, "shred", "area-b1", "--confirm", "area-b1")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "place area-b1 shredded: 1 data keys, 7 documents" in done.stdout, done.stdout
        assert "1 attachments" in done.stdout, done.stdout

        for doc_id in ("b1-0", "b1-5"):
            async with session.get(f"{server.url}/{DB}/{doc_id}", headers=basic_auth("admin")) as r:
                assert r.status == 404
        async with session.get(f"{server.url}/{DB}/a1-3", headers=basic_auth("admin")) as r:
            assert r.status == 200 and marker in (await r.json())["note"]
        # A device that synced before goes on syncing (the emptied log entries are skipped).
        again = await pouch.call(
            "replicate", source=server.remote("sam", PASSWORD), target="sam", options={}
        )
        assert again["ok"], again
        fresh = await _pulled(pouch, server, "fresh")
        assert not [i for i in fresh if i.startswith("b1-")]
        assert "moved-in" not in fresh
        assert "a1-0" in fresh and "a1-after" in fresh  # past the entry that named moved-in
        # The place lives on: what is written there now is sealed under its fresh key.
        later = {"_id": "later-b1", "place": "area-b1", "note": "after the shredding"}
        async with session.put(
            f"{server.url}/{DB}/later-b1", json=later, headers=basic_auth("admin")
        ) as r:
            assert r.status == 201, await r.text()
        async with session.get(f"{server.url}/{DB}/later-b1", headers=basic_auth("admin")) as r:
            assert (await r.json())["note"] == "after the shredding"

    # The shredded version is gone; a fresh one, that sealed nothing before, takes new data.
    assert _key_versions(couchdb_url, couch_prefix)["area-b1"] == [2]
    # No meta, body, attachment or log entry names it; the audit trail (append-only, as in
    # the embedded store) still records who wrote and read it.
    everything = _everything_in_couchdb(couchdb_url, couch_prefix, but=couch_prefix + "audit")
    assert "b1-3" not in everything
    assert "moved-in" not in everything  # area-a1's entry names it no more
    assert "area-b1:1" not in _refs_in_couchdb(couchdb_url, couch_prefix)
    server.cli("audit", "verify")
