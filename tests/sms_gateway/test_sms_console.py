"""The SMS pages in the console (issue 13, point 4): the frame, choices for filters, dates
in the time zone, pages of 50, a message's own page, and lost or stolen phones flagged."""

from __future__ import annotations

import re
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sms_fixtures import ALICE_PHONE, BOB_PHONE, STRANGER_PHONE, Client, Gateway, as_user

from sms_gateway import embedded_sql
from sync.config import Config
from sync.people_store import embedded_tables
from sync.scopes import Role
from sync.store.schema import connect, db_path


def add_supervisor(data_dir: Path, name: str, places: list[str]) -> None:
    """A supervisor of ``places`` only (district-b: none of alice's messages)."""
    with closing(connect(db_path(data_dir))) as conn:
        embedded_tables.add_user(conn, name, Role.SUPERVISOR, "correct horse battery", places)
        conn.commit()


def in_swahili(data_dir: Path, name: str, table: str = "console") -> None:
    with closing(connect(db_path(data_dir))) as conn:
        if table == "console":
            embedded_tables.set_language(conn, name, "sw")
        else:
            embedded_sql.set_language(conn, name, "sw")
        conn.commit()


async def page(client: Client, path: str, user: str = "sam", **params: str) -> tuple[int, str]:
    response = await client.get(path, params=params, headers=as_user(user), allow_redirects=False)
    return response.status, await response.text()


async def mark(client: Client, serial: str, status: str) -> None:
    response = await client.post(
        f"/api/v1/devices/{serial}/status",
        json={"status": status, "reason": "reported by the worker"},
        headers=as_user("admin"),
    )
    assert response.status == 200, await response.text()


def message_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'href="/supervisor/sms/(\d+)"', html)]


async def test_the_sms_page_is_in_the_console_frame(gateway: Gateway) -> None:
    await gateway.send("P 3 Jane")
    status, html = await page(gateway.client, "/supervisor/sms")
    assert status == 200
    assert '<a href="/supervisor/sms" aria-current="page">SMS</a>' in html
    assert 'action="/supervisor/logout"' in html and 'name="csrf"' in html
    assert "2024-05-01 09:00" in html and "T09:00" not in html  # START, in the zone (UTC)
    # Choices, not free text: every filter is a select or a date.
    for name in ("outcome", "form", "place", "worker"):
        assert f'name="{name}"' in html and f'<select id="s-{name}" name="{name}">' in html
    assert 'name="from" type="date"' in html and 'name="to" type="date"' in html
    assert '<option value="P">P</option>' in html
    assert '<option value="alice">alice</option>' in html
    sent_box = (await page(gateway.client, "/supervisor/sms", box="out"))[1]
    assert '<select id="s-state" name="state">' in sent_box and "reminder" in sent_box


async def test_a_swahili_reader_sees_swahili(gateway: Gateway, data_dir: Path) -> None:
    await gateway.send("P 3 Jane")
    in_swahili(data_dir, "sam")
    _, html = await page(gateway.client, "/supervisor/sms")
    assert '<html lang="sw">' in html
    for word in ("Ujumbe wa SMS", "Wahudumu", "Vifaa", "Toka", "Matokeo", "imesajiliwa"):
        assert word in html, word
    _, other = await page(gateway.client, "/supervisor/sms", user="admin")
    assert '<html lang="en">' in other and "SMS messages" in other


async def test_times_and_dates_are_in_the_programme_zone(
    aiohttp_client: Any, config: Config, clock: Any
) -> None:
    from dataclasses import replace

    from sms_fixtures import make_app

    from sms_gateway.routes import OVERRIDES, Overrides

    app = make_app(replace(config, time_zone="Africa/Nairobi"))
    app[OVERRIDES] = Overrides(clock=clock)
    gateway = Gateway(await aiohttp_client(app))
    clock.set(clock.now.replace(hour=22))  # 22:00 UTC is 01:00 the next day in Nairobi
    await gateway.send("P 3 Jane")
    _, html = await page(gateway.client, "/supervisor/sms")
    assert "2024-05-02 01:00" in html and "Times are shown in Africa/Nairobi." in html
    assert message_ids((await page(gateway.client, "/supervisor/sms", **{"from": "2024-05-02"}))[1])
    assert not message_ids((await page(gateway.client, "/supervisor/sms", to="2024-05-01"))[1])
    for bad in ("yesterday", "9999-12-31", "2024-02-30"):
        status, html = await page(gateway.client, "/supervisor/sms", to=bad)
        assert status == 400 and "to must be a date such as 2026-05-01" in html, bad


