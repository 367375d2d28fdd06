"""Nothing answered is missing from the audit trail after ``kill -9``.

Each round writes documents and reads one back, each answer awaited, then kills
the server the moment the last answer arrives: every write and read the client
saw answered has its entry on disk (a read's in the journal, at least); after a
restart every one of them is in the chain, and ``fieldsync audit verify`` holds.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import aiohttp
from audit_disk import on_disk
from realserver import DB, PASSWORD, ServerProcess

ROUNDS = 3
WRITES = 5


def _audited(data_dir: Path, action: str) -> set[str]:
    with closing(sqlite3.connect(data_dir / "fieldsync.sqlite3")) as conn:
        rows = conn.execute("SELECT doc_ids FROM audit WHERE action=?", (action,)).fetchall()
    return {doc_id for (ids,) in rows for doc_id in json.loads(ids)}


async def _write_and_read(server: ServerProcess, round_no: int) -> tuple[set[str], str]:
    token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    written = set()
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as session:
        for n in range(WRITES):
            doc = {"_id": f"r{round_no}-{n}", "place": "area", "note": "x"}
            async with session.post(f"{server.url}/{DB}/_bulk_docs", json={"docs": [doc]}) as r:
                assert r.status == 201, await r.text()
            written.add(str(doc["_id"]))
        read = f"r{round_no}-0"
        async with session.get(f"{server.url}/{DB}/{read}") as r:
            assert r.status == 200
            await r.read()
    server.kill()  # the moment the last answer is in
    return written, read


async def test_every_answered_write_and_read_has_its_entry_after_kill_9(
    crash_server: ServerProcess,
) -> None:
    data_dir = crash_server.data_dir
    for round_no in range(ROUNDS):
        written, read = await _write_and_read(crash_server, round_no)
        missing_writes = written - _audited(data_dir, "write")
        assert not missing_writes, f"round {round_no}: writes without an entry {missing_writes}"
        reads = {i for row in on_disk(data_dir, "read") for i in json.loads(row[4])}
        assert read in reads, f"round {round_no}: read lost"  # in the journal, at least
        crash_server.start()  # moves what the journal holds into the chain
        assert read in _audited(data_dir, "read"), f"round {round_no}: read not recovered"
    crash_server.stop()
    verify = crash_server.cli("audit", "verify")
    assert verify.stdout.startswith("audit chain ok: ")
