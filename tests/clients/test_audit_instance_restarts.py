"""Issue 11, point 6: an instance killed and started again writes a new chain, never its old one.

Two ``fieldsync serve`` processes on one CouchDB (through the audit port's CouchDB
adapter, :mod:`sync.audit_store.couchdb`).  The first is killed with ``kill -9``
and started again on the same data dir: it records under a new instance id, so
its old chain ends where the killed process stopped and stays whole.
``fieldsync audit verify`` then reports three chains, all sound, and each
answered action is in the chain of the process that answered it.
"""

from __future__ import annotations

import json
import os
import subprocess

import aiohttp
from couchdb_server import couch_request
from couchdb_server import db_path as couch_path
from realserver import FIELDSYNC, ServerProcess
from shared_org import basic_auth
from test_audit_across_instances import env, instances  # noqa: F401  (the same two instances)

DB = "health"


async def _act(
    session: aiohttp.ClientSession, server: ServerProcess, method: str, doc_id: str
) -> None:
    body = {"place": "area-a1", "note": doc_id} if method == "PUT" else None
    url = f"{server.url}/{DB}/{doc_id}"
    async with session.request(method, url, json=body, headers=basic_auth("alice")) as resp:
        assert resp.status in (200, 201), await resp.text()


def _instances_of(server: ServerProcess) -> list[str]:
    """Every instance id the server's log announced, in order (one per process start)."""
    lines = server.log_path.read_text().splitlines()
    return [json.loads(line)["instance"] for line in lines if '"audit_instance"' in line]


def _recorded(couchdb_url: str, prefix: str) -> dict[str, set[tuple[str, str]]]:
    where = couch_path(prefix + "audit") + "/_all_docs?include_docs=true"
    status, listing = couch_request(couchdb_url, "GET", where)
    assert status == 200, listing
    found: dict[str, set[tuple[str, str]]] = {}
    for row in listing["rows"]:
        if row["id"].startswith("chain:"):
            doc = row["doc"]
            found.setdefault(doc["instance"], set()).update(
                (doc["action"], i) for i in doc["doc_ids"]
            )
    return found


async def test_a_restarted_instance_starts_a_new_chain_and_all_verify(
    instances: list[ServerProcess],  # noqa: F811  (fixtures shared with the other audit test)
    env: dict[str, str],  # noqa: F811
    couchdb_url: str,
    couch_prefix: str,
) -> None:
    first, second = instances
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{first.url}/{DB}", headers=basic_auth("admin")) as resp:
            assert resp.status in (201, 412), await resp.text()
        await _act(session, first, "PUT", "before")
        await _act(session, second, "GET", "before")
        first.kill()  # kill -9 of a process this test started
        first.start()
        await _act(session, first, "PUT", "after")
        await _act(session, second, "GET", "after")
        await _act(session, first, "GET", "before")

    old, new = _instances_of(first)
    (other,) = _instances_of(second)
    chains = _recorded(couchdb_url, couch_prefix)
    assert ("write", "before") in chains[old]
    assert ("write", "after") not in chains[old]  # the old chain ended with its process
    assert {("write", "after"), ("read", "before")} <= chains[new]
    assert {("read", "before"), ("read", "after")} <= chains[other]

    verify = subprocess.run(
        [FIELDSYNC, "audit", "verify", "--data-dir", str(second.data_dir)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    lines = [line for line in verify.stdout.splitlines() if line.startswith("instance ")]
    assert sorted(line.split(":")[0] for line in lines) == sorted(
        f"instance {i}" for i in (old, new, other)
    )
    assert all(": audit chain ok: " in line for line in lines), verify.stdout
