"""Issue 11, point 6: two instances record at once, one is killed, every chain verifies.

Two ``fieldsync serve`` processes (two fresh data dirs; shared: the master key
file and ``FIELDSYNC_COUCHDB_URL``) each append to their own keyed chain in
CouchDB's ``<prefix>audit``.  Writers and readers hit both at once; in the
middle, one instance gets ``kill -9``.  Afterwards ``fieldsync audit verify``
passes on every chain (the killed one included), and every action whose answer
came back (a 201 for a write, a 200 for a read) has its entry in the chain of
the instance that answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from couchdb_server import couch_request
from couchdb_server import db_path as couch_path
from realserver import FIELDSYNC, ServerProcess, free_port
from shared_org import PLACES, basic_auth, seed

from sync.keys import key_from_file

DB = "health"
WORKERS = 6
ROUNDS = 30
KILL_AFTER = 40  # acknowledged actions of the first instance before it is killed


@pytest.fixture
def env(tmp_path: Path, couchdb_url: str, couch_prefix: str) -> dict[str, str]:
    master_file = tmp_path / "secrets" / "master.key"
    key_from_file(master_file, create=True)
    return {
        "FIELDSYNC_MASTER_KEY_FILE": str(master_file),
        "FIELDSYNC_COUCHDB_URL": couchdb_url,
        "FIELDSYNC_COUCHDB_PREFIX": couch_prefix,
        "FIELDSYNC_REQUIRE_ENROLMENT": "0",
    }


@pytest.fixture
def instances(tmp_path: Path, env: dict[str, str]) -> Iterator[list[ServerProcess]]:
    with ExitStack() as stack:
        servers = []
        for number in (1, 2):
            data = tmp_path / f"data{number}"
            seed(data, PLACES)
            server = ServerProcess(data, free_port(), tmp_path / f"server{number}.log", env)
            server.start()
            stack.callback(server.stop)
            servers.append(server)
        yield servers


class Load:
    """Writers and readers on both instances; what each instance acknowledged."""

    def __init__(self, session: aiohttp.ClientSession, servers: list[ServerProcess]) -> None:
        self.session, self.servers = session, servers
        self.acked: dict[int, set[tuple[str, str]]] = {0: set(), 1: set()}
        self.first_done = asyncio.Event()

    async def worker(self, number: int) -> None:
        for step in range(ROUNDS):
            which = (number + step) % 2
            doc_id = f"w{number}-{step}"
            await self._one(which, "PUT", doc_id, {"place": "area-a1", "n": step}, "write")
            await self._one(1 - which, "GET", doc_id, None, "read")

    async def _one(self, which: int, method: str, doc_id: str, body: Any, action: str) -> None:
        url = f"{self.servers[which].url}/{DB}/{doc_id}"
        try:
            async with self.session.request(
                method, url, json=body, headers=basic_auth("alice")
            ) as resp:
                await resp.read()
                ok = resp.status in (200, 201)
        except (aiohttp.ClientError, OSError):  # the killed instance: nothing acknowledged
            return
        if ok:
            self.acked[which].add((action, doc_id))
            if which == 0 and len(self.acked[0]) >= KILL_AFTER:
                self.first_done.set()


def _chains(couchdb_url: str, prefix: str) -> dict[str, set[tuple[str, str]]]:
    """(action, document id) of every entry in CouchDB, per instance."""
    where = couch_path(prefix + "audit") + "/_all_docs?include_docs=true"
    status, listing = couch_request(couchdb_url, "GET", where)
    assert status == 200, listing
    found: dict[str, set[tuple[str, str]]] = {}
    for row in listing["rows"]:
        doc = row["doc"]
        if row["id"].startswith("chain:"):
            mine = found.setdefault(doc["instance"], set())
            mine.update((doc["action"], i) for i in doc["doc_ids"])
    return found


def _instance_of(server: ServerProcess) -> str:
    for line in server.log_path.read_text().splitlines():
        if '"audit_instance"' in line:
            return str(json.loads(line)["instance"])
    raise AssertionError(f"no audit_instance line in {server.log_path}")


async def test_two_writers_and_a_kill_leave_every_chain_whole(
    instances: list[ServerProcess], env: dict[str, str], couchdb_url: str, couch_prefix: str
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{instances[0].url}/{DB}", headers=basic_auth("admin")) as resp:
            assert resp.status in (201, 412), await resp.text()  # 412: made at start
        load = Load(session, instances)
        workers = [asyncio.create_task(load.worker(n)) for n in range(WORKERS)]
        await asyncio.wait_for(load.first_done.wait(), 120)
        await asyncio.to_thread(instances[0].kill)  # kill -9 of a process this test started
        await asyncio.gather(*workers)

    assert len(load.acked[0]) >= KILL_AFTER and len(load.acked[1]) > KILL_AFTER
    verify = subprocess.run(
        [FIELDSYNC, "audit", "verify", "--data-dir", str(instances[1].data_dir)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    lines = [line for line in verify.stdout.splitlines() if line.startswith("instance ")]
    assert len(lines) == 2, verify.stdout
    assert all(": audit chain ok: " in line for line in lines), verify.stdout

    chains = _chains(couchdb_url, couch_prefix)
    for number, server in enumerate(instances):
        recorded = chains[_instance_of(server)]
        missing = load.acked[number] - recorded
        assert not missing, (number, sorted(missing)[:5])
