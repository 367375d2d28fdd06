"""Nothing lost: a real server killed (-9) mid-batch processes every message exactly once.

A gateway posts a batch of registrations; the server answers once the batch is
stored, and is killed while it processes them (and, in one round, before it has
answered at all).  After a restart, the gateway repeats the batch, as a real one
does when it is unsure; the server must end with exactly one patient, one
pregnancy, one reply and one set of reminders per message.
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sms_harness import PASSWORD, Server

PHONE = "+254700000001"
BATCH = 150
GATEWAY_AUTH = {"Authorization": "Basic " + base64.b64encode(f"gw:{PASSWORD}".encode()).decode()}
ADMIN_AUTH = {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data", tmp_path / "server.log")
    server.cli("init")
    server.cli("place", "add", "area-a1")
    server.cli("user", "add", "admin", "--role", "admin", password=PASSWORD)
    server.cli("user", "add", "alice", "--role", "chw", "--place", "area-a1", password=PASSWORD)
    server.cli("user", "add", "gw", "--role", "gateway", password=PASSWORD)
    server.cli("device", "add", "SN-A1", "--imei", "490154203237518", "--phone", PHONE)
    server.cli("device", "assign", "SN-A1", "alice")
    server.start()
    yield server
    server.stop()


def batch(round_no: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"r{round_no}-{n:04d}",
            "from": PHONE,
            "content": f"P {n % 40 + 1} Mama R{round_no}N{n}",
        }
        for n in range(BATCH)
    ]


async def post(server: Server, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(headers=GATEWAY_AUTH) as session:
        body = {"messages": messages, "updates": []}
        async with session.post(f"{server.url}/api/sms", json=body) as response:
            assert response.status == 200, await response.text()
            return list((await response.json())["messages"])


async def post_then_kill(server: Server, messages: list[dict[str, Any]], delay: float) -> None:
    """Kill ``delay`` seconds after the batch is sent; None: after the server answered."""
    task = asyncio.create_task(post(server, messages))
    await asyncio.sleep(delay)
    server.kill()
    await asyncio.gather(task, return_exceptions=True)


def counts(data_dir: Path) -> dict[str, Any]:
    with sqlite3.connect(data_dir / "fieldsync.sqlite3", timeout=30) as conn:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "incoming": one("SELECT count(*) FROM sms_incoming"),
            "stored": one("SELECT count(*) FROM sms_incoming WHERE state='stored'"),
            "registered": one("SELECT count(*) FROM sms_incoming WHERE outcome='registered'"),
            "patient_ids": one("SELECT count(DISTINCT patient_id) FROM sms_incoming"),
            "allocated": one("SELECT count(*) FROM patient_ids"),
            "replies": one("SELECT count(*) FROM sms_outgoing WHERE kind='reply'"),
            "replied": one(
                "SELECT count(DISTINCT incoming_id) FROM sms_outgoing WHERE kind='reply'"
            ),
            "reminder_sets": one(
                "SELECT count(*) FROM (SELECT incoming_id, count(*) c FROM sms_outgoing "
                "WHERE kind='reminder' GROUP BY incoming_id HAVING c=8)"
            ),
        }


async def documents(server: Server, prefix: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(headers=ADMIN_AUTH) as session:
        params = {"startkey": f'"{prefix}"', "endkey": f'"{prefix}\ufff0"', "include_docs": "true"}
        async with session.get(f"{server.url}/health/_all_docs", params=params) as response:
            assert response.status == 200, await response.text()
            return [row["doc"] for row in (await response.json())["rows"]]


async def wait_processed(server: Server, expected: int) -> dict[str, Any]:
    for _ in range(600):
        found = counts(server.data_dir)
        if found["incoming"] == expected and found["stored"] == 0:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"not all processed: {counts(server.data_dir)}\n{server.log_tail()}")


@pytest.mark.parametrize("delays", [(0.05, 0.3, 1.0, 0.0)])
async def test_killed_mid_batch_every_message_is_processed_exactly_once(
    server: Server, delays: tuple[float, ...]
) -> None:
    sent: list[dict[str, Any]] = []
    for round_no, delay in enumerate(delays):
        messages = batch(round_no)
        sent += messages
        if delay == 0.0:
            await post_then_kill(server, messages, 0.0)  # killed before it could answer
        else:
            await post(server, messages)  # stored: the server has answered
            await asyncio.sleep(delay)
            server.kill()  # ... and now killed while processing
        during_crash = counts(server.data_dir)
        server.start()
        await post(server, messages)  # the gateway repeats what it is unsure of
        assert during_crash["incoming"] in (len(sent) - BATCH, len(sent))
    found = await wait_processed(server, len(sent))
    total = len(sent)
    assert found == {
        "incoming": total,
        "stored": 0,
        "registered": total,
        "patient_ids": total,
        # A kill between allocating IDs and recording them on the messages skips those
        # IDs (never reused): at least one ID per registration, each patient one ID.
        "allocated": max(found["allocated"], total),
        "replies": total,
        "replied": total,
        "reminder_sets": found["reminder_sets"],
    }
    people = await documents(server, "person-")
    assert len(people) == total
    assert len({p["patient_id"] for p in people}) == total
    assert sorted(p["name"] for p in people) == sorted(m["content"].split(" ", 2)[2] for m in sent)
    assert len(await documents(server, "pregnancy-")) == total
    # Each registration's reminders were queued once: weeks since LMP n%40+1 leave 8 contacts
    # ahead only when under 12 weeks.
    early = sum(1 for m in sent if int(m["content"].split()[1]) < 12)
    assert found["reminder_sets"] == early
    assert "Traceback" not in server.log_tail(200)
