"""The patient-ID port's contract (barcode.ports), run against every adapter.

    memory     barcode.memory, a dict
    embedded   barcode.embedded on a real SQLite file (the server's writer), and the
               CLI's way in (a transaction on the file) as the second writer
    couchdb    barcode.couchdb on a CouchDB-API server (pouchdb-server, or a real
               CouchDB with FIELDSYNC_TEST_COUCHDB_URL); a second client and adapter
               on the same database stands for a second fieldsync instance

Every adapter must hand out each ID once, never hand out a retired one, keep
blocks disjoint from each other and from single IDs, stay unique under 200
concurrent calls, and refuse bad input with a clear ValueError.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from couchdb_server import couch_request
from couchdb_server import db_path as couch_path

from barcode.checkdigit import Scheme, validate
from barcode.couchdb import CouchPatientIds
from barcode.embedded import EmbeddedPatientIds
from barcode.ids import IdFormat
from barcode.memory import MemoryPatientIds
from barcode.ports import Block, PatientIdStore, Status
from sync.config import Endpoint
from sync.store.couchdb.client import CouchClient
from sync.store.schema import db_path
from sync.store.sqlite import SqliteStore

FMT = IdFormat()
ADAPTERS = ["memory", "embedded", "couchdb"]
# The adapters with a second way in to the same storage (an in-memory store has none).
SHARED = pytest.mark.parametrize("backend", ["embedded", "couchdb"], indirect=True)


@dataclass
class Backend:
    kind: str
    store: PatientIdStore
    # A second adapter on the same storage (another instance, the CLI); None for memory.
    second: PatientIdStore | None
    closers: list[Callable[[], Any]] = field(default_factory=list)


@pytest.fixture(params=ADAPTERS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield Backend("memory", MemoryPatientIds(), None)
        return
    if request.param == "embedded":
        sqlite = SqliteStore(db_path(tmp_path))
        store = await EmbeddedPatientIds.opened(sqlite)
        yield Backend("embedded", store, EmbeddedPatientIds.on_file(tmp_path))
        await sqlite.close()
        return
    url: str = request.getfixturevalue("couchdb_url")
    prefix: str = request.getfixturevalue("couch_prefix")
    clients = [CouchClient(Endpoint.parse(url)) for _ in range(2)]
    first, second = (CouchPatientIds.for_prefix(c, prefix) for c in clients)
    yield Backend("couchdb", first, second)
    for client in clients:
        await client.close()


def all_valid_and_distinct(ids: Sequence[str], scheme: Scheme = Scheme.LUHN30) -> bool:
    return len(set(ids)) == len(ids) and all(validate(i, scheme).valid for i in ids)


# -- unique -------------------------------------------------------------------------------


async def test_ids_are_unique_valid_and_recorded_as_issued(backend: Backend) -> None:
    store = backend.store
    first = await store.allocate(FMT, 1, "alice")
    more = await store.allocate(FMT, 30, "bob")
    ids = first + more
    assert len(ids) == 31
    assert all_valid_and_distinct(ids)
    assert first == [FMT.id_for(FMT.first_number)]  # numbering starts where idgen's does
    assert {await store.status_of(i) for i in ids} == {Status.ISSUED}
    assert await store.status_of(FMT.id_for(FMT.first_number + 100_000)) is None


@pytest.mark.parametrize("scheme", list(Scheme))
async def test_every_scheme_allocates_valid_ids(backend: Backend, scheme: Scheme) -> None:
    ids = await backend.store.allocate(IdFormat(scheme), 12, "test")
    assert len(ids) == 12
    assert all_valid_and_distinct(ids, scheme)


# -- never reused ---------------------------------------------------------------------------


async def test_retired_ids_are_never_handed_out_again(backend: Backend) -> None:
    store = backend.store
    issued = await store.allocate(FMT, 3, "alice")
    # Retired before they were ever reached: a card printed elsewhere, say.
    upcoming = [FMT.id_for(FMT.first_number + n) for n in (4, 6, 7)]
    for patient_id in [issued[1], *upcoming]:
        assert await store.retire(FMT, patient_id, "admin", "card lost") == patient_id
    later = await store.allocate(FMT, 20, "alice")
    block = await store.reserve_block(FMT, 10, "phone-1", "alice")
    handed_out = later + list(block.ids)
    assert not set(handed_out) & set(issued)
    assert not set(handed_out) & set(upcoming)
    assert all_valid_and_distinct(issued + handed_out)
    assert await store.status_of(issued[1]) is Status.RETIRED
    assert await store.status_of(upcoming[0]) is Status.RETIRED
    assert await store.status_of(issued[0]) is Status.ISSUED


async def test_retiring_twice_and_in_any_spelling_is_one_retirement(backend: Backend) -> None:
    store = backend.store
    [patient_id] = await store.allocate(FMT, 1, "alice")
    spaced = f"{patient_id[:3]}-{patient_id[3:]}".lower()
    assert await store.retire(FMT, spaced, "admin", "damaged") == patient_id
    assert await store.retire(FMT, patient_id, "sam", "again") == patient_id
    assert await store.status_of(patient_id) is Status.RETIRED


@SHARED
async def test_an_id_retired_through_one_adapter_is_skipped_by_another(backend: Backend) -> None:
    """A second instance (or the CLI) retires an ID this one has not reached yet."""
    assert backend.second is not None
    await backend.store.allocate(FMT, 1, "alice")  # this adapter now holds numbers ahead
    ahead = [FMT.id_for(FMT.first_number + n) for n in (1, 2, 3)]
    for patient_id in ahead:
        await backend.second.retire(FMT, patient_id, "admin", "printed elsewhere")
    later = await backend.store.allocate(FMT, 10, "alice")
    assert not set(later) & set(ahead)


# -- blocks -------------------------------------------------------------------------------------


async def test_blocks_are_disjoint_recorded_and_listed_per_device(backend: Backend) -> None:
    store = backend.store
    one = await store.reserve_block(FMT, 25, "phone-1", "alice")
    singles = await store.allocate(FMT, 5, "bob")
    two = await store.reserve_block(FMT, 10, "phone-2", "bob")
    three = await store.reserve_block(FMT, 3, "phone-1", "sam")
    everything = list(one.ids) + singles + list(two.ids) + list(three.ids)
    assert [len(one.ids), len(two.ids), len(three.ids)] == [25, 10, 3]
    assert all_valid_and_distinct(everything)
    assert len({one.id, two.id, three.id}) == 3
    assert (one.device, one.requested_by) == ("phone-1", "alice")
    assert await store.blocks_of("phone-1") == [one, three]
    assert await store.blocks_of("phone-2") == [two]
    assert await store.blocks_of("phone-3") == []
    assert await store.blocks_of("phone") == []  # a prefix of a device's name is another device
    assert {await store.status_of(i) for i in one.ids} == {Status.RESERVED}


async def test_a_device_name_with_separators_is_its_own_device(backend: Backend) -> None:
    odd = await backend.store.reserve_block(FMT, 2, "imei:35/209 900", "alice")
    other = await backend.store.reserve_block(FMT, 2, "imei:35", "alice")
    assert await backend.store.blocks_of("imei:35/209 900") == [odd]
    assert await backend.store.blocks_of("imei:35") == [other]


# -- concurrency ----------------------------------------------------------------------------------


async def test_200_concurrent_allocations_share_no_id(backend: Backend) -> None:
    store = backend.store
    singles = [store.allocate(FMT, 1 + n % 3, f"user-{n % 7}") for n in range(200)]
    blocks = [store.reserve_block(FMT, 20, f"phone-{n}", "sam") for n in range(10)]
    results = await asyncio.gather(*singles, *blocks)
    ids = [i for r in results[:200] for i in r]  # type: ignore[union-attr]
    ids += [i for b in results[200:] for i in b.ids]  # type: ignore[union-attr]
    assert len(ids) == sum(1 + n % 3 for n in range(200)) + 10 * 20
    assert all_valid_and_distinct(ids)


@SHARED
async def test_two_ways_in_allocating_at_once_share_no_id(backend: Backend) -> None:
    """Two instances on one CouchDB, or the server and the CLI on one file."""
    assert backend.second is not None
    stores = [backend.store, backend.second]
    calls = [stores[n % 2].allocate(FMT, 2, "x") for n in range(60)]
    blocks = [stores[n % 2].reserve_block(FMT, 15, f"phone-{n}", "x") for n in range(6)]
    results = await asyncio.gather(*calls, *blocks)
    ids = [i for r in results[:60] for i in r]  # type: ignore[union-attr]
    ids += [i for b in results[60:] for i in b.ids]  # type: ignore[union-attr]
    assert len(ids) == 60 * 2 + 6 * 15
    assert all_valid_and_distinct(ids)
    listed: list[Block] = []
    for n in range(6):
        listed += await backend.store.blocks_of(f"phone-{n}")
    assert {b.id for b in listed} == {b.id for b in results[60:]}  # type: ignore[union-attr]


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, -1, True, "3", 2.0])
async def test_a_count_that_is_not_a_whole_number_above_zero_is_refused(
    backend: Backend, count: Any
) -> None:
    with pytest.raises(ValueError, match="count must be a whole number of at least 1"):
        await backend.store.allocate(FMT, count, "alice")
    with pytest.raises(ValueError, match="size must be a whole number of at least 1"):
        await backend.store.reserve_block(FMT, count, "phone-1", "alice")


@pytest.mark.parametrize("device", ["", "   "])
async def test_a_block_needs_a_device(backend: Backend, device: str) -> None:
    with pytest.raises(ValueError, match="device must name the device"):
        await backend.store.reserve_block(FMT, 3, device, "alice")


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("10000Y", "'10000Y': check digit is wrong"),
        ("", "ID is empty"),
        ("10!00X", "character '!' at position 3 is not allowed in a luhn30 ID"),
    ],
)
async def test_retiring_something_that_is_not_an_id_is_refused(
    backend: Backend, typed: str, reason: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        await backend.store.retire(FMT, typed, "admin", "")
    # Nothing was recorded: the next ID is still the first.
    assert await backend.store.allocate(FMT, 1, "alice") == [FMT.id_for(FMT.first_number)]


# -- CouchDB: a claim that a cluster may have given twice is never used ----------------------------


async def test_an_unconfirmed_claim_is_skipped(couchdb_url: str, couch_prefix: str) -> None:
    """A 202 (fewer than a quorum took the counter's write) with a rival leaf seen on read
    back: another instance may hold the same range, so this one claims afresh beyond it."""
    client = CouchClient(Endpoint.parse(couchdb_url))
    store = CouchPatientIds.for_prefix(client, couch_prefix)
    database = couch_path(couch_prefix + "patient_ids")
    real_put = client.put_status
    rivals: list[int] = []

    async def put_then_rival(where: str, body: Any) -> int:
        status = await real_put(where, body)
        if where.endswith("counter%3Aluhn30") and not rivals:
            rivals.append(body["next"])  # a rival wrote the same range through another node
            rival = {"_id": "counter:luhn30", "_rev": "1-ffffffffffffffffffffffffffffffff"}
            rival |= {"next": body["next"], "claim": "rival"}
            answer = couch_request(
                couchdb_url,
                "POST",
                database + "/_bulk_docs",
                {"docs": [rival], "new_edits": False},
            )
            assert answer[0] == 201, answer
            return 202
        return status

    client.put_status = put_then_rival  # type: ignore[method-assign]
    try:
        ids = await store.allocate(FMT, 5, "alice")
    finally:
        await client.close()
    lost_range = {FMT.id_for(n) for n in range(FMT.first_number, rivals[0])}
    assert len(ids) == 5
    assert not set(ids) & lost_range
    assert ids[0] == FMT.id_for(rivals[0])  # the next claim starts after the rival's range


@SHARED
async def test_after_a_restart_no_number_is_handed_out_again(backend: Backend) -> None:
    """A new adapter on the same storage (a restarted or a crashed instance's successor)
    starts after everything handed out before; CouchDB skips the rest of a claimed range."""
    assert backend.second is not None
    before = await backend.store.allocate(FMT, 7, "alice")
    block = await backend.store.reserve_block(FMT, 5, "phone-1", "alice")
    after = await backend.second.allocate(FMT, 7, "bob")
    assert not set(after) & set(before + list(block.ids))
    highest = max(FMT.number_of(i[:-1]) for i in before + list(block.ids))
    assert min(FMT.number_of(i[:-1]) for i in after) > highest
