"""Visits, deliveries, referrals, reminders, and processing that survives failures."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

import pytest
from sms_fixtures import ALICE_PHONE, BOB_PHONE, Client, FakeClock, Gateway, as_user

from barcode.checkdigit import append_check_char
from sms_gateway import embedded_sql
from sms_gateway.service import Received

JANE = "10000X"


def by_kind(listing: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [o for o in listing["outgoing"] if o["kind"] == kind]


async def test_visit_delivery_and_referral_attach_to_the_patient(gateway: Gateway) -> None:
    await gateway.send("P 3 Jane")
    [visit] = await gateway.send(f"V {JANE} 20")
    assert visit["content"] == f"ANC visit recorded for Jane ({JANE}) at 20 weeks."
    [referral] = await gateway.send(f"R {JANE} bl")
    assert referral["content"] == (
        f"Referral recorded for Jane ({JANE}): bleeding. Take her to the health facility now."
    )
    [delivery] = await gateway.send(f"D {JANE} LB 2024-04-30")
    assert (
        delivery["content"]
        == f"Delivery recorded for Jane ({JANE}): live birth. Reminders stopped."
    )
    listing = await gateway.listing(outcome="recorded")
    assert [r["form"] for r in listing["incoming"]] == ["D", "R", "V"]
    for row in listing["incoming"]:
        status, report = await gateway.doc(row["docs"][0], user="alice")
        assert (status, report["patient_id"], report["place"]) == (200, JANE, "area-a1")
    status, pregnancy = await gateway.doc("pregnancy-10000X-20240410")
    assert (pregnancy["status"], pregnancy["delivery_date"], pregnancy["outcome"]) == (
        "delivered",
        "2024-04-30",
        "LB",
    )


async def test_a_delivery_clears_the_pending_reminders(gateway: Gateway) -> None:
    await gateway.send("P 3 Jane", "P 5 Amina")
    reminders = by_kind(await gateway.listing(), "reminder")
    assert len(reminders) == 16 and {r["state"] for r in reminders} == {"pending"}
    await gateway.send(f"D {JANE} LB")
    reminders = by_kind(await gateway.listing(), "reminder")
    states = {(r["patient_id"], r["state"]) for r in reminders}
    assert states == {(JANE, "cleared"), ("10001V", "pending")}


async def test_unknown_and_out_of_scope_patients_get_a_reply_that_says_so(
    gateway: Gateway,
) -> None:
    await gateway.send("P 3 Bea", phone=BOB_PHONE)  # bob's patient: 10000X in area-b1
    nobody = append_check_char("2YYYY")
    for text in (f"V {JANE} 20", f"V {nobody} 20", f"D {JANE} LB"):
        [reply] = await gateway.send(text)
        patient = text.split()[1]
        assert reply["content"] == (
            f"No patient with ID {patient} in your area. Check the ID and send again."
        )
    listing = await gateway.listing(outcome="unknown_patient")
    assert len(listing["incoming"]) == 3
    _, pregnancy = await gateway.doc("pregnancy-10000X-20240410")
    assert pregnancy["status"] == "active"  # alice's D did not touch bob's patient


async def test_reminders_are_due_on_their_days_and_sent_in_daytime(
    gateway: Gateway, clock: FakeClock
) -> None:
    await gateway.send("P 3 Jane")
    [first, *rest] = sorted(by_kind(await gateway.listing(), "reminder"), key=lambda r: r["due_at"])
    assert first["due_at"] == "2024-07-03T08:00:00.000000Z"  # LMP + 12 weeks, window opening
    assert len(rest) == 7
    clock.set(dt.datetime(2024, 7, 3, 7, 59, tzinfo=dt.UTC))
    assert await gateway.poll() == []
    clock.set(dt.datetime(2024, 7, 3, 19, 0, tzinfo=dt.UTC))  # due, but the evening
    assert await gateway.poll() == []
    clock.set(dt.datetime(2024, 7, 4, 8, 0, tzinfo=dt.UTC))
    [reminder] = await gateway.poll()
    assert (reminder["to"], reminder["content"]) == (
        ALICE_PHONE,
        f"Reminder: Jane ({JANE}) is due for ANC contact 1 at 12 weeks, around 2024-07-03.",
    )


async def test_replies_are_not_held_back_at_night(gateway: Gateway, clock: FakeClock) -> None:
    clock.set(dt.datetime(2024, 5, 1, 23, 0, tzinfo=dt.UTC))
    [reply] = await gateway.send("P 3 Jane")
    assert reply["content"].startswith("Jane registered")


@pytest.mark.parametrize(
    "sms_settings", [{"tick": 0.05, "timezone": "Africa/Nairobi", "send_hours": "8-18"}]
)
async def test_report_day_and_window_follow_the_deployments_time_zone(
    gateway: Gateway, clock: FakeClock
) -> None:
    clock.set(dt.datetime(2024, 4, 30, 22, 30, tzinfo=dt.UTC))  # 01:30 on 1 May in Nairobi
    [reply] = await gateway.send("P 3 Jane")
    assert "EDD 2025-01-15" in reply["content"]
    reminders = by_kind(await gateway.listing(), "reminder")
    assert min(r["due_at"] for r in reminders) == "2024-07-03T05:00:00.000000Z"  # 08:00 EAT


async def test_documents_that_fail_their_schema_are_refused_per_document(
    client: Client,
) -> None:
    good = {"_id": "r-good", "type": "data_record", "form": "P", "place": "area-a1"}
    good["fields"] = {"weeks": 3, "name": "Jane"}
    bad = {**good, "_id": "r-bad", "fields": {"weeks": 50, "name": "Jane"}}
    person = {"_id": "person-12345", "type": "person", "name": "X", "patient_id": "12345"}
    person["place"] = "area-a1"
    response = await client.post(
        "/health/_bulk_docs", json={"docs": [good, bad, person]}, headers=as_user("alice")
    )
    assert response.status == 201
    ok, refused, refused_person = await response.json()
    assert ok["ok"] is True
    assert refused["error"] == "forbidden"
    assert refused["reason"] == "invalid P report: fields.weeks must be at most 42"
    assert refused_person["error"] == "forbidden"
    assert "patient_id is not a valid patient-id" in refused_person["reason"]


async def test_a_crash_before_the_outcome_is_recorded_writes_nothing_twice(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = gateway.sms.service
    real_finish = embedded_sql.finish
    calls = 0

    def crash_once(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("power cut")  # after the documents, before the outcome
        real_finish(*args, **kwargs)

    monkeypatch.setattr(embedded_sql, "finish", crash_once)
    await service.receive([Received("gateway", "m-1", ALICE_PHONE, "P 3 Jane")])
    with contextlib.suppress(RuntimeError):  # unless the background processor hit it first
        await service.process_pending()
    assert calls >= 1
    status, person = await gateway.doc("person-10000X")
    assert status == 200 and person["_rev"].startswith("1-")
    await service.process_pending()  # what a restart does
    [reply] = await gateway.poll()
    assert reply["content"].startswith("Jane registered, ID 10000X.")
    status, person_after = await gateway.doc("person-10000X")
    assert person_after["_rev"] == person["_rev"]
    assert (await gateway.doc("person-10001V"))[0] == 404
    [row] = (await gateway.listing())["incoming"]
    assert (row["outcome"], row["patient_id"]) == ("registered", JANE)


async def test_an_unexpected_error_is_retried_then_recorded_as_failed(
    gateway: Gateway, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = gateway.sms.service

    async def broken(*args: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(service.registrar, "carry_out", broken)
    await service.receive([Received("gateway", "m-1", ALICE_PHONE, "P 3 Jane")])
    for _ in range(5):
        await service.process_pending()
        clock.advance(minutes=10)
    [row] = (await gateway.listing())["incoming"]
    assert (row["state"], row["outcome"], row["problems"]) == ("processed", "failed", ["error"])
    [reply] = await gateway.poll()
    assert reply["content"] == (
        "Sorry, your message could not be saved. Your supervisor will follow up."
    )


async def test_a_sender_lookup_that_fails_holds_back_only_that_message(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = gateway.sms.service
    real_lookup = service.lookup

    async def flaky(phone: str) -> Any:
        if phone == BOB_PHONE:
            raise RuntimeError("registry unavailable")
        return await real_lookup(phone)

    monkeypatch.setattr(service, "lookup", flaky)
    await service.receive(
        [
            Received("gateway", "m-1", BOB_PHONE, "P 3 Bea"),
            Received("gateway", "m-2", ALICE_PHONE, "P 3 Jane"),
        ]
    )
    await service.process_pending()
    listing = await gateway.listing()
    assert {(r["phone"], r["state"]) for r in listing["incoming"]} == {
        (BOB_PHONE, "stored"),
        (ALICE_PHONE, "processed"),
    }
