"""Login-guessing limits (sync.people_store.couchdb_limits): one total across every instance.

Two CouchLoginLimits on two clients of one CouchDB stand for two fieldsync
instances; guesses spread over both, all at once, still stop at the configured
total, and a forgiven attempt frees its slot for both.  The embedded limits
(one process) keep the same contract for one instance.

On a CouchDB cluster a write that fewer than a quorum of copies took (202) is
taken back, but a rival reading at that moment counts it: parallel guesses may
then be refused a little before the limit, never after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from couchdb_server import clustered

from sync.config import Endpoint
from sync.people_store.couchdb import CouchAccounts
from sync.people_store.couchdb_limits import CouchLoginLimits
from sync.people_store.limits import LocalLoginLimits
from sync.people_store.ports import LoginLimits
from sync.ratelimit import Limit, Limited, Reservation
from sync.store.couchdb.client import CouchClient

LIMITS = {"user": Limit(10, 300.0), "ip": Limit(25, 300.0)}


@pytest.fixture(params=["embedded", "couchdb"])
async def limiters(
    request: pytest.FixtureRequest,
) -> AsyncIterator[list[LoginLimits]]:
    if request.param == "embedded":
        yield [LocalLoginLimits(LIMITS)]
        return
    url: str = request.getfixturevalue("couchdb_url")
    prefix: str = request.getfixturevalue("couch_prefix")
    clients = [CouchClient(Endpoint.parse(url)) for _ in range(2)]
    request.node.clustered = clustered(url)
    yield [CouchLoginLimits(c, CouchAccounts.for_prefix(c, prefix), dict(LIMITS)) for c in clients]
    for client in clients:
        await client.close()


async def _try(limits: LoginLimits, keys: tuple[str, ...]) -> Reservation | None:
    try:
        return await limits.reserve(keys)
    except Limited:
        return None


async def test_parallel_guesses_over_every_instance_stop_at_the_limit(
    limiters: list[LoginLimits], request: pytest.FixtureRequest
) -> None:
    keys = ("user:alice", "ip:10.0.0.1")
    tries = [_try(limiters[n % len(limiters)], keys) for n in range(40)]
    taken = [r for r in await asyncio.gather(*tries) if r is not None]
    if getattr(request.node, "clustered", False):
        assert 1 <= len(taken) <= LIMITS["user"].failures
    else:
        assert len(taken) == LIMITS["user"].failures
    for limits in limiters:
        wait = await limits.retry_after(("user:alice",))
        assert wait is not None and 1 <= wait <= 300
        assert await limits.retry_after(("user:bob",)) is None
    # Another name from the same address is not limited by alice's (the address has room).
    assert await _try(limiters[-1], ("user:bob", "ip:10.0.0.1")) is not None


async def test_a_forgiven_attempt_frees_its_slot_everywhere(limiters: list[LoginLimits]) -> None:
    keys = ("user:alice",)
    taken = [await limiters[n % len(limiters)].reserve(keys) for n in range(10)]
    assert await _try(limiters[0], keys) is None
    await limiters[-1].forgive(taken[3])
    assert await limiters[0].retry_after(keys) is None
    assert await _try(limiters[-1], keys) is not None
    assert await _try(limiters[0], keys) is None


async def test_an_attempt_refused_on_one_key_counts_on_none(limiters: list[LoginLimits]) -> None:
    """A reservation refused on the address leaves no failure counted on the name."""
    for n in range(LIMITS["ip"].failures):
        await limiters[n % len(limiters)].reserve((f"user:u{n}", "ip:10.0.0.9"))
    assert await _try(limiters[0], ("user:carol", "ip:10.0.0.9")) is None
    for _ in range(LIMITS["user"].failures - 1):
        assert await _try(limiters[0], ("user:carol",)) is not None
    assert await limiters[-1].retry_after(("user:carol",)) is None


async def test_a_hostile_claimed_name_is_counted_like_any_other(
    limiters: list[LoginLimits],
) -> None:
    """The name in a guess is the caller's text: any length, slashes, quotes, no UTF-8."""
    keys = ("user:" + '../_design/"x\ud800' + "a" * 20_000,)
    for n in range(LIMITS["user"].failures):
        assert await _try(limiters[n % len(limiters)], keys) is not None
    assert await _try(limiters[0], keys) is None
