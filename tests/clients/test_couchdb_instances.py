"""Two fieldsync processes on one CouchDB: concurrent writers, incremental pulls, no change missed.

Issue 10, point 5.  A CouchDB cluster is eventually consistent: ``_changes`` is
at-least-once and partially ordered, and any read may come from a lagging copy.
Here 8 writers write through both instances at once, into the same places and
the same documents (new documents, updates, and replicated branches that make
conflicts), while 4 phones pull incrementally, each through the two instances
in turn.  After 20 rounds and one last pull, every phone must hold every
document of its set with the server's winner and the server's ``_conflicts``:
an incremental pull that skipped a change would leave a phone behind for good.

By default both instances use the same CouchDB (pouchdb-server in CI).  With
``FIELDSYNC_TEST_COUCHDB_URLS=url1,url2`` they use two different nodes of one
cluster, so that each instance's reads and writes are coordinated by its own node.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pouch import PouchDriver
from realserver import DB, PASSWORD, ServerProcess, free_port

from sync.keys import load_master_key

ROUNDS = 20
WRITERS = 8
SHARED_IDS = [f"shared-{n}" for n in range(6)]  # every writer edits these: conflicts
PHONES = [("alice", "alice-1"), ("alice", "alice-2"), ("sam", "sam-1"), ("sam", "sam-2")]
SET_OF = {"alice": {"area-a1"}, "sam": {"area-a1", "area-a2"}}


@pytest.fixture
def instances(
    tmp_path: Path, org_data: Path, couchdb_url: str, couch_prefix: str
) -> Iterator[list[ServerProcess]]:
    """Two servers with the same users, places and master key, on one CouchDB database
    (the data keys live in CouchDB)."""
    template = tmp_path / "template"
    shutil.copytree(org_data, template)
    load_master_key(template / "master.key", create=True)
    urls = os.environ.get("FIELDSYNC_TEST_COUCHDB_URLS", "").split(",")
    urls = [u for u in urls if u] or [couchdb_url, couchdb_url]
    with ExitStack() as stack:
        servers = []
        for number in (1, 2):
            data = tmp_path / f"data{number}"
            shutil.copytree(template, data)
            env = {
                "FIELDSYNC_COUCHDB_URL": urls[(number - 1) % len(urls)],
                "FIELDSYNC_COUCHDB_PREFIX": couch_prefix,
                "FIELDSYNC_REQUIRE_ENROLMENT": "0",
            }
            server = ServerProcess(data, free_port(), tmp_path / f"server{number}.log", env)
            server.start()
            stack.callback(server.stop)
            servers.append(server)
        yield servers


def _auth(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Writer:
    """One of the 8 writers: new documents, updates, and replicated branches."""

    def __init__(self, number: int, session: aiohttp.ClientSession) -> None:
        self.number, self.session = number, session
        self.random = random.Random(number)
        self.made = 0

    async def round(self, servers: list[ServerProcess], round_no: int) -> None:
        for step in range(2):
            server = servers[(self.number + round_no + step) % len(servers)]
            await self._one(f"{server.url}/{DB}", round_no, step)

    async def _one(self, db_url: str, round_no: int, step: int) -> None:
        place = self.random.choice(["area-a1", "area-a2"])
        docs: list[dict[str, Any]] = []
        for _ in range(2):  # new documents
            self.made += 1
            docs.append({"_id": f"w{self.number}-{self.made}", "place": place, "r": round_no})
        async with self.session.post(f"{db_url}/_bulk_docs", json={"docs": docs}) as resp:
            assert resp.status == 201, await resp.text()
        shared = self.random.choice(SHARED_IDS)
        async with self.session.get(f"{db_url}/{shared}") as resp:
            current = await resp.json() if resp.status == 200 else None
        update = {"_id": shared, "place": "area-a1", "by": self.number, "r": round_no}
        if current is not None:
            update["_rev"] = current["_rev"]
        async with self.session.put(f"{db_url}/{shared}", json=update) as resp:
            assert resp.status in (201, 409), await resp.text()  # 409: another writer was first
        if current is not None:  # a branch off the same parent, as a phone's replicator sends
            position = int(current["_rev"].split("-")[0])
            parent = current["_rev"].split("-", 1)[1]
            mine = f"w{self.number}r{round_no}s{step}"
            branch = {
                "_id": shared,
                "_rev": f"{position + 1}-{mine}",
                "_revisions": {"start": position + 1, "ids": [mine, parent]},
                "place": "area-a1",
                "branch": self.number,
            }
            body = {"docs": [branch], "new_edits": False}
            async with self.session.post(f"{db_url}/_bulk_docs", json=body) as resp:
                assert resp.status == 201, await resp.text()


async def _pull(pouch: PouchDriver, server: ServerProcess, user: str, phone: str) -> None:
    source = {"url": f"{server.url}/{DB}", "username": user, "password": PASSWORD}
    result = await pouch.call("replicate", source=source, target=phone, timeout=120)
    assert result["status"] == "complete", result
    assert result["doc_write_failures"] == 0, result


async def _truth(session: aiohttp.ClientSession, server: ServerProcess) -> dict[str, Any]:
    """Every document of the database as the server has it: winner and conflicts."""
    params = {"include_docs": "true", "conflicts": "true"}
    async with session.get(f"{server.url}/{DB}/_all_docs", params=params) as resp:
        rows = (await resp.json())["rows"]
    return {
        row["id"]: (
            row["doc"]["place"],
            row["doc"]["_rev"],
            sorted(row["doc"].get("_conflicts", [])),
        )
        for row in rows
    }


async def _held(pouch: PouchDriver, phone: str) -> dict[str, Any]:
    options = {"include_docs": True, "conflicts": True}
    rows = (await pouch.call("all_docs", db=phone, options=options))["rows"]
    return {
        row["id"]: (row["doc"]["_rev"], sorted(row["doc"].get("_conflicts", []))) for row in rows
    }


async def test_no_pull_misses_a_change_with_two_instances_and_concurrent_writers(
    instances: list[ServerProcess], pouch: PouchDriver
) -> None:
    async with aiohttp.ClientSession(headers=_auth("admin")) as session:
        writers = [Writer(n, session) for n in range(WRITERS)]
        for round_no in range(ROUNDS):
            pulls = [
                _pull(pouch, instances[(i + round_no) % 2], user, phone)
                for i, (user, phone) in enumerate(PHONES)
            ]
            await asyncio.gather(*(w.round(instances, round_no) for w in writers), *pulls)
        for i, (user, phone) in enumerate(PHONES):  # the writers have stopped: one last pull
            await _pull(pouch, instances[i % 2], user, phone)
        truth = await _truth(session, instances[0])
    assert len(truth) == WRITERS * ROUNDS * 2 * 2 + len(SHARED_IDS)
    assert any(conflicts for _, _, conflicts in truth.values()), "the writers made no conflict"
    for user, phone in PHONES:
        expected = {
            doc_id: (rev, conflicts)
            for doc_id, (place, rev, conflicts) in truth.items()
            if place in SET_OF[user]
        }
        held = await _held(pouch, phone)
        missing = sorted(set(expected) - set(held))
        wrong = sorted(i for i in expected if i in held and held[i] != expected[i])
        assert (missing, wrong) == ([], []), f"{phone}: {len(missing)} missing, {len(wrong)} stale"
        assert set(held) == set(expected)
