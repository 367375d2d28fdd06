"""Issue 11, point 4 (timed work): the SMS scheduler's tick is done by one instance at a time.

Three "instances" -- each its own CouchDB client, SMS adapter, owner and the real
scheduler loop (``sms_gateway.routes._scheduler``) -- tick every 0.05 s on one CouchDB,
with a provider that records what it is handed.  Reminders fall due in waves: every
reminder is handed to the provider once, and every tick's work is done by the
instance holding the scheduler's lease; when that instance dies (its loop is
cancelled, as a ``kill -9`` stops it), another takes the work over once the lease
ran out (12 ticks) and sends what fell due since.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sms_gateway.couchdb import CouchSms
from sms_gateway.outbox import Outbox
from sms_gateway.ports import NewOutgoing
from sms_gateway.routes import Sms, _scheduler
from sms_gateway.sealing import Sealer
from sms_gateway.settings import SmsSettings
from sync.config import Endpoint
from sync.datakeys.memory import MemoryDataKeys
from sync.keys import KeyRing, LocalMasterKey
from sync.store.couchdb.client import CouchClient
from sync.vault import Vault

NOON = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)  # inside the default send hours
SETTINGS = SmsSettings(tick_seconds=0.05)
WAVE = 15


class Provider:
    """Records each message handed to it, and by which instance."""

    name = "africastalking"

    def __init__(self, instance: str, sent: list[tuple[str, str]]) -> None:
        self.instance, self.sent = instance, sent

    async def send(self, to: str, content: str) -> str:
        self.sent.append((self.instance, content))
        return f"at-{len(self.sent)}"


@dataclasses.dataclass
class Service:
    store: CouchSms
    owner: str
    sealer: Sealer


@pytest.fixture
async def instances(couchdb_url: str, couch_prefix: str) -> AsyncIterator[list[Sms]]:
    keys = MemoryDataKeys()  # the keys every instance shares (CouchDB's, in production)
    master = LocalMasterKey(b"k" * 32)
    made, clients = [], []
    for number in range(3):
        client = CouchClient(Endpoint.parse(couchdb_url))
        clients.append(client)
        store = CouchSms.for_prefix(client, couch_prefix)
        await store.open()
        sealer = Sealer(Vault(KeyRing(master, keys)))
        await sealer.warm()
        service: Any = Service(store, f"instance-{number}", sealer)
        outbox = Outbox(store, sealer, SETTINGS, lambda: NOON)
        made.append(Sms(service, outbox, SETTINGS))
    yield made
    for client in clients:
        await client.close()


async def _queue(sms: Sms, wave: int) -> list[str]:
    """A wave of reminders, due now (queued once, as a registration queues them)."""
    sealer = sms.service.sealer
    messages = []
    for n in range(WAVE):
        out_id = f"w{wave}-m{n}-r1"
        key_ref, sealed = sealer.seal(f"out:{out_id}", {"content": f"reminder {wave}.{n}"})
        messages.append(
            NewOutgoing(
                out_id,
                "africastalking",
                f"+25470{wave}{n:05d}",
                "reminder",
                key_ref,
                sealed,
                NOON,
                None,
                "alice",
                "area-1",
                f"P{wave}{n}",
            )
        )
    await sms.service.store.finish([], messages, [], NOON)
    return [f"reminder {wave}.{n}" for n in range(WAVE)]


async def _until_sent(sent: list[tuple[str, str]], count: int) -> None:
    for _ in range(400):
        if len(sent) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(sent)} of {count} reminders sent")


async def test_three_instances_send_each_reminder_once_and_take_over_a_dead_one(
    instances: list[Sms],
) -> None:
    sent: list[tuple[str, str]] = []
    for sms in instances:
        sms.provider = Provider(sms.service.owner, sent)  # type: ignore[assignment]
    loops = {sms.service.owner: asyncio.create_task(_scheduler(sms)) for sms in instances}
    try:
        expected = await _queue(instances[0], 1)
        await _until_sent(sent, WAVE)
        await asyncio.sleep(0.3)  # six more ticks of every instance: nothing comes twice
        holder = {instance for instance, _ in sent}
        assert len(holder) == 1, f"a tick's work was done by {holder}"
        [dead] = holder

        loops[dead].cancel()  # the holder dies
        expected += await _queue(instances[1], 2)
        await _until_sent(sent, 2 * WAVE)
        await asyncio.sleep(0.3)
    finally:
        for loop in loops.values():
            loop.cancel()
        await asyncio.gather(*loops.values(), return_exceptions=True)

    texts = Counter(content for _, content in sent)
    assert sorted(texts) == sorted(expected) and set(texts.values()) == {1}, texts
    second = {instance for instance, content in sent if content.startswith("reminder 2.")}
    assert len(second) == 1 and dead not in second, second
