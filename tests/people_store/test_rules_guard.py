"""The accounts guard (sync.people_store.couchdb_guard): one holder at a time across instances.

Two RulesGuards on two clients of one CouchDB stand for two fieldsync instances.
The cross-document rules rely on three things: holders never overlap, a holder
that died is taken over once its lease has run out, and a change that cannot get
the guard answers 503 with a reason rather than waiting for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sync.config import Endpoint
from sync.errors import StoreUnavailable
from sync.people_store.couchdb import CouchAccounts
from sync.people_store.couchdb_guard import RulesGuard
from sync.store.couchdb.client import CouchClient


@pytest.fixture
async def clients(couchdb_url: str, couch_prefix: str) -> AsyncIterator[list[CouchClient]]:
    made = [CouchClient(Endpoint.parse(couchdb_url)) for _ in range(2)]
    await CouchAccounts.for_prefix(made[0], couch_prefix).database()  # the database exists
    yield made
    for client in made:
        await client.close()


def guards(clients: list[CouchClient], prefix: str, **timing: float) -> list[RulesGuard]:
    return [RulesGuard(client, prefix + "accounts", **timing) for client in clients]


async def test_holders_on_two_instances_never_overlap(
    clients: list[CouchClient], couch_prefix: str
) -> None:
    inside: list[int] = []
    overlaps: list[int] = []

    async def hold(guard: RulesGuard, n: int) -> None:
        async with guard.held():
            if inside:
                overlaps.append(n)
            inside.append(n)
            await asyncio.sleep(0)  # let the others run while this one holds it
            await asyncio.sleep(0)
            inside.remove(n)

    pair = guards(clients, couch_prefix)
    await asyncio.gather(*(hold(pair[n % 2], n) for n in range(12)))
    assert overlaps == []


async def test_a_holder_that_died_is_taken_over_after_its_lease(
    clients: list[CouchClient], couch_prefix: str
) -> None:
    dead, alive = guards(clients, couch_prefix, lease=0.3)
    await dead._take()  # taken, never given back: the instance died
    async with alive.held():  # waits out the lease, then takes it
        pass
    async with dead.held():  # given back properly: free at once for anybody
        pass


async def test_a_change_that_cannot_get_the_guard_answers_503(
    clients: list[CouchClient], couch_prefix: str
) -> None:
    holder, waiter = guards(clients, couch_prefix, lease=3600.0, wait=0.3)
    await holder._take()
    with pytest.raises(StoreUnavailable, match="try again in a minute"):
        async with waiter.held():
            pass