async def test_fifty_a_page_by_cursor(gateway: Gateway) -> None:
    await gateway.poll([gateway.message(f"X {n}", STRANGER_PHONE) for n in range(60)])
    await gateway.sms.service.process_pending()
    _, first = await page(gateway.client, "/supervisor/sms")
    newest = message_ids(first)
    assert len(newest) == 50 and newest == sorted(newest, reverse=True)
    older_link = re.search(r'href="([^"]+)" rel="next"', first)
    assert older_link and 'rel="prev"' not in first
    response = await gateway.client.get(
        older_link.group(1).replace("&amp;", "&"), headers=as_user("sam")
    )
    second_html = await response.text()
    rest = message_ids(second_html)
    assert len(rest) == 10 and max(rest) < min(newest) and 'rel="next"' not in second_html
    newer_link = re.search(r'href="([^"]+)" rel="prev"', second_html)
    assert newer_link
    response = await gateway.client.get(
        newer_link.group(1).replace("&amp;", "&"), headers=as_user("sam")
    )
    assert message_ids(await response.text()) == newest


async def test_a_message_page_shows_its_parse_records_and_replies(
    gateway: Gateway, data_dir: Path
) -> None:
    await gateway.send("P 3 Jane")
    listing = await gateway.listing()
    row = listing["incoming"][0]
    status, html = await page(gateway.client, f"/supervisor/sms/{row['id']}")
    assert status == 200
    assert "<pre>P 3 Jane</pre>" in html and "registered" in html
    assert row["patient_id"] and row["patient_id"] in html
    assert row["docs"] and all(f"<code>{doc}</code>" in html for doc in row["docs"])
    assert "Jane registered, ID" in html  # the reply
    assert html.count('data-label="Kind">reminder<') >= 1  # and the reminders it set
    assert 'href="/supervisor/devices/SN-A1"' in html
    # Another district's supervisor, a CHW, a stranger: nothing.
    add_supervisor(data_dir, "dina", ["district-b"])
    response = await gateway.client.get(
        f"/supervisor/sms/{row['id']}", headers=as_user("dina", "correct horse battery")
    )
    assert response.status == 404 and "Jane" not in await response.text()
    assert (await page(gateway.client, f"/supervisor/sms/{row['id']}", user="alice"))[0] == 303
    for bad in ("999999", "0", "abc", str(2**63)):
        assert (await page(gateway.client, f"/supervisor/sms/{bad}"))[0] == 404


async def test_another_district_does_not_see_the_list(gateway: Gateway, data_dir: Path) -> None:
    await gateway.send("P 3 Jane")
    await gateway.send("P 4 Bea", phone=BOB_PHONE)
    add_supervisor(data_dir, "dina", ["district-b"])
    response = await gateway.client.get(
        "/supervisor/sms", headers=as_user("dina", "correct horse battery")
    )
    html = await response.text()
    assert "P 4 Bea" in html and "Jane" not in html and '<option value="alice">' not in html


@pytest.mark.parametrize(("status", "language"), [("lost", "en"), ("stolen", "sw")])
async def test_a_lost_or_stolen_phone_is_flagged_and_told_to_call_its_supervisor(
    gateway: Gateway, data_dir: Path, status: str, language: str
) -> None:
    await mark(gateway.client, "SN-A1", status)
    if language == "sw":
        in_swahili(data_dir, "alice", table="sms")
    replies = await gateway.send("P 3 Jane", phone=ALICE_PHONE)
    [reply] = replies
    if language == "en":
        assert reply["content"] == (
            "This phone was reported lost or stolen, so your message was not recorded. "
            "Contact your supervisor."
        )
    else:
        assert "Wasiliana na msimamizi wako" in reply["content"]
    assert "not registered" not in reply["content"] and "haijasajiliwa" not in reply["content"]
    [row] = (await gateway.listing())["incoming"]
    assert (row["outcome"], row["worker"], row["device"]) == ("lost_phone", "alice", "SN-A1")
    assert row["docs"] == [] and row["patient_id"] is None  # nothing recorded in her name
    _, html = await page(gateway.client, "/supervisor/sms")
    assert '<span class="flag">Lost or stolen phone</span>' in html
    assert f"({status.capitalize()})" in html
    _, one = await page(gateway.client, f"/supervisor/sms/{row['id']}")
    assert "Lost or stolen phone" in one
    # One notice a day, however often a thief writes.
    assert await gateway.send("P 4 Mary", phone=ALICE_PHONE) == []
