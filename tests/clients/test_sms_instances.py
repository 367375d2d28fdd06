"""Issue 11, point 4: three ``fieldsync serve`` processes on one CouchDB, a burst of SMS, and
``kill -9`` of one of them in the middle: every message processed once, every reply sent once.

A medic-gateway stand-in spreads 60 registrations ("P 3 Name") over the three
instances, a few per poll, acknowledging each reply it is handed (status SENT) at
once, in a poll of its own.  Early in the burst, as soon as the second instance
holds a claim on a message of a batch it was just handed (it is woken by the batch
it stores), it is killed with SIGKILL, and the test checks that the message was
still stored under its claim.  If the other two finish a batch of the victim's
first (seen on a three-node cluster), the burst goes on past 60 until the victim
is caught (150 at most), and every check below counts the messages sent.  A poll
that fails (the instance is gone) is repeated on another instance, as the real
gateway repeats until it has an answer.

Then, once every reply has come back, the gateway polls on past the lease and
the offer timeout (an instance's claims and hand-overs run out, and a dead
instance's are taken over within them) to see that nothing comes twice; and the
shared database must hold one outcome per message, one reply per message and one
patient per registration, each patient ID distinct.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import shared_org
from couchdb_server import couch_request
from couchdb_server import db_path as couch_path
from realserver import DB, ServerProcess, free_port

from device_registry import embedded_sql, inventory
from device_registry import schema as device_schema
from sms_gateway import medic
from sms_gateway.couchdb_docs import incoming_doc_id
from sync.keys import KeyRing, load_master_key
from sync.scopes import UNLIMITED, Role
from sync.store.schema import connect, connections, db_path

MESSAGES = 60
PER_POLL = 5
# More batches go out after MESSAGES until the victim is caught holding a claim: on a
# cluster the other two sometimes finish a batch before the victim's claim is seen.
MAX_MESSAGES = 150
# The scheduler's tick; a claim on a received message lasts 12 ticks.  The victim looks
# for work more often than the others (and at once when it stores a batch), so that it
# is the one holding claims when it is killed; the others take them over within
# 12 of its ticks (3 s) and one of theirs.
TICK = 0.25
OTHERS_TICK = 1.0
OFFER_TIMEOUT = 8  # seconds before a reply a gateway did not confirm is offered again
PASSWORD = shared_org.PASSWORD
DEVICES = [  # serial, IMEI (check digit right), phone, worker
    ("SN-A1", "490154203237518", "+254700000001", "alice"),
    ("SN-B1", "356938035643809", "+254700000002", "bob"),
]
PHONES = tuple(phone for _, _, phone, _ in DEVICES)


def seed(data_dir: Path) -> None:
    """The shared organisation, a gateway account, and alice's and bob's phones."""
    shared_org.seed(data_dir, shared_org.PLACES, [*shared_org.USERS, ("gw", Role.GATEWAY, [], [])])
    with closing(connect(db_path(data_dir))) as conn:
        device_schema.ensure(conn)
        for serial, imei, phone, worker in DEVICES:
            embedded_sql.add(
                conn, inventory.validate_new(serial, imei, phone=phone), "test", UNLIMITED
            )
            embedded_sql.assign(conn, serial, worker, "test", UNLIMITED)


@pytest.fixture
def instances(tmp_path: Path, couchdb_url: str, couch_prefix: str) -> Iterator[list[ServerProcess]]:
    """Three servers with the same users, phones, places and data keys, on one CouchDB."""
    template = tmp_path / "template"
    seed(template)
    keys = KeyRing(
        load_master_key(template / "master.key", create=True), connections(db_path(template))
    )
    with closing(sqlite3.connect(db_path(template))) as conn:
        places = [row[0] for row in conn.execute("SELECT id FROM places")]
    for place in [*places, ""]:  # until keys live in CouchDB, every copy needs the same keys
        keys.current(place)
    env = {
        "FIELDSYNC_COUCHDB_URL": couchdb_url,
        "FIELDSYNC_COUCHDB_PREFIX": couch_prefix,
        "FIELDSYNC_REQUIRE_ENROLMENT": "0",
        "FIELDSYNC_SMS_OFFER_TIMEOUT": str(OFFER_TIMEOUT),
        "FIELDSYNC_SMS_SEND_HOURS": "00-24",
    }
    with ExitStack() as stack:
        servers = []
        for number in (1, 2, 3):
            data = tmp_path / f"data{number}"
            shutil.copytree(template, data)
            tick = {"FIELDSYNC_SMS_TICK": str(TICK if number == 2 else OTHERS_TICK)}
            log = tmp_path / f"server{number}.log"
            server = ServerProcess(data, free_port(), log, {**env, **tick})
            server.start()
            stack.callback(server.stop)
            servers.append(server)
        yield servers


def _auth(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class GatewayStandIn:
    """medic-gateway: posts messages and status updates, keeps every reply it is handed."""

    def __init__(self, session: aiohttp.ClientSession, servers: list[ServerProcess]) -> None:
        self.session = session
        self.servers = servers
        self.alive = list(servers)
        self.seen: list[dict[str, Any]] = []  # every reply handed over, repeats included
        self.unacknowledged: list[dict[str, str]] = []

    async def poll(self, server: ServerProcess, messages: list[dict[str, Any]]) -> None:
        """One poll; if ``server`` is gone, the same poll on the next live instance."""
        updates = [{"id": r["id"], "status": "SENT"} for r in self.unacknowledged]
        body = {"messages": messages, "updates": updates}
        for target in [server, *(s for s in self.alive if s is not server)]:
            if target not in self.alive:
                continue
            try:
                async with self.session.post(f"{target.url}/api/sms", json=body) as resp:
                    answer = await resp.json()
                    assert resp.status == 200, answer
            except aiohttp.ClientError:
                continue  # the instance died under this poll: repeat it elsewhere
            self.unacknowledged = list(answer["messages"])
            self.seen += answer["messages"]
            if self.unacknowledged:  # acknowledged at once, in a poll of its own
                await self.poll(target, [])
            return
        raise AssertionError("no instance answered the poll")

    async def poll_live(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            for server in list(self.alive):
                await self.poll(server, [])


def _message(n: int) -> dict[str, Any]:
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    return {
        "id": f"burst-{n}",
        "from": PHONES[n % 2],
        "content": f"P 3 Mother{n:02d}",
        "sms_received": now_ms,
    }


async def _kill_while_holding_a_claim(
    victim: ServerProcess, couchdb_url: str, db: str, batch: list[dict[str, Any]]
) -> str | None:
    """``kill -9`` the victim as soon as it holds a claim on a message of ``batch`` (it is
    woken as it stores them); that message's id, or None if another instance claimed them."""
    ids = [incoming_doc_id(medic.CHANNEL, m["id"]) for m in batch]
    for _ in range(300):
        status, answer = await asyncio.to_thread(
            couch_request,
            couchdb_url,
            "POST",
            couch_path(db) + "/_all_docs?include_docs=true",
            {"keys": ids},
        )
        assert status == 200, answer
        docs = [row["doc"] for row in answer["rows"] if row.get("doc")]
        for doc in docs:
            owner = (doc.get("lease") or {}).get("owner", "")
            if doc["state"] == "stored" and owner.startswith(f"{victim.pid}-"):
                victim.kill()
                return _orphan(couchdb_url, db, ids, victim)
        if docs and all(doc["state"] == "processed" for doc in docs):
            return None  # processed by the others first: try with the next batch
        await asyncio.sleep(0.01)
    return None


