"""Patient-ID allocation: spelling, uniqueness under concurrency, retirement, device blocks."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from barcode import embedded, ports
from barcode.checkdigit import Scheme, validate
from barcode.ids import IdFormat
from barcode.routes import BARCODE, _block_device
from barcode.settings import BarcodeSettings
from sync.appkeys import STORE
from sync.errors import BadRequest, Forbidden
from sync.replication.context import Caller
from sync.scopes import PlaceTree, Role, Scope, User
from sync.store.schema import connect, db_path, initialise

FMT = IdFormat()


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    path = db_path(tmp_path)
    initialise(path)
    with closing(connect(path)) as connection:
        embedded.create_tables(connection)
        yield connection


# -- spelling -------------------------------------------------------------------------


def test_first_ids_follow_idgen_numbering() -> None:
    assert FMT.first_payload == "10000"
    assert [FMT.id_for(FMT.first_number + i) for i in range(3)] == ["10000X", "10001V", "10002T"]


@given(st.integers(min_value=0, max_value=30**9))
def test_payloads_round_trip_and_ids_validate(number: int) -> None:
    payload = FMT.payload_for(number)
    assert len(payload) >= FMT.min_payload_length
    assert FMT.number_of(payload) == number
    assert validate(FMT.id_for(number)).valid


@pytest.mark.parametrize("scheme", list(Scheme))
def test_every_scheme_allocates_valid_ids(scheme: Scheme, conn: sqlite3.Connection) -> None:
    fmt = IdFormat(scheme)
    ids = embedded.allocate(conn, fmt, 20, "test")
    assert len(set(ids)) == 20
    assert all(validate(i, scheme).valid for i in ids)


def test_payload_outside_the_alphabet_is_refused() -> None:
    with pytest.raises(ValueError, match="not in the luhn30 alphabet"):
        IdFormat(first_payload="1000B")


# -- uniqueness -------------------------------------------------------------------


async def test_concurrent_requests_never_share_an_id(api: Any) -> None:
    async def ask(index: int) -> list[str]:
        user = ("alice", "bob", "sam")[index % 3]
        status, body = await api.call("POST", "/api/v1/patient-ids", user, {"count": 7})
        assert status == 201, body
        ids: list[str] = body["ids"]
        return ids

    for user in ("alice", "bob", "sam"):  # verify each password once, not 20 times at once
        assert (await api.call("GET", "/_session", user))[0] == 200
    batches = await asyncio.gather(*(ask(i) for i in range(60)))
    ids = [patient_id for batch in batches for patient_id in batch]
    assert len(ids) == 420
    assert len(set(ids)) == 420
    assert all(validate(i).valid for i in ids)


async def test_concurrent_service_calls_and_blocks_never_share_an_id(client: Any) -> None:
    service = client.app[BARCODE].ids
    singles = [service.allocate(3, "alice") for _ in range(40)]
    blocks = [service.reserve_block(25, f"phone-{i}", "bob") for i in range(10)]
    results = await asyncio.gather(*singles, *blocks)
    ids = [i for r in results[:40] for i in r] + [i for b in results[40:] for i in b.ids]
    assert len(ids) == 40 * 3 + 10 * 25
    assert len(set(ids)) == len(ids)


def test_separate_connections_in_threads_never_share_an_id(tmp_path: Path) -> None:
    """The CLI and the server are separate connections (processes) on one file."""
    path = db_path(tmp_path)
    initialise(path)
    found: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        with closing(connect(path)) as connection:
            for _ in range(10):
                connection.execute("BEGIN IMMEDIATE")
                embedded.create_tables(connection)
                ids = embedded.allocate(connection, FMT, 5, "cli")
                connection.execute("COMMIT")
                with lock:
                    found.extend(ids)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8 * 10 * 5
    assert len(set(found)) == len(found)


# -- retirement -------------------------------------------------------------------------


def test_retired_ids_are_never_allocated(conn: sqlite3.Connection) -> None:
    first = embedded.allocate(conn, FMT, 3, "a")
    upcoming = [FMT.id_for(FMT.first_number + n) for n in (3, 5)]
    for patient_id in [first[1], *upcoming]:
        embedded.retire(conn, FMT, patient_id, "admin", "card lost")
    later = embedded.allocate(conn, FMT, 10, "a")
    assert not set(later) & set(first)
    assert not set(later) & set(upcoming)
    assert embedded.status_of(conn, first[1]) is ports.Status.RETIRED


def test_a_counter_set_back_skips_every_known_id(conn: sqlite3.Connection) -> None:
    """A restored backup or a hand edit must not hand out an ID twice."""
    issued = embedded.allocate(conn, FMT, 10, "a")
    embedded.retire(conn, FMT, issued[4], "admin", "duplicate card")
    conn.execute("UPDATE patient_id_counter SET next=?", (FMT.first_number,))
    again = embedded.allocate(conn, FMT, 5, "a")
    assert not set(again) & set(issued)


def test_retiring_a_typo_is_refused(conn: sqlite3.Connection) -> None:
    with pytest.raises(ValueError, match="check digit is wrong"):
        embedded.retire(conn, FMT, "10000Y", "admin", "")


async def test_retire_route(api: Any) -> None:
    status, body = await api.call("POST", "/api/v1/patient-ids", "alice", {"count": 2})
    issued = body["ids"]
    path = f"/api/v1/patient-ids/{issued[0]}/retire"
    assert (await api.call("POST", path, "alice", {"reason": "x"}))[0] == 403
    status, body = await api.call("POST", path, "sam", {"reason": "card damaged"})
    assert (status, body) == (200, {"id": issued[0], "status": "retired"})
    status, body = await api.call("POST", "/api/v1/patient-ids/10000Y/retire", "admin", {})
    assert status == 400
    assert "check digit is wrong" in body["reason"]


# -- blocks for devices -----------------------------------------------------------------


async def test_block_is_recorded_against_the_device(api: Any, client: Any) -> None:
    body_in = {"size": 25, "device": "phone-17"}
    status, block = await api.call("POST", "/api/v1/patient-ids/blocks", "alice", body_in)
    assert status == 201, block
    assert block["device"] == "phone-17"
    assert len(block["ids"]) == 25
    status, single = await api.call("POST", "/api/v1/patient-ids", "bob", {"count": 5})
    assert not set(single["ids"]) & set(block["ids"])

    def recorded(connection: sqlite3.Connection) -> list[ports.Block]:
        return embedded.blocks_of(connection, "phone-17")

    [stored] = await client.app[STORE].read(recorded)
    assert (stored.id, stored.device, stored.requested_by) == (block["block"], "phone-17", "alice")
    assert list(stored.ids) == block["ids"]

    def statuses(connection: sqlite3.Connection) -> set[Any]:
        return {embedded.status_of(connection, i) for i in block["ids"]}

    assert await client.app[STORE].read(statuses) == {ports.Status.RESERVED}


async def test_block_without_a_device_is_400(api: Any) -> None:
    status, body = await api.call("POST", "/api/v1/patient-ids/blocks", "alice", {"size": 5})
    assert status == 400
    assert "device is required" in body["reason"]


def _caller(device: str | None) -> Caller:
    user = User("alice", Role.CHW, ("area-a",), (), "")
    return Caller(user, Scope(frozenset({"area-a"}), frozenset({"area-a"})), PlaceTree([]), device)


def test_an_enrolled_device_reserves_for_itself() -> None:
    assert _block_device(_caller("dev-1"), None) == "dev-1"
    assert _block_device(_caller("dev-1"), "dev-1") == "dev-1"
    with pytest.raises(Forbidden):
        _block_device(_caller("dev-1"), "dev-2")
    assert _block_device(_caller(None), "dev-2") == "dev-2"
    with pytest.raises(BadRequest):
        _block_device(_caller(None), 42)


@pytest.mark.parametrize(
    ("path", "body", "user", "status"),
    [
        ("/api/v1/patient-ids", {"count": 0}, "alice", 400),
        ("/api/v1/patient-ids", {"count": 1001}, "alice", 400),
        ("/api/v1/patient-ids", {"count": "3"}, "alice", 400),
        ("/api/v1/patient-ids", {"count": True}, "alice", 400),
        ("/api/v1/patient-ids", {"count": 1}, "gw", 403),
        ("/api/v1/patient-ids/blocks", {"size": 0, "device": "d"}, "alice", 400),
        ("/api/v1/patient-ids/blocks", {"size": 5, "device": "d"}, "gw", 403),
    ],
)
async def test_allocation_refusals(
    api: Any, path: str, body: dict[str, Any], user: str, status: int
) -> None:
    assert (await api.call("POST", path, user, body))[0] == status


async def test_allocation_needs_credentials(client: Any) -> None:
    response = await client.post("/api/v1/patient-ids", json={"count": 1})
    assert response.status == 401


# -- settings ---------------------------------------------------------------------------


def test_settings_from_config() -> None:
    settings = BarcodeSettings.from_mapping({"scheme": "verhoeff", "first_payload": "50000"})
    assert settings.id_format == IdFormat(Scheme.VERHOEFF, "50000")
    assert BarcodeSettings.from_mapping({}) == BarcodeSettings()
    with pytest.raises(ValueError, match="unknown barcode settings: max_bytes"):
        BarcodeSettings.from_mapping({"max_bytes": 5})
    with pytest.raises(ValueError, match="not in the verhoeff alphabet"):
        BarcodeSettings.from_mapping({"scheme": "verhoeff", "first_payload": "1000A"})


async def test_the_configured_scheme_is_used(
    aiohttp_client: Any, config: Any, app_factory: Any
) -> None:
    config.extra["barcode"]["scheme"] = "luhn10"
    client = await aiohttp_client(app_factory(config))
    ids = await client.app[BARCODE].ids.allocate(3, "test")
    assert ids[0] == "100008"
    assert all(validate(i, Scheme.LUHN10).valid for i in ids)
