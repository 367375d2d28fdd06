"""The inventory API in-process: validation, scopes, enrolment, and the device check."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from device_helpers import IMEIS, Client, Devices, as_user

from device_registry import embedded_sql, enrolment
from device_registry.context import REGISTRY
from device_registry.lookup import DeviceOwner, device_for_phone
from sync.app import create_app
from sync.appkeys import STORE
from sync.config import Config
from sync.errors import StoreUnavailable
from sync.ratelimit import Limit

CHANGES = "/health/_changes"


# -- the inventory ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "status", "reason"),
    [
        ({"imei": "490154203237519"}, 400, "wrong check digit"),
        ({"imei": IMEIS[1]}, 409, f"IMEI {IMEIS[1]} is already registered to device SN1"),
        ({"imei2": IMEIS[1]}, 409, "already registered to device SN1"),
        ({"serial": "sn1"}, 409, "serial SN1 is already in the inventory"),
        ({"phone": "0712345678"}, 400, "must be international"),
        ({"phone": "+254 712 345 678"}, 409, "+254712345678 is in use by active device SN1"),
        ({"worker": "nobody"}, 404, "unknown worker 'nobody'"),
        ({"worker": "admin"}, 400, "admin is a admin; devices are assigned to CHWs and"),
        ({"place": "nowhere"}, 404, "place 'nowhere' does not exist"),
        ({"serial": "SN 2"}, 400, "serial number 'SN 2'"),
    ],
)
async def test_invalid_devices_are_refused_with_a_specific_message(
    devices: Devices, fields: dict[str, Any], status: int, reason: str
) -> None:
    await devices.add("SN1", IMEIS[1], phone="+254712345678")
    body = {"serial": "SN2", "imei": IMEIS[2], **fields}
    got, answer = await devices.call("POST", "/api/v1/devices", body=body)
    assert (got, answer["reason"]) == (status, answer["reason"])
    assert reason in answer["reason"]
    _, listing = await devices.call("GET", "/api/v1/devices")
    assert [d["serial"] for d in listing["devices"]] == ["SN1"]  # nothing half-written


async def test_impossible_transitions_are_refused(devices: Devices) -> None:
    await devices.add("SN1", IMEIS[0], worker="alice")
    assert (await devices.mark("SN1", "retired"))[0] == 200
    status, body = await devices.call(
        "POST", "/api/v1/devices/SN1/assign", body={"worker": "alice"}
    )
    assert status == 409
    assert body == {
        "error": "invalid_transition",
        "reason": "a device cannot go from retired to assigned (allowed: none: it is final)",
    }
    status, body = await devices.mark("SN1", "misplaced")
    assert (status, body["error"]) == (400, "bad_request")


async def test_a_sim_number_is_freed_when_its_phone_is_lost(devices: Devices) -> None:
    await devices.add("OLD", IMEIS[0], worker="alice", phone="+254712345678")
    await devices.mark("OLD", "lost")
    await devices.add("NEW", IMEIS[1], worker="alice", phone="+254712345678")
    status, body = await devices.mark("OLD", "found")  # back in stock: the number is taken
    assert (status, body["reason"]) == (
        409,
        "phone number +254712345678 is in use by active device NEW",
    )


async def test_history_keeps_who_when_what_and_why(devices: Devices) -> None:
    await devices.add("SN1", IMEIS[0], worker="alice")
    await devices.call("POST", "/api/v1/devices/SN1/assign", "sam", {"worker": "alice"})
    await devices.call(
        "POST", "/api/v1/devices/SN1/status", "sam", {"status": "lost", "reason": "left on a bus"}
    )
    await devices.mark("SN1", "found")
    await devices.call("POST", "/api/v1/devices/SN1/assign", "sam", {"worker": "alice"})
    _, body = await devices.call("GET", "/api/v1/devices/SN1", "sam")
    steps = [
        (
            h["actor"],
            h["action"],
            h["from_status"],
            h["to_status"],
            h["from_worker"],
            h["to_worker"],
            h["reason"],
        )
        for h in reversed(body["history"])
    ]
    assert steps == [
        ("admin", "added", None, "in_stock", None, None, ""),
        ("admin", "assigned", "in_stock", "assigned", None, "alice", ""),
        ("sam", "lost", "assigned", "lost", "alice", "alice", "left on a bus"),
        ("admin", "in_stock", "lost", "in_stock", "alice", None, ""),
        ("sam", "assigned", "in_stock", "assigned", None, "alice", ""),
    ]
    assert all(h["at"].endswith("+00:00") for h in body["history"])


async def test_editing_details_validates_them(devices: Devices) -> None:
    await devices.add("SN1", IMEIS[0], worker="alice")
    status, body = await devices.call(
        "PATCH", "/api/v1/devices/SN1", "sam", {"phone": "+254 700 000 001", "model": "itel A56"}
    )
    assert (status, body["phone"], body["model"]) == (200, "+254700000001", "itel A56")
    status, body = await devices.call("PATCH", "/api/v1/devices/SN1", "sam", {"imei": IMEIS[1]})
    assert (status, body["error"]) == (400, "bad_request")


async def test_json_bodies_must_say_so(client: Client) -> None:
    response = await client.post(
        "/api/v1/devices", data='{"serial": "SN1"}', headers=as_user("admin")
    )
    assert response.status == 415


# -- scopes ---------------------------------------------------------------------------------
async def fleet(devices: Devices) -> None:
    await devices.add("A1", IMEIS[0], worker="alice")
    await devices.add("B1", IMEIS[1], worker="bob")
    await devices.add("C1", IMEIS[2], worker="carol")
    await devices.add("STOCK-A", IMEIS[3], place="district-a")
    await devices.add("STOCK-C", IMEIS[4], place="area-c1")


async def test_a_supervisor_sees_only_devices_in_their_read_scope(devices: Devices) -> None:
    await fleet(devices)
    _, everything = await devices.call("GET", "/api/v1/devices")
    assert [d["serial"] for d in everything["devices"]] == ["A1", "B1", "C1", "STOCK-A", "STOCK-C"]
    _, mine = await devices.call("GET", "/api/v1/devices", "sam")
    assert [d["serial"] for d in mine["devices"]] == ["A1", "B1", "STOCK-A"]
    assert mine["counts"]["assigned"] == 2 and mine["counts"]["in_stock"] == 1
    assert (await devices.call("GET", "/api/v1/devices/C1", "sam"))[0] == 404
    assert (await devices.mark("C1", "lost", "sam"))[0] == 404
    _, only_a = await devices.call("GET", "/api/v1/devices?place=district-a&sort=serial", "sam")
    assert [d["serial"] for d in only_a["devices"]] == ["A1", "STOCK-A"]


async def test_a_supervisor_changes_only_what_they_capture(devices: Devices) -> None:
    await fleet(devices)
    status, body = await devices.mark("B1", "lost", "sam")  # district-b: read only
    assert (status, body["reason"]) == (403, "device B1 belongs to places you may only read")
    status, body = await devices.call(
        "POST", "/api/v1/devices/STOCK-A/assign", "sam", {"worker": "bob"}
    )
    assert (status, body["reason"]) == (403, "worker bob is not in your scope")
    new = {"serial": "N1", "imei": IMEIS[5]}
    status, body = await devices.call("POST", "/api/v1/devices", "sam", new)
    assert (status, body["reason"][:31]) == (400, "give the place where the device")
    status, _ = await devices.call("POST", "/api/v1/devices", "sam", {**new, "place": "area-c1"})
    assert status == 403
    status, _ = await devices.call("POST", "/api/v1/devices", "sam", {**new, "place": "area-a2"})
    assert status == 201


async def test_workers_do_not_use_the_registry(devices: Devices) -> None:
    token = await devices.issued("A1", IMEIS[0], "alice")
    status, body = await devices.call("GET", "/api/v1/devices", "alice", token=token)
    assert (status, body["error"]) == (403, "forbidden")


async def test_csv_download(devices: Devices) -> None:
    await fleet(devices)
    await devices.call("PATCH", "/api/v1/devices/A1", body={"notes": "=cmd|' /C calc'!A0"})
    status, text = await devices.call("GET", "/api/v1/devices?format=csv&sort=serial", "sam")
    lines = text.splitlines()
    assert status == 200
    assert lines[0].startswith("serial,status,worker,places,model,imei")
    assert [line.split(",")[0] for line in lines[1:]] == ["A1", "B1", "STOCK-A"]
    assert "'=cmd" in lines[1]


async def test_an_unknown_list_format_is_refused_not_answered_as_json(devices: Devices) -> None:
    """Found with schemathesis: ?format=null (or xml) answered JSON as if it were asked."""
    for fmt in ("null", "xml", "CSV"):
        status, body = await devices.call("GET", f"/api/v1/devices?format={fmt}", "sam")
        assert (status, body["reason"]) == (
            400,
            "format must be json or csv (or send Accept: text/csv)",
        )
    status, body = await devices.call("GET", "/api/v1/devices?format=json", "sam")
    assert status == 200 and "devices" in body


# -- enrolment ----------------------------------------------------------------------------
async def test_an_enrolment_code_works_once_for_its_worker_and_device(devices: Devices) -> None:
    await devices.add("A1", IMEIS[0], worker="alice")
    await devices.add("A2", IMEIS[1], worker="alice")
    code = await devices.code("A1", "sam")
    enroll = "/api/v1/devices/enroll"
    tries = [
        ("bob", {"code": code, "serial": "A1"}, 403, "issued to another worker"),
        ("alice", {"code": code, "serial": "A2"}, 403, "is for device A1, not A2"),
        ("alice", {"code": "ZZZZZ-ZZZZZ", "serial": "A1"}, 403, "unknown enrolment code"),
        ("alice", {"code": "hello", "serial": "A1"}, 403, "that is not an enrolment code"),
        ("alice", {"code": code.lower(), "serial": "a1"}, 201, None),
        ("alice", {"code": code, "serial": "A1"}, 403, "already used"),
    ]
    for user, body, status, reason in tries:
        got, answer = await devices.call("POST", enroll, user, body)
        assert got == status, (user, body, answer)
        if reason is not None:
            assert answer["error"] == "enrolment_refused" and reason in answer["reason"]
    assert "device_token" in answer or got == 403


async def test_a_new_code_voids_the_old_and_enrolling_again_revokes_the_old_token(
    devices: Devices,
) -> None:
    first = await devices.issued("A1", IMEIS[0], "alice")
    stale = await devices.code("A1")
    second = await devices.enrol("A1", "alice")
    status, body = await devices.call(
        "POST", "/api/v1/devices/enroll", "alice", {"code": stale, "serial": "A1"}
    )
    assert (status, "void" in body["reason"]) == (403, True)
    assert (await devices.call("GET", CHANGES, "alice", token=second))[0] == 200
    status, body = await devices.in_session("GET", CHANGES, "alice", token=first)
    assert (status, body["reason"]) == (
        401,
        "Device A1 is revoked: it was enrolled again; a newer token replaced this one.",
    )


async def test_codes_expire(client: Client, devices: Devices) -> None:
    await devices.add("A1", IMEIS[0], worker="alice")
    code = await devices.code("A1")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=25)

    def run(conn: sqlite3.Connection) -> enrolment.Enrolment:
        return embedded_sql.enrol(conn, code, "A1", "alice", now=later)

    with pytest.raises(enrolment.EnrolmentRefused, match="expired at"):
        await client.app[STORE].write_tx(run)


async def test_codes_are_only_for_assigned_devices(devices: Devices) -> None:
    await devices.add("S1", IMEIS[0], place="area-a1")
    status, body = await devices.call("POST", "/api/v1/devices/S1/enrolment-code")
    assert (status, body["reason"][:27]) == (409, "device S1 is in_stock: assi")


async def test_issuing_a_code_answers_with_text_and_qr(devices: Devices) -> None:
    await devices.add("A1", IMEIS[0], worker="alice")
    status, body = await devices.call("POST", "/api/v1/devices/A1/enrolment-code", "sam")
    assert status == 201
    assert body["qr_svg"].startswith("<svg") and '"serial":"A1"' in body["qr_payload"]
    assert body["worker"] == "alice" and len(body["code"]) == 11


# -- the device check ---------------------------------------------------------------------------
async def test_a_worker_needs_an_enrolled_device(devices: Devices) -> None:
    status, body = await devices.in_session("GET", CHANGES, "alice")
    assert (status, body["error"]) == (401, "unauthorized")
    assert "not enrolled: the app must send X-Device-Token" in body["reason"]
    status, body = await devices.in_session("GET", CHANGES, "alice", token="made-up")
    assert (status, body["reason"][:33]) == (401, "Unknown X-Device-Token: this devi")
    assert (await devices.call("GET", CHANGES, "admin"))[0] == 200  # admins are exempt


async def test_a_supervisor_phone_is_bound_to_its_device(devices: Devices) -> None:
    """A supervisor's phone holds a district's records: replication needs an enrolled
    device, exactly as for a CHW; the console and the JSON APIs do not."""
    status, body = await devices.in_session("GET", CHANGES, "sam")
    assert status == 401 and "not enrolled" in body["reason"]
    assert (await devices.call("GET", "/health/", "sam"))[0] == 401
    assert (await devices.call("POST", "/health/_bulk_docs", "sam", {"docs": []}))[0] == 401
    assert (await devices.call("GET", "/api/v1/devices", "sam"))[0] == 200
    assert (await devices.in_session("GET", "/supervisor/devices", "sam"))[0] == 200
    token = await devices.issued("S1", IMEIS[0], "sam")
    assert (await devices.call("GET", CHANGES, "sam", token=token))[0] == 200
    assert (await devices.call("POST", "/health/_bulk_docs", "sam", {"docs": []}, token))[0] == 201
    await devices.mark("S1", "lost")
    status, body = await devices.in_session("GET", CHANGES, "sam", token=token)
    assert (status, body["reason"]) == (401, "Device S1 is revoked: it was reported lost.")


async def test_devices_go_to_roles_that_replicate(devices: Devices) -> None:
    await devices.add("A1", IMEIS[0])
    for worker in ("alice", "sam"):
        status, body = await devices.call(
            "POST", "/api/v1/devices/A1/assign", body={"worker": worker}
        )
        assert (status, body["worker"]) == (200, worker)
    status, body = await devices.call("POST", "/api/v1/devices/A1/assign", body={"worker": "admin"})
    assert (status, body["reason"]) == (
        400,
        "admin is a admin; devices are assigned to CHWs and supervisors",
    )


async def test_a_token_is_bound_to_its_worker(devices: Devices) -> None:
    token = await devices.issued("A1", IMEIS[0], "alice")
    status, body = await devices.in_session("GET", CHANGES, "bob", token=token)
    assert (status, body["reason"]) == (
        401,
        "The X-Device-Token of device A1 was issued to another worker.",
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"status": "lost"}, "Device A1 is revoked: it was reported lost."),
        ({"status": "stolen"}, "Device A1 is revoked: it was reported stolen."),
        ({"status": "retired"}, "Device A1 is revoked: it was retired."),
        ({"status": "in_repair"}, "Device A1 is revoked: it was sent for repair."),
        ({"worker": "bob"}, "Device A1 is revoked: it was reassigned to another worker."),
    ],
)
async def test_revocation_refuses_the_very_next_request(
    devices: Devices, change: dict[str, str], reason: str
) -> None:
    token = await devices.issued("A1", IMEIS[0], "alice")
    other = await devices.issued("A2", IMEIS[1], "alice")
    assert (await devices.call("GET", CHANGES, "alice", token=token))[0] == 200
    action = "status" if "status" in change else "assign"
    status, _ = await devices.call("POST", f"/api/v1/devices/A1/{action}", "admin", change)
    assert status == 200
    status, body = await devices.in_session("GET", CHANGES, "alice", token=token)
    assert (status, body) == (401, {"error": "unauthorized", "reason": reason})
    assert (await devices.call("GET", CHANGES, "alice", token=other))[0] == 200


async def test_a_found_phone_must_be_enrolled_anew(devices: Devices) -> None:
    token = await devices.issued("A1", IMEIS[0], "alice")
    await devices.mark("A1", "lost")
    await devices.mark("A1", "found")
    await devices.call("POST", "/api/v1/devices/A1/assign", body={"worker": "alice"})
    assert (await devices.call("GET", CHANGES, "alice", token=token))[0] == 401
    fresh = await devices.enrol("A1", "alice")
    assert (await devices.call("GET", CHANGES, "alice", token=fresh))[0] == 200


async def test_enrolment_can_be_switched_off_but_revoked_tokens_stay_revoked(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> None:
    client = await aiohttp_client(create_app(replace(config, require_enrolment=False)))
    devices = Devices(client)
    token = await devices.issued("A1", IMEIS[0], "alice")
    await devices.mark("A1", "stolen")
    assert (await devices.call("GET", CHANGES, "alice"))[0] == 200
    assert (await devices.call("GET", CHANGES, "alice", token=token))[0] == 401


async def test_refused_attempts_are_recorded(devices: Devices) -> None:
    token = await devices.issued("A1", IMEIS[0], "alice")
    await devices.issued("C1", IMEIS[1], "carol")
    await devices.mark("A1", "lost")
    await devices.call("GET", CHANGES, "alice", token=token)
    await devices.call("POST", "/health/_bulk_docs", "alice", {"docs": []}, token=token)
    await devices.call("GET", CHANGES, "carol", token="guess")
    _, body = await devices.call("GET", "/api/v1/devices/_refusals")
    seen = [
        (r["user"], r["serial"], r["kind"], r["status"], r["method"], r["path"])
        for r in body["refusals"]
    ]
    assert seen == [
        ("carol", None, "unknown_token", 401, "GET", CHANGES),
        ("alice", "A1", "revoked", 401, "POST", "/health/_bulk_docs"),
        ("alice", "A1", "revoked", 401, "GET", CHANGES),
    ]
    _, scoped = await devices.call("GET", "/api/v1/devices/_refusals", "sam")
    assert {r["serial"] for r in scoped["refusals"]} == {"A1"}


async def test_too_many_refusals_slow_the_device_down_but_not_its_neighbours(
    client: Client, devices: Devices
) -> None:
    client.app[REGISTRY].guard.limiter.limits.update(
        device=Limit(3, 600.0), ip=Limit(5, 600.0), user=Limit(3, 600.0)
    )
    stolen = await devices.issued("A1", IMEIS[0], "alice")
    honest = await devices.issued("B1", IMEIS[1], "bob")
    await devices.mark("A1", "stolen")
    session = await devices.earlier_session("alice")
    cookie = {"Cookie": f"AuthSession={session}", "X-Device-Token": stolen}
    statuses = [(await client.get(CHANGES, headers=cookie)).status for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    body = await (await client.get(CHANGES, headers=cookie)).json()
    assert body["error"] == "too_many_requests" and "reported stolen" in body["reason"]
    # Same address (every test request comes from 127.0.0.1), now over its limit too:
    assert (await devices.in_session("GET", CHANGES, "bob", token="guess"))[0] == 429
    # ... yet a valid device there syncs, and supervisors are not touched.
    assert (await devices.call("GET", CHANGES, "bob", token=honest))[0] == 200
    assert (await devices.call("GET", "/api/v1/devices", "sam"))[0] == 200
    await devices.drain()
    _, body = await devices.call("GET", "/api/v1/devices/_refusals")
    assert [r["status"] for r in body["refusals"]].count(429) == 4


async def test_wrong_enrolment_codes_are_limited_per_address(
    client: Client, devices: Devices
) -> None:
    """Unknown codes are refused before any password is checked, so they count per address."""
    client.app[REGISTRY].guard.limiter.limits.update(ip=Limit(2, 600.0))
    await devices.add("A1", IMEIS[0], worker="alice")
    code = await devices.code("A1")
    body = {"code": "ZZZZZ-ZZZZZ", "serial": "A1"}
    tries = [
        (await devices.call("POST", "/api/v1/devices/enroll", "alice", body))[0] for _ in range(3)
    ]
    assert tries == [403, 403, 429]
    right = {"code": code, "serial": "A1"}
    assert (await devices.call("POST", "/api/v1/devices/enroll", "alice", right))[0] == 429


async def test_sync_requests_update_last_sync_and_versions_at_most_once_a_minute(
    client: Client, devices: Devices
) -> None:
    token = await devices.issued("A1", IMEIS[0], "alice")
    store = client.app[STORE]

    async def seen() -> tuple[str, str, str]:
        await devices.drain()
        row = await store.read(
            lambda c: c.execute("SELECT last_sync, app_version, os_version FROM devices").fetchone()
        )
        return row[0], row[1], row[2]

    async def backdate() -> None:
        await store.write_tx(lambda c: c.execute("UPDATE devices SET last_sync='2000-01-01'"))

    versions = {"X-App-Version": "2.4.1", "X-OS-Version": "Android 11"}
    await devices.call("GET", CHANGES, "alice", token=token, **versions)
    assert (await seen())[1:] == ("2.4.1", "Android 11")
    await backdate()
    await devices.call("GET", CHANGES, "alice", token=token, **versions)
    assert (await seen())[0] == "2000-01-01"  # heard from a moment ago: no write
    await devices.call("GET", CHANGES, "alice", token=token, **{"X-App-Version": "2.5.0"})
    last, app, os_version = await seen()  # a new version is worth a write at once
    assert (last > "2000-01-01", app, os_version) == (True, "2.5.0", "Android 11")
    await backdate()
    client.app[REGISTRY].guard.touch_every = 0.0
    await devices.call("GET", CHANGES, "alice", token=token)
    assert (await seen())[0] > "2000-01-01"


# -- lookup for SMS -----------------------------------------------------------------------
async def test_phone_number_to_worker_and_place(client: Client, devices: Devices) -> None:
    await devices.add("A1", IMEIS[0], worker="alice", phone="+254712345678")
    await devices.add("S1", IMEIS[1], place="area-b1", phone="+254700000002")
    app = client.app
    assert await device_for_phone(app, "+254 712 345 678") == DeviceOwner(
        "A1", "alice", ("area-a1",)
    )
    assert await device_for_phone(app, "+254700000002") is None  # in stock: nobody's
    assert await device_for_phone(app, "0712345678") is None  # not E.164
    await devices.mark("A1", "stolen")  # still named, so its texts are flagged, never recorded
    assert await device_for_phone(app, "+254712345678") == DeviceOwner(
        "A1", "alice", ("area-a1",), "stolen"
    )
    await devices.mark("A1", "found")
    assert await device_for_phone(app, "+254712345678") is None  # in stock again: nobody's


async def test_a_lookup_while_the_registry_is_not_open_fails() -> None:
    """The SMS processor then holds the message back rather than call its sender unknown."""
    with pytest.raises(StoreUnavailable):
        await device_for_phone(web.Application(), "+254712345678")


def test_lookup_before_the_registry_has_tables_knows_nobody() -> None:
    with closing(sqlite3.connect(":memory:")) as conn:
        assert embedded_sql.owner_of_phone(conn, "+254712345678") is None


async def test_a_long_poll_of_a_phone_marked_lost_meanwhile_sends_nothing(
    devices: Devices,
) -> None:
    """The phone waits on the feed, is marked lost, then a record of its place is written:
    the poll ends at once with no ids or revs, and the phone's next request is refused."""
    token = await devices.issued("A1", IMEIS[0], "alice")
    status, start = await devices.call("GET", CHANGES, "alice", token=token)
    assert status == 200
    url = f"{CHANGES}?feed=longpoll&timeout=10000&since={start['last_seq']}"
    poll = asyncio.create_task(devices.call("GET", url, "alice", token=token))
    await asyncio.sleep(0.2)
    assert (await devices.mark("A1", "lost"))[0] == 200
    written = {"docs": [{"_id": "visit-after-loss", "place": "area-a1"}]}
    assert (await devices.call("POST", "/health/_bulk_docs", "admin", written))[0] == 201
    status, answer = await asyncio.wait_for(poll, 5)
    assert (status, answer["results"]) == (200, [])
    assert "visit-after-loss" not in str(answer)
    status, refused = await devices.in_session("GET", CHANGES, "alice", token=token)
    assert (status, "lost" in refused["reason"]) == (401, True)


