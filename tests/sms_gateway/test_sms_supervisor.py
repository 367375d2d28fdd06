"""What supervisors see of the SMS traffic: JSON and a page, within their scope."""

from __future__ import annotations

import json
from pathlib import Path

from audit_disk import on_disk
from sms_fixtures import BOB_PHONE, STRANGER_PHONE, Client, Gateway, as_user


async def seed_traffic(gateway: Gateway) -> None:
    await gateway.send("P 3 Jane", "P 99 Mary")  # alice: registered, invalid
    await gateway.send("P 4 Bea", phone=BOB_PHONE)  # bob: registered
    await gateway.send("P 5 <script>alert(1)</script>", phone=STRANGER_PHONE)


async def test_staff_only(client: Client) -> None:
    for user, status in (("alice", 403), ("gw", 403), ("sam", 200), ("admin", 200)):
        response = await client.get("/api/v1/sms/messages", headers=as_user(user))
        assert response.status == status, user
    assert (await client.get("/api/v1/sms/messages")).status == 401


async def test_filters(gateway: Gateway) -> None:
    await seed_traffic(gateway)
    everything = await gateway.listing()
    assert len(everything["incoming"]) == 4
    assert {r["outcome"] for r in everything["incoming"]} == {
        "registered",
        "invalid",
        "unknown_sender",
    }
    registered = await gateway.listing(outcome="registered")
    assert sorted(r["worker"] for r in registered["incoming"]) == ["alice", "bob"]
    alice = await gateway.listing(worker="alice")
    assert {r["content"] for r in alice["incoming"]} == {"P 3 Jane", "P 99 Mary"}
    assert {o["worker"] for o in alice["outgoing"]} == {"alice"}
    district_b = await gateway.listing(place="district-b")
    assert [r["worker"] for r in district_b["incoming"]] == ["bob"]
    assert (await gateway.listing(form="p", outcome="invalid"))["incoming"][0]["problems"] == [
        "out_of_range:weeks"
    ]
    delivered = await gateway.listing(state="delivered")
    assert sorted(o["kind"] for o in delivered["outgoing"]) == ["notice", "reply", "reply", "reply"]
    assert len((await gateway.listing(state="pending"))["outgoing"]) == 16  # two women's reminders
    assert len((await gateway.listing(limit="1"))["incoming"]) == 1
    newest = everything["incoming"][0]["id"]
    older = await gateway.listing(before=str(newest))
    assert [r["id"] for r in older["incoming"]] == [r["id"] for r in everything["incoming"][1:]]


async def test_bad_filters_are_400(client: Client) -> None:
    for query in ("outcome=happy", "state=lost", "limit=many"):
        response = await client.get(f"/api/v1/sms/messages?{query}", headers=as_user("sam"))
        assert response.status == 400, query


async def test_a_before_past_any_message_id_is_400_not_a_server_error(client: Client) -> None:
    """Found by schemathesis: SQLite cannot take an integer past 2**63 - 1 (it was a 500)."""
    for before in (str(2**63), "-44003287535804650180674016247808", "0", "-1"):
        for path in ("/api/v1/sms/messages", "/supervisor/sms"):
            response = await client.get(path, params={"before": before}, headers=as_user("sam"))
            assert response.status == 400, (path, before)
            assert "before must be a message id" in await response.text()
    response = await client.get(
        "/api/v1/sms/messages", params={"before": str(2**63 - 1)}, headers=as_user("sam")
    )
    assert response.status == 200


async def test_a_supervisor_sees_their_places_and_unknown_senders(gateway: Gateway) -> None:
    await seed_traffic(gateway)
    sam = await gateway.listing(user="sam")
    assert {r["worker"] for r in sam["incoming"]} == {"alice", "bob", None}  # reads district-b
    response = await gateway.client.get(
        "/api/v1/sms/messages", params={"place": "area-b1"}, headers=as_user("sam")
    )
    assert [r["worker"] for r in (await response.json())["incoming"]] == ["bob"]


async def test_the_page(gateway: Gateway) -> None:
    await seed_traffic(gateway)
    client = gateway.client
    response = await client.get("/supervisor/sms?outcome=registered", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == (
        "/supervisor/login?next=%2Fsupervisor%2Fsms%3Foutcome%3Dregistered"
    )
    response = await client.get("/supervisor/sms", headers=as_user("alice"), allow_redirects=False)
    assert response.status == 303
    response = await client.get("/supervisor/sms", headers=as_user("sam"))
    assert response.status == 200 and response.content_type == "text/html"
    html = await response.text()
    assert "Jane registered, ID 10000X" in html and "P 99 Mary" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    response = await client.get("/supervisor/sms?outcome=registered", headers=as_user("sam"))
    html = await response.text()
    assert "P 99 Mary" not in html and '<option value="registered" selected>' in html
    response = await client.get("/supervisor/sms?limit=x", headers=as_user("sam"))
    assert response.status == 400


def _sms_reads(data_dir: Path) -> list[tuple[str, list[str]]]:
    """The trail on disk as another process sees it the moment an answer is in."""
    return [(r[0], sorted(json.loads(r[4]))) for r in on_disk(data_dir, "sms_read")]


async def test_reading_texts_is_audited(gateway: Gateway, data_dir: Path) -> None:
    await seed_traffic(gateway)
    response = await gateway.client.get(
        "/api/v1/sms/messages", params={"place": "area-b1"}, headers=as_user("sam")
    )
    listed = await response.json()
    ids = [f"in:{r['id']}" for r in listed["incoming"]]
    ids += [f"out:{r['id']}" for r in listed["outgoing"]]
    assert _sms_reads(data_dir) == [("sam", sorted(ids))]
    page = await gateway.client.get("/supervisor/sms", headers=as_user("admin"))
    assert page.status == 200
    assert _sms_reads(data_dir)[-1][0] == "admin"
