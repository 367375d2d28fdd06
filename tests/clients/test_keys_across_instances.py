"""Issue 11, point 1 (keys): two instances from two different fresh data dirs share data keys.

Each ``fieldsync serve`` has its own data dir, seeded on its own with the same
users and places (those still live in each data dir's SQLite file), and shares
with the other only the master key file (``FIELDSYNC_MASTER_KEY_FILE``) and
``FIELDSYNC_COUCHDB_URL``: no copied data dir, no key made beforehand.  Both
write into the same fresh places at the same moment, so both make those
places' first data key at once; afterwards every document written through one
reads through the other, CouchDB's ``<prefix>keys`` holds one key per place,
sealed under the master key, and neither data dir holds a data key.
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from couchdb_server import couch_request
from couchdb_server import db_path as couch_path
from realserver import ServerProcess, free_port
from shared_org import PLACES, basic_auth, seed

from sync.keys import key_from_file
from sync.store.schema import db_path

DB = "health"
DOCS_PER_PLACE = 6
WRITE_PLACES = ("area-a1", "area-a2")


@pytest.fixture
def instances(tmp_path: Path, couchdb_url: str, couch_prefix: str) -> Iterator[list[ServerProcess]]:
    master_file = tmp_path / "secrets" / "master.key"
    key_from_file(master_file, create=True)
    with ExitStack() as stack:
        servers = []
        for number in (1, 2):
            data = tmp_path / f"data{number}"
            seed(data, PLACES)  # the same users and places, made separately in each dir
            env = {
                "FIELDSYNC_MASTER_KEY_FILE": str(master_file),
                "FIELDSYNC_COUCHDB_URL": couchdb_url,
                "FIELDSYNC_COUCHDB_PREFIX": couch_prefix,
                "FIELDSYNC_REQUIRE_ENROLMENT": "0",
            }
            server = ServerProcess(data, free_port(), tmp_path / f"server{number}.log", env)
            server.start()
            stack.callback(server.stop)
            servers.append(server)
        yield servers


async def _write(session: aiohttp.ClientSession, server: ServerProcess, tag: str) -> list[str]:
    docs = [
        {"_id": f"{tag}-{place}-{n}", "place": place, "note": f"written through {tag}"}
        for place in WRITE_PLACES
        for n in range(DOCS_PER_PLACE)
    ]
    url = f"{server.url}/{DB}/_bulk_docs"
    async with session.post(url, json={"docs": docs}, headers=basic_auth("sam")) as resp:
        answer = await resp.json()
        assert resp.status == 201, answer
    assert all(row.get("ok") for row in answer), answer
    return [str(d["_id"]) for d in docs]


async def _read(session: aiohttp.ClientSession, server: ServerProcess, doc_id: str) -> Any:
    async with session.get(f"{server.url}/{DB}/{doc_id}", headers=basic_auth("sam")) as resp:
        body = await resp.json()
        assert resp.status == 200, (server.url, doc_id, body)
        return body


async def test_a_document_written_through_one_reads_through_the_other(
    instances: list[ServerProcess], couchdb_url: str, couch_prefix: str, tmp_path: Path
) -> None:
    one, two = instances
    async with aiohttp.ClientSession() as session:
        for server in instances:  # the database, made once (the second is told it exists)
            async with session.put(f"{server.url}/{DB}", headers=basic_auth("admin")) as resp:
                assert resp.status in (201, 412), await resp.text()
        # Both at once: each makes the first key of the same places at the same moment.
        by_one, by_two = await asyncio.gather(
            _write(session, one, "one"), _write(session, two, "two")
        )
        for reader, ids, tag in ((two, by_one, "one"), (one, by_two, "two")):
            for doc_id in ids:
                body = await _read(session, reader, doc_id)
                assert body["note"] == f"written through {tag}"

    status, listing = couch_request(
        couchdb_url, "GET", couch_path(couch_prefix + "keys") + "/_all_docs?include_docs=true"
    )
    assert status == 200, listing
    docs = [row["doc"] for row in listing["rows"]]
    per_place = [(d["place"], d["version"]) for d in docs]
    assert sorted(per_place) == sorted(set(per_place))  # one key per place:version
    assert {p for p, _ in per_place} >= set(WRITE_PLACES)
    master = key_from_file(tmp_path / "secrets" / "master.key", create=False)
    for doc in docs:  # sealed under the master key: it unwraps, and is not the key itself
        wrapped = base64.b64decode(doc["wrapped"])
        plain = master.unwrap(f"dk:{doc['place']}:{doc['version']}".encode(), wrapped)
        assert len(plain) == 32 and plain not in wrapped
    for server in instances:  # the data dirs hold no data key: CouchDB is where they live
        with closing(sqlite3.connect(db_path(server.data_dir))) as conn:
            assert conn.execute("SELECT count(*) FROM data_keys").fetchone()[0] == 0
