"""The medic-gateway endpoint in-process: registration, replies, repeats, statuses, retries."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from audit_disk import on_disk
from couchdb_server import couch_request
from couchdb_server import db_path as couch_path
from sms_fixtures import (
    ALICE_PHONE,
    BOB_PHONE,
    STRANGER_PHONE,
    Client,
    FakeClock,
    Gateway,
    as_user,
    make_app,
)

from sync.config import Config

JANE = "Jane registered, ID 10000X. EDD 2025-01-15. ANC reminders will follow."


async def test_get_says_it_is_a_medic_gateway_endpoint(client: Client) -> None:
    response = await client.get("/api/sms")
    assert response.status == 200
    assert await response.json() == {"medic-gateway": True}


async def test_only_gateway_accounts_post(client: Client, gateway: Gateway) -> None:
    response = await client.post("/api/sms", json={})
    assert response.status == 401
    body = await response.json()
    assert body["error"] is True and body["message"]
    for user in ("alice", "sam", "admin"):
        response = await client.post("/api/sms", json={}, headers=as_user(user))
        assert response.status == 403, user
    response = await client.post("/api/sms", json={}, headers=as_user("gw", "wrong password"))
    assert response.status == 401
    response = await client.post("/api/sms", data=b"{nope", headers=as_user("gw"))
    assert (response.status, (await response.json())["error"]) == (400, True)
    assert await gateway.poll() == []


async def test_p_3_jane_registers_a_patient_and_replies_on_the_next_poll(
    gateway: Gateway,
) -> None:
    await gateway.poll([gateway.message("P 3 Jane")])
    await gateway.sms.service.process_pending()
    [reply] = await gateway.poll()
    assert (reply["to"], reply["content"]) == (ALICE_PHONE, JANE)
    status, person = await gateway.doc("person-10000X", user="alice")
    assert status == 200
    assert (person["type"], person["name"], person["patient_id"], person["place"]) == (
        "person",
        "Jane",
        "10000X",
        "area-a1",
    )
    status, pregnancy = await gateway.doc("pregnancy-10000X-20240410", user="alice")
    assert status == 200
    assert (pregnancy["lmp_date"], pregnancy["edd"], pregnancy["status"]) == (
        "2024-04-10",
        "2025-01-15",
        "active",
    )
    assert (pregnancy["place"], pregnancy["weeks_at_registration"]) == ("area-a1", 3)
    [incoming] = (await gateway.listing())["incoming"]
    status, report = await gateway.doc(incoming["docs"][-1], user="alice")
    assert (report["type"], report["form"], report["fields"]) == (
        "data_record",
        "P",
        {"weeks": 3, "name": "Jane"},
    )
    assert (report["patient_id"], report["from"], report["contact"]) == (
        "10000X",
        ALICE_PHONE,
        "alice",
    )
    assert (await gateway.doc("person-10000X", user="bob"))[0] == 404  # not in bob's set


async def test_incoming_row_says_what_happened(gateway: Gateway) -> None:
    await gateway.send("P 3 Jane")
    [row] = (await gateway.listing())["incoming"]
    assert {k: row[k] for k in ("phone", "content", "state", "outcome", "form", "worker")} == {
        "phone": ALICE_PHONE,
        "content": "P 3 Jane",
        "state": "processed",
        "outcome": "registered",
        "form": "P",
        "worker": "alice",
    }
    assert (row["device"], row["place"], row["patient_id"], row["reply"]) == (
        "SN-A1",
        "area-a1",
        "10000X",
        JANE,
    )
    assert row["docs"] == ["person-10000X", "pregnancy-10000X-20240410", row["docs"][2]]


async def test_repeated_messages_are_harmless(gateway: Gateway) -> None:
    message = gateway.message("P 3 Jane", msg_id="same-id")
    replies = []
    for _ in range(3):
        replies += await gateway.poll([message])
    await gateway.sms.service.process_pending()
    replies += await gateway.poll([message])  # repeated after it was processed, too
    await gateway.sms.service.process_pending()
    replies += await gateway.poll()
    assert [r["content"] for r in replies] == [JANE]
    listing = await gateway.listing()
    assert len(listing["incoming"]) == 1
    assert [o["kind"] for o in listing["outgoing"]].count("reply") == 1
    assert (await gateway.doc("person-10001V"))[0] == 404  # no second patient


async def test_two_patients_get_two_ids(gateway: Gateway) -> None:
    replies = await gateway.send("P 3 Jane", "P 10 Amina Wanjiru")
    contents = sorted(r["content"] for r in replies)
    assert contents[0].startswith("Amina Wanjiru registered, ID 10001V.")
    assert contents[1] == JANE


def outgoing(listing: dict[str, Any], kind: str = "reply") -> list[dict[str, Any]]:
    return [o for o in listing["outgoing"] if o["kind"] == kind]


async def test_status_updates_move_a_reply_along(gateway: Gateway) -> None:
    [reply] = await gateway.send("P 3 Jane", ack=False)
    assert reply["id"].endswith("-1")
    [row] = outgoing(await gateway.listing())
    assert row["state"] == "forwarded"
    for status, expected in [
        ("PENDING", "forwarded"),
        ("SENT", "sent"),
        ("SENT", "sent"),  # a repeat
        ("DELIVERED", "delivered"),
        ("DELIVERED", "delivered"),
        ("SENT", "delivered"),  # late and out of order
        ("FAILED", "delivered"),
    ]:
        assert await gateway.poll(updates=[{"id": reply["id"], "status": status}]) == []
        [row] = outgoing(await gateway.listing())
        assert row["state"] == expected, status


async def test_failures_are_retried_with_new_ids_up_to_the_cap(gateway: Gateway) -> None:
    [first] = await gateway.send("P 3 Jane", ack=False)
    failed = {"id": first["id"], "status": "FAILED", "reason": "no credit"}
    [second] = await gateway.poll(updates=[failed])
    assert (second["id"], second["content"]) == (first["id"][:-2] + "-2", JANE)
    assert await gateway.poll(updates=[failed]) == []  # a stale update about attempt 1
    [third] = await gateway.poll(updates=[{**failed, "id": second["id"]}])
    assert third["id"].endswith("-3")
    assert await gateway.poll(updates=[{**failed, "id": third["id"]}]) == []
    [row] = outgoing(await gateway.listing())
    assert (row["state"], row["attempt"], row["reason"]) == (
        "failed",
        3,
        "failed after 3 attempts (last: no credit)",
    )


async def test_a_silent_gateway_is_offered_the_message_again(
    gateway: Gateway, clock: FakeClock
) -> None:
    [first] = await gateway.send("P 3 Jane", ack=False)
    outbox = gateway.sms.outbox
    assert await outbox.expire_silent() == 0
    clock.advance(minutes=11)
    await outbox.expire_silent()  # (the scheduler may have done it already)
    [again] = await gateway.poll()
    assert again == first  # the same id: a gateway that has it already ignores it
    for _ in range(4):
        clock.advance(minutes=11)
        await outbox.expire_silent()
        await gateway.poll()
    [row] = outgoing(await gateway.listing())
    assert (row["state"], row["reason"]) == ("failed", "no status from the gateway after 5 offers")


async def test_unknown_senders_are_stored_answered_once_a_day_and_shown(
    gateway: Gateway, clock: FakeClock
) -> None:
    replies = await gateway.send("P 3 Jane", "hello?", phone=STRANGER_PHONE)
    assert [(r["to"], r["content"]) for r in replies] == [
        (STRANGER_PHONE, "This phone is not registered. Ask your supervisor to register it.")
    ]
    assert await gateway.send("P 4 Mary", phone=STRANGER_PHONE) == []
    clock.advance(days=1, minutes=1)
    assert len(await gateway.send("P 4 Mary", phone=STRANGER_PHONE)) == 1
    listing = await gateway.listing(user="sam", outcome="unknown_sender")
    assert [r["content"] for r in listing["incoming"]] == [
        "P 4 Mary",
        "P 4 Mary",
        "hello?",
        "P 3 Jane",
    ]
    assert {r["form"] for r in listing["incoming"]} == {"P", None}
    assert (await gateway.doc("person-10000X"))[0] == 404


async def test_invalid_messages_get_the_errors_in_the_workers_language(
    gateway: Gateway, client: Client
) -> None:
    [reply] = await gateway.send("P 50 Jane")
    assert reply["content"].startswith(
        "P not saved: Weeks since last period must be 1 to 42 (you sent 50)."
    )
    response = await client.put(
        "/api/v1/sms/workers/alice/language", json={"language": "sw"}, headers=as_user("sam")
    )
    assert response.status == 200
    [reply] = await gateway.send("P 50 Jane")
    assert reply["content"].startswith("P haikuhifadhiwa: Wiki tangu hedhi ya mwisho lazima")
    [reply] = await gateway.send("P 3 Jane")
    assert reply["content"].startswith("Jane amesajiliwa, namba 10000X.")
    [row] = (await gateway.listing(outcome="invalid"))["incoming"][:1]
    assert row["problems"] == ["out_of_range:weeks"]


async def test_language_is_set_by_staff_within_their_area(client: Client) -> None:
    url = "/api/v1/sms/workers/{}/language"
    body = {"language": "sw"}
    assert (await client.put(url.format("bob"), json=body, headers=as_user("sam"))).status == 403
    assert (await client.put(url.format("bob"), json=body, headers=as_user("admin"))).status == 200
    assert (await client.put(url.format("alice"), json=body, headers=as_user("bob"))).status == 403
    bad = {"language": "fr"}
    assert (await client.put(url.format("alice"), json=bad, headers=as_user("sam"))).status == 400
    assert (await client.put(url.format("zed"), json=body, headers=as_user("admin"))).status == 404


async def test_a_language_set_is_on_the_trail_when_the_answer_goes_out(
    client: Client, data_dir: Path
) -> None:
    url = "/api/v1/sms/workers/bob/language"
    body = {"language": "sw"}
    assert (await client.put(url, json=body, headers=as_user("sam"))).status == 403
    assert (await client.put(url, json=body, headers=as_user("admin"))).status == 200
    detail = "user bob: language sw"
    assert on_disk(data_dir, "user_language") == [
        ("admin", None, "user_language", None, "[]", detail)
    ]


async def test_with_couchdb_a_language_set_is_on_the_instances_chain_there(
    aiohttp_client: Callable[..., Awaitable[Client]],
    config: Config,
    couchdb_url: str,
    couch_prefix: str,
    data_dir: Path,
) -> None:
    couch = replace(config, couchdb_url=couchdb_url, couchdb_prefix=couch_prefix)
    client = await aiohttp_client(make_app(couch))
    url = "/api/v1/sms/workers/bob/language"
    response = await client.put(url, json={"language": "sw"}, headers=as_user("admin"))
    assert response.status == 200
    where = couch_path(couch_prefix + "audit") + "/_all_docs?include_docs=true"
    status, body = couch_request(couchdb_url, "GET", where)
    assert status == 200
    entries = [r["doc"] for r in body["rows"] if r["doc"].get("action") == "user_language"]
    assert [(e["actor"], e["detail"]) for e in entries] == [("admin", "user bob: language sw")]
    assert on_disk(data_dir, "user_language") == []  # not the data dir's chain


async def test_the_time_a_phone_claims_is_used_only_when_plausible(gateway: Gateway) -> None:
    message = gateway.message("P 3 Jane")
    message["sms_received"] = int(dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    await gateway.poll([message])
    await gateway.sms.service.process_pending()
    [reply] = await gateway.poll()
    assert reply["content"] == JANE  # EDD from the server's day, not the phone's 2030


async def test_bob_and_alice_each_record_in_their_own_place(gateway: Gateway) -> None:
    replies = await gateway.send("P 3 Jane", phone=BOB_PHONE)
    assert replies[0]["to"] == BOB_PHONE
    status, person = await gateway.doc("person-10000X", user="bob")
    assert (status, person["place"]) == (200, "area-b1")


async def test_a_gzipped_poll_is_read(client: Client, gateway: Gateway) -> None:
    body = json.dumps({"messages": [gateway.message("P 3 Jane")]}).encode()
    headers = {**as_user("gw"), "Content-Encoding": "gzip", "Content-Type": "application/json"}
    response = await client.post("/api/sms", data=gzip.compress(body), headers=headers)
    assert response.status == 200, await response.text()
    await gateway.sms.service.process_pending()
    [reply] = await gateway.poll()
    assert reply["content"] == JANE


async def test_a_message_without_a_sender_is_kept_but_not_answered(gateway: Gateway) -> None:
    await gateway.poll([{"id": "x-1", "content": "P 3 Jane"}])
    await gateway.sms.service.process_pending()
    assert await gateway.poll() == []
    [row] = (await gateway.listing())["incoming"]
    assert (row["phone"], row["outcome"], row["content"]) == ("", "unknown_sender", "P 3 Jane")
