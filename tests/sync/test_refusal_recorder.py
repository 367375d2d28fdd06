"""The recorder: noting a refusal costs the push nothing and never fails it (no server here)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sync.errors import Conflict, TooLarge
from sync.refusals.memory import MemoryRefusals
from sync.refusals.ports import MAX_BODY_BYTES, UNREADABLE, NewRefusal, SealedBody
from sync.refusals.recorder import Recorder
from sync.refusals.sealing import Sealer
from sync.replication.context import WriteRefused

T0 = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)


class PlainSealer(Sealer):
    """Seals nothing (the vault's sealing is tested with the server): marks the bytes."""

    def __init__(self) -> None:
        pass

    async def warm(self) -> None:
        return None

    def seal(self, worker: str, doc_id: str, rev: str, data: bytes, truncated: bool) -> SealedBody:
        return SealedBody("test", b"sealed:" + data, truncated)


class BrokenStore(MemoryRefusals):
    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    async def record(self, refusals: Sequence[NewRefusal], per_worker: int) -> None:
        if self.fail:
            raise OSError("disk full")
        await super().record(refusals, per_worker)


def recorder(store: MemoryRefusals, **limits: int) -> Recorder:
    return Recorder(store, PlainSealer(), per_worker=100, clock=lambda: T0, **limits)


OUTSIDE = WriteRefused("place 'b' is outside your capture scope", code="outside_scope")


async def test_repeats_in_one_batch_are_one_refusal_counted() -> None:
    store = MemoryRefusals()
    noting = recorder(store)
    doc = {"_id": "r1", "_rev": "1-a", "place": "b"}
    for _ in range(3):
        noting.note("alice", "SN-1", doc, "r1", OUTSIDE)
    noting.note("alice", "SN-1", doc, "r1", Conflict())  # a conflict is no refusal
    await noting.drain()
    [kept] = await store.for_workers(None, 10)
    assert (kept.doc_id, kept.rev, kept.reason, kept.count) == ("r1", "1-a", "outside_scope", 3)
    found = await store.get(kept.id)
    assert found is not None and found[1] is not None
    assert found[1].data == b'sealed:{"_id":"r1","_rev":"1-a","place":"b"}'


async def test_a_long_body_keeps_its_first_part_only() -> None:
    store = MemoryRefusals()
    noting = recorder(store)
    doc = {"_id": "big", "pad": "x" * (3 * MAX_BODY_BYTES)}
    noting.note("alice", None, doc, "big", TooLarge("too big"))
    noting.unreadable("alice", None, b"{not json", "Request body is not valid UTF-8 JSON.")
    await noting.drain()
    rows = {r.doc_id: r for r in await store.for_workers(None, 10)}
    big = await store.get(rows["big"].id)
    assert big is not None and big[1] is not None
    assert big[1].truncated and len(big[1].data) == len(b"sealed:") + MAX_BODY_BYTES
    assert rows["big"].body_bytes > 3 * MAX_BODY_BYTES
    assert rows[UNREADABLE].reason == "unreadable" and rows[UNREADABLE].device is None


async def test_a_failing_store_loses_the_batch_but_never_fails_the_caller() -> None:
    store = BrokenStore()
    noting = recorder(store)
    noting.note("alice", None, {"_id": "r1"}, "r1", OUTSIDE)
    await noting.drain()  # logged, not raised
    store.fail = False
    noting.note("alice", None, {"_id": "r2"}, "r2", OUTSIDE)
    await noting.drain()
    assert [r.doc_id for r in await store.for_workers(None, 10)] == ["r2"]


async def test_a_writer_far_behind_drops_and_counts() -> None:
    store = MemoryRefusals()
    noting = recorder(store, max_pending=2)
    for i in range(5):
        noting.note("alice", None, {"_id": f"r{i}"}, f"r{i}", OUTSIDE)
    assert noting.dropped == 3
    await noting.drain()
    assert len(await store.for_workers(None, 10)) == 2


async def test_hostile_ids_are_cut_and_never_raise() -> None:
    store = MemoryRefusals()
    noting = recorder(store)
    noting.note("alice", None, {"_id": 42}, "", OUTSIDE)
    noting.note("alice", None, ["not", "an", "object"], "", OUTSIDE)
    noting.note("alice", None, {"_id": "y" * 5000}, "", OUTSIDE)
    await noting.drain()
    ids = sorted(r.doc_id for r in await store.for_workers(None, 10))
    assert ids[:2] == ["(no id)", "(not a string)"] and len(ids[2]) == 512
