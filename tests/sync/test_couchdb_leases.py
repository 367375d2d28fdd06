"""Leases in CouchDB (sync.store.couchdb.lease): one holder at a time, across instances.

Each ``Lease`` below has its own client and owner, standing for an instance (or an
operator's command) on another machine; the clock is a plain function, so expiry
is tested without waiting.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from collections.abc import AsyncIterator, Callable

import pytest

from sync.config import Endpoint
from sync.store.couchdb.client import CouchClient
from sync.store.couchdb.lease import Lease, LeaseTaken, holding, new_owner, once_per_tick

START = dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
async def clients(couchdb_url: str) -> AsyncIterator[list[CouchClient]]:
    made = [CouchClient(Endpoint.parse(couchdb_url)) for _ in range(3)]
    yield made
    for client in made:
        await client.close()


def leases(
    clients: list[CouchClient], prefix: str, clock: Callable[[], dt.datetime], seconds: float = 60
) -> list[Lease]:
    return [
        Lease(c, prefix, "job", f"host{n}-{100 + n}-abc", seconds, f"job {n}", clock)
        for n, c in enumerate(clients)
    ]


async def test_of_three_at_once_one_takes_it_and_the_others_learn_who(
    clients: list[CouchClient], couch_prefix: str
) -> None:
    clock = Clock()
    three = leases(clients, couch_prefix, clock)
    answers = await asyncio.gather(*(lease.take() for lease in three))
    winners = [lease for lease, holder in zip(three, answers, strict=True) if holder is None]
    assert len(winners) == 1
    for holder in answers:
        if holder is not None:
            assert holder.owner == winners[0].owner and holder.what == winners[0].what
    assert await winners[0].take() is None  # renewing: still its own


async def test_an_expired_lease_is_taken_over_and_a_released_one_at_once(
    clients: list[CouchClient], couch_prefix: str
) -> None:
    clock = Clock()
    one, two, _ = leases(clients, couch_prefix, clock)
    assert await one.take() is None
    clock.now += dt.timedelta(seconds=59)
    assert await two.take() is not None
    clock.now += dt.timedelta(seconds=2)  # one's lease ran out: its holder died or hung
    assert await two.take() is None
    holder = await one.take()
    assert holder is not None and holder.owner == two.owner
    await two.release()
    assert await one.held() is None
    assert await one.take() is None


async def test_holding_refuses_a_second_holder_by_name_and_releases_on_leaving(
    clients: list[CouchClient], couch_prefix: str
) -> None:
    first = Lease(clients[0], couch_prefix, "key-rotation", new_owner(), 60, "keys rotate")
    second = Lease(clients[1], couch_prefix, "key-rotation", new_owner(), 60, "keys rotate")
    async with holding(first, "cannot rotate now"):
        with pytest.raises(LeaseTaken) as refused:
            async with holding(second, "cannot rotate now"):
                pytest.fail("two holders at once")
        assert refused.value.reason.startswith(
            f"cannot rotate now: the lease key-rotation is held by {first.owner} (keys rotate) "
            "until 20"
        )
    async with holding(second, "cannot rotate now"):  # released: taken at once
        assert not second.lost


async def test_a_lease_of_a_process_of_this_machine_that_died_is_taken_at_once(
    clients: list[CouchClient], couch_prefix: str
) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    owner = new_owner().rsplit("-", 2)[0] + f"-{gone.stdout.strip()}-dead"
    dead = Lease(clients[0], couch_prefix, "key-rotation", owner, 600)
    assert await dead.take() is None
    other_machine = Lease(clients[1], couch_prefix, "other", "elsewhere-1-x", 600)
    assert await other_machine.take() is None
    assert await Lease(clients[2], couch_prefix, "key-rotation", new_owner(), 60).take() is None
    # A holder on another machine is never presumed dead: its lease is waited for.
    assert await Lease(clients[2], couch_prefix, "other", new_owner(), 60).take() is not None


async def test_a_holder_that_finds_another_owner_on_renewal_knows_it_lost(
    clients: list[CouchClient], couch_prefix: str
) -> None:
    clock = Clock()
    one, two, _ = leases(clients, couch_prefix, clock, seconds=0.3)
    async with holding(one, "busy"):
        clock.now += dt.timedelta(seconds=1)  # one stalled past its expiry ...
        assert await two.take() is None  # ... and two took the work over
        for _ in range(50):
            if one.lost:
                break
            await asyncio.sleep(0.05)
        assert one.lost


async def test_once_per_tick_one_instance_works_each_tick_until_it_dies(
    clients: list[CouchClient], couch_prefix: str
) -> None:
    clock = Clock()
    three = leases(clients, couch_prefix, clock, seconds=60)
    workers: list[str] = []
    for _ in range(5):  # five ticks, every instance ticking at once
        took = await asyncio.gather(*(once_per_tick(lease) for lease in three))
        assert sum(took) == 1
        workers += [lease.owner for lease, t in zip(three, took, strict=True) if t]
        clock.now += dt.timedelta(seconds=5)
    assert len(set(workers)) == 1  # the holder keeps the work while it lives
    dead = next(lease for lease in three if lease.owner == workers[0])
    alive = [lease for lease in three if lease is not dead]
    clock.now += dt.timedelta(seconds=30)  # the holder stopped ticking: not yet expired
    assert not any(await asyncio.gather(*(once_per_tick(lease) for lease in alive)))
    clock.now += dt.timedelta(seconds=31)
    took = await asyncio.gather(*(once_per_tick(lease) for lease in alive))
    assert sum(took) == 1
