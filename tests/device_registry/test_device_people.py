"""People who stop working: their phones stop at once, and supervisors are told to collect them.

A disabled worker's enrolled phone (its device token, with Basic credentials or
a session cookie) is refused from the next request and works again, unchanged,
once they are enabled; a removed worker's phones are flagged "collect this
phone" on the supervisor pages and in the JSON, until they are back in stock.
"""

from __future__ import annotations

import re

from device_helpers import IMEIS, PASSWORD, Client, Devices

from device_registry.verdict import TOKEN_HEADER

CHANGES = "/health/_changes"
DISABLED = "The account 'alice' is disabled"


async def test_a_disabled_workers_phone_stops_at_once_and_works_again_after_enable(
    client: Client, devices: Devices
) -> None:
    token = await devices.issued("A1", IMEIS[0], "alice")
    cookie = await devices.login("alice", token)
    in_session = {"Cookie": f"AuthSession={cookie}", TOKEN_HEADER: token}

    async def sync_by_session() -> tuple[int, str]:
        response = await client.get(CHANGES, headers=in_session)
        return response.status, (await response.json()).get("reason", "")

    assert (await devices.call("GET", CHANGES, "alice", token=token))[0] == 200
    assert (await sync_by_session())[0] == 200

    assert (await devices.call("POST", "/api/v1/users/alice/disable"))[0] == 200
    status, body = await devices.call("GET", CHANGES, "alice", token=token)
    assert status == 401 and body["reason"].startswith(DISABLED)
    status, reason = await sync_by_session()
    assert status == 401 and reason.startswith(DISABLED)
    # Without the phone's token the right password answers like a wrong one, as ever.
    status, body = await devices.call("GET", CHANGES, "alice")
    assert status == 401 and body["reason"] == "Name or password is incorrect."

    assert (await devices.call("POST", "/api/v1/users/alice/enable"))[0] == 200
    assert (await devices.call("GET", CHANGES, "alice", token=token))[0] == 200
    assert (await sync_by_session())[0] == 200


async def test_a_removed_workers_phone_is_flagged_for_collection(
    client: Client, devices: Devices
) -> None:
    await devices.issued("A1", IMEIS[0], "alice")
    await devices.add("A2", IMEIS[1], worker="alice")
    await devices.add("B1", IMEIS[2], worker="bob")
    status, device = await devices.call("GET", "/api/v1/devices/A1", "sam")
    assert status == 200 and device["collect"] is False and device["worker_status"] == "active"

    assert (await devices.call("DELETE", "/api/v1/users/alice"))[0] == 200
    status, device = await devices.call("GET", "/api/v1/devices/A1", "sam")
    assert status == 200 and device["collect"] is True and device["worker_status"] == "removed"
    assert device["collect_reason"] == "Collect this phone: its worker alice was removed."
    status, listed = await devices.call("GET", "/api/v1/devices?collect=true", "sam")
    assert status == 200
    assert [d["serial"] for d in listed["devices"]] == ["A1", "A2"]

    await _log_in(client, "sam")
    page = await (await client.get("/supervisor/devices")).text()
    assert "Phones to collect (still with a worker who was disabled or removed): 2." in page
    rows = re.findall(r"<tr>.*?</tr>", page)
    flagged = [row for row in rows if "Collect this phone" in row]
    assert len(flagged) == 2 and all("alice" in row for row in flagged)
    assert not any("B1" in row for row in flagged)
    one = await (await client.get("/supervisor/devices/A1")).text()
    assert "Collect this phone: its worker alice was removed." in one

    assert (await devices.mark("A1", "in_stock", "sam"))[0] == 200  # collected
    status, device = await devices.call("GET", "/api/v1/devices/A1", "sam")
    assert status == 200 and device["collect"] is False and device["worker"] is None


async def test_a_disabled_workers_phone_is_flagged_too(devices: Devices) -> None:
    await devices.add("B1", IMEIS[0], worker="bob")
    assert (await devices.call("POST", "/api/v1/users/bob/disable"))[0] == 200
    status, device = await devices.call("GET", "/api/v1/devices/B1", "sam")
    assert status == 200 and device["collect"] is True
    assert "unless bob is coming back" in device["collect_reason"]


async def test_no_phone_goes_to_a_removed_worker(devices: Devices) -> None:
    await devices.add("S1", IMEIS[0], place="area-a2")
    assert (await devices.call("DELETE", "/api/v1/users/alice"))[0] == 200
    status, body = await devices.call(
        "POST", "/api/v1/devices/S1/assign", "sam", {"worker": "alice"}
    )
    assert status == 409 and "alice is removed" in body["reason"]


async def _log_in(client: Client, name: str) -> None:
    page = await (await client.get("/supervisor/login")).text()
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found
    form = {"name": name, "password": PASSWORD, "csrf": found.group(1)}
    response = await client.post("/supervisor/login", data=form, allow_redirects=False)
    assert response.status == 303


async def test_a_disabled_supervisor_is_told_so_on_the_login_page(
    client: Client, devices: Devices
) -> None:
    await _log_in(client, "sam")
    assert (await devices.call("POST", "/api/v1/users/sam/disable"))[0] == 200
    response = await client.get("/supervisor/devices", allow_redirects=False)
    assert response.status == 303  # the open session no longer opens the pages
    page = await (await client.get("/supervisor/login")).text()
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found
    form = {"name": "sam", "password": PASSWORD, "csrf": found.group(1)}
    refused = await client.post("/supervisor/login", data=form, allow_redirects=False)
    assert (
        refused.status == 401 and "The account &#x27;sam&#x27; is disabled" in await refused.text()
    )
    wrong = {**form, "password": "not the password"}
    refused = await client.post("/supervisor/login", data=wrong, allow_redirects=False)
    assert "Wrong user name or password." in await refused.text()
