"""Nothing lost: a ``_bulk_docs`` of 1,000 documents cut off by ``kill -9``.

Each round sends the whole batch over a raw socket, kills the server process
after a different delay, restarts it on the same data dir and checks that the
store opens clean and every document of the batch is either fully there (every
field intact) or absent.  No round may leave a half-written batch.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from pathlib import Path

import aiohttp
from realserver import DB, PASSWORD, ServerProcess

BATCH = 1000
KILL_DELAYS = (0.0, 0.005, 0.02, 0.05, 0.1, 0.3)


def _batch(round_no: int) -> list[dict[str, object]]:
    return [
        {
            "_id": f"r{round_no}-{n:04d}",
            "place": "area",
            "type": "patient",
            "n": n,
            "note": f"round {round_no} record {n} " + "x" * 900,
        }
        for n in range(BATCH)
    ]


async def _send_then_kill(
    server: ServerProcess, docs: list[dict[str, object]], delay: float
) -> None:
    body = json.dumps({"docs": docs}).encode()
    token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    head = (
        f"POST /{DB}/_bulk_docs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head + body)
    await writer.drain()
    await asyncio.sleep(delay)
    server.kill()
    writer.close()


def _integrity(data_dir: Path) -> str:
    with sqlite3.connect(data_dir / "fieldsync.sqlite3") as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


async def _stored(
    server: ServerProcess, docs: list[dict[str, object]]
) -> dict[str, dict[str, object]]:
    token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as session:
        url = f"{server.url}/{DB}/_all_docs?include_docs=true"
        async with session.post(url, json={"keys": [d["_id"] for d in docs]}) as resp:
            assert resp.status == 200, await resp.text()
            rows = (await resp.json())["rows"]
    return {row["key"]: row["doc"] for row in rows if row.get("doc")}


async def test_bulk_docs_killed_mid_batch_is_all_or_nothing(crash_server: ServerProcess) -> None:
    outcomes = []
    for round_no, delay in enumerate(KILL_DELAYS):
        docs = _batch(round_no)
        await _send_then_kill(crash_server, docs, delay)
        assert _integrity(crash_server.data_dir) == "ok"
        crash_server.start()
        stored = await _stored(crash_server, docs)
        assert len(stored) in (0, BATCH), f"round {round_no}: {len(stored)} of {BATCH} documents"
        for doc in docs:
            if doc["_id"] in stored:
                got = {k: v for k, v in stored[doc["_id"]].items() if k != "_rev"}
                assert got == doc
        outcomes.append(len(stored) == BATCH)
    print("rounds fully written:", outcomes)