async def test_a_conflict_names_no_device_outside_the_callers_scope(devices: Devices) -> None:
    """carol's phone (district-c) does not exist for sam: a clash with it says so, no more."""
    await devices.add("C1", IMEIS[2], worker="carol", phone="+254712345678")
    clashes = [
        ({"imei": IMEIS[2]}, f"IMEI {IMEIS[2]} is already registered to a device outside"),
        ({"phone": "+254712345678"}, "in use by an active device outside your scope"),
    ]
    for fields, reason in clashes:
        body = {"serial": "S9", "imei": IMEIS[0], "place": "area-a1", **fields}
        status, answer = await devices.call("POST", "/api/v1/devices", "sam", body)
        assert status == 409 and reason in answer["reason"], answer
        assert "C1" not in answer["reason"] and "carol" not in answer["reason"]
    status, answer = await devices.call("POST", "/api/v1/devices", "admin", body)
    assert status == 409 and "active device C1" in answer["reason"]  # admins see every device


async def test_an_unknown_code_tells_nothing_about_the_password(
    client: Client, devices: Devices
) -> None:
    """Whoever guesses alice's password without a real code learns nothing from enrol."""
    body = {"code": "ZZZZZ-ZZZZZ", "serial": "A1"}
    answers = []
    for password in ("correct horse", "wrong guess"):
        raw = base64.b64encode(f"alice:{password}".encode()).decode()
        response = await client.post(
            "/api/v1/devices/enroll", json=body, headers={"Authorization": f"Basic {raw}"}
        )
        answers.append((response.status, await response.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 403 and "unknown enrolment code" in answers[0][1]["reason"]
