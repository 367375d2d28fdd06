"""sync.recent.RecentLookups.read_once: a read under way is shared, within the same rules
as a kept answer (sent less than ``seconds`` ago, no write since)."""

from __future__ import annotations

import asyncio

import pytest

from sync.recent import RecentLookups


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Reads:
    """A store's read: counts the calls, answers when the test opens the gate."""

    def __init__(self, answer: str = "alice") -> None:
        self.calls = 0
        self.answer = answer
        self.gate = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self) -> str:
        self.calls += 1
        mine = self.calls
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return f"{self.answer}#{mine}"


def everything(value: str) -> bool:
    return True


async def _started(cache: RecentLookups[str], reads: Reads, count: int) -> list[asyncio.Task[str]]:
    tasks = [asyncio.create_task(cache.read_once("k", reads, everything)) for _ in range(count)]
    await asyncio.sleep(0)  # every one has looked for a read under way
    return tasks


async def test_lookups_while_a_read_is_under_way_share_it() -> None:
    cache: RecentLookups[str] = RecentLookups(0.5, clock=Clock())
    reads = Reads()
    tasks = await _started(cache, reads, 5)
    reads.gate.set()
    assert await asyncio.gather(*tasks) == ["alice#1"] * 5
    assert reads.calls == 1
    assert await cache.read_once("k", reads, everything) == "alice#1"  # then kept
    assert reads.calls == 1


async def test_a_write_while_a_read_is_under_way_makes_the_next_lookup_read_again() -> None:
    cache: RecentLookups[str] = RecentLookups(0.5, clock=Clock())
    reads = Reads()
    first = await _started(cache, reads, 1)
    cache.forget()  # a write through this instance
    second = await _started(cache, reads, 1)
    reads.gate.set()
    assert await asyncio.gather(*first, *second) == ["alice#1", "alice#2"]
    assert cache.get("k") == "alice#2"  # only the read sent after the write is kept


async def test_a_read_sent_longer_ago_than_the_bound_is_not_joined() -> None:
    clock = Clock()
    cache: RecentLookups[str] = RecentLookups(0.5, clock=clock)
    reads = Reads()
    slow = await _started(cache, reads, 1)
    clock.now += 0.6  # CouchDB is slow: that read was sent 0.6 s ago
    late = await _started(cache, reads, 1)
    reads.gate.set()
    assert await asyncio.gather(*slow, *late) == ["alice#1", "alice#2"]


async def test_an_answer_not_worth_keeping_is_read_again_by_those_who_joined() -> None:
    cache: RecentLookups[str] = RecentLookups(0.5, clock=Clock())
    reads = Reads()
    tasks = [
        asyncio.create_task(cache.read_once("k", reads, lambda v: v != "alice#1")) for _ in range(3)
    ]
    await asyncio.sleep(0)
    reads.gate.set()
    answers = await asyncio.gather(*tasks)
    assert answers[0] == "alice#1" and all(a != "alice#1" for a in answers[1:])
    assert reads.calls >= 2


async def test_a_failed_read_fails_every_lookup_that_joined_it_and_is_not_kept() -> None:
    cache: RecentLookups[str] = RecentLookups(0.5, clock=Clock())
    reads = Reads()
    reads.fail = ConnectionError("CouchDB went away")
    tasks = await _started(cache, reads, 3)
    reads.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert reads.calls == 1
    reads.fail = None
    assert await cache.read_once("k", reads, everything) == "alice#2"


@pytest.mark.parametrize("seconds", [0.0])
async def test_zero_reads_every_time_even_with_a_read_under_way(seconds: float) -> None:
    cache: RecentLookups[str] = RecentLookups(seconds, clock=Clock())
    reads = Reads()
    tasks = await _started(cache, reads, 3)
    reads.gate.set()
    await asyncio.gather(*tasks)
    assert reads.calls == 3