def _orphan(couchdb_url: str, db: str, ids: list[str], victim: ServerProcess) -> str:
    """A message the victim died holding: still stored, under its claim."""
    for doc_id in ids:
        doc = _doc(couchdb_url, db, doc_id)
        owner = (doc.get("lease") or {}).get("owner", "")
        if doc["state"] == "stored" and owner.startswith(f"{victim.pid}-"):
            return doc_id
    raise AssertionError("the victim finished all it held in the instant before its kill")


def _doc(couchdb_url: str, db: str, doc_id: str) -> dict[str, Any]:
    status, doc = couch_request(couchdb_url, "GET", couch_path(db) + "/" + doc_id)
    assert status == 200, doc
    return dict(doc)


def _all_docs(couchdb_url: str, db: str) -> list[dict[str, Any]]:
    status, answer = couch_request(
        couchdb_url, "GET", couch_path(db) + "/_all_docs?include_docs=true"
    )
    assert status == 200, answer
    return [row["doc"] for row in answer["rows"] if not row["id"].startswith("_design/")]


async def test_a_burst_of_sms_over_three_instances_and_a_kill_9_does_nothing_twice(
    instances: list[ServerProcess], couchdb_url: str, couch_prefix: str
) -> None:
    victim, db = instances[1], couch_prefix + "sms"
    held: str | None = None
    sent = 0
    async with aiohttp.ClientSession(headers=_auth("gw")) as session:
        gateway = GatewayStandIn(session, instances)
        while sent < MAX_MESSAGES and (sent < MESSAGES or held is None):
            server = instances[(sent // PER_POLL) % 3]
            batch = [_message(n) for n in range(sent, sent + PER_POLL)]
            await gateway.poll(server, batch)
            if sent >= PER_POLL and server is victim and held is None:
                held = await _kill_while_holding_a_claim(victim, couchdb_url, db, batch)
                if held is not None:
                    gateway.alive.remove(victim)
            sent += PER_POLL
        assert held is not None, f"the victim was never caught holding a claim in {sent} messages"

        for _ in range(600):  # until every reply came back (each poll waits a little)
            if len({r["id"] for r in gateway.seen}) >= sent:
                break
            await asyncio.sleep(TICK)
            await gateway.poll_live()
        await gateway.poll_live()  # the last acknowledgements
        # Past the leases and the offer timeout: anything offered twice would show now.
        await asyncio.sleep(OFFER_TIMEOUT + 12 * OTHERS_TICK + 1)
        await gateway.poll_live(rounds=2)

    # Every reply handed to the gateway exactly once, one per message.
    times = Counter(r["id"] for r in gateway.seen)
    assert [i for i, n in times.items() if n > 1] == [], "a reply was handed over twice"
    assert len(times) == sent
    names = sorted(r["content"].split(" registered", 1)[0] for r in gateway.seen)
    assert names == sorted(f"Mother{n:02d}" for n in range(sent))
    patient_ids = [r["content"].split("ID ", 1)[1].split(".", 1)[0] for r in gateway.seen]
    assert len(set(patient_ids)) == sent

    # One record per message: stored once, processed once, one reply each.
    docs = _all_docs(couchdb_url, db)
    received = [d for d in docs if d["type"] == "in"]
    assert sorted(d["external_id"] for d in received) == sorted(f"burst-{n}" for n in range(sent))
    assert {(d["state"], d["outcome"]) for d in received} == {("processed", "registered")}
    taken_over = _doc(couchdb_url, db, held)  # the message the victim died holding
    assert taken_over["state"] == "processed"
    assert not taken_over["processed_by"].startswith(f"{victim.pid}-")
    replies = [d for d in docs if d["type"] == "out" and d["kind"] == "reply"]
    assert len(replies) == sent
    assert {d["state"] for d in replies} == {"sent"}

    # One patient per registration, whichever instance (or two) worked on it.
    survivor = gateway.alive[0]
    async with (
        aiohttp.ClientSession(headers=_auth("admin")) as admin,
        admin.get(f"{survivor.url}/{DB}/_all_docs") as resp,
    ):
        listing = await resp.json()
    persons = [row["id"] for row in listing["rows"] if row["id"].startswith("person-")]
    assert sorted(persons) == sorted(f"person-{pid}" for pid in patient_ids)
