"""A coded SMS reaches a worker's offline app: medic-gateway in, PouchDB out (issue 4).

alice's phone is in the device registry with its SIM number; she texts
``P 3 Jane`` without data.  A gateway account POSTs it to ``/api/sms`` the way
medic-gateway does, gets the confirmation on its next poll, and then alice's
app (a real PouchDB 9, enrolled with its device token) pulls the new person
and pregnancy records: the same records the app would have made itself.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from typing import Any

import aiohttp
from pouch import PouchDriver
from realserver import PASSWORD, Admin, ServerProcess, local_ids

ALICE_PHONE = "+254700000001"
SERIAL = "SN-SMS-1"
IMEI = "490154203237518"


def basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def enrolled_phone(admin: Admin, server: ServerProcess) -> str:
    """alice's phone in the registry (with its SIM number) and enrolled: its device token."""
    body = {"serial": SERIAL, "imei": IMEI, "worker": "alice", "phone": ALICE_PHONE}
    async with admin.session.post(f"{server.url}/api/v1/devices", json=body) as resp:
        assert resp.status == 201, await resp.text()
    async with admin.session.post(f"{server.url}/api/v1/devices/{SERIAL}/enrolment-code") as resp:
        code = (await resp.json())["code"]
    async with (
        aiohttp.ClientSession(headers=basic("alice")) as app,
        app.post(
            f"{server.url}/api/v1/devices/enroll", json={"code": code, "serial": SERIAL}
        ) as resp,
    ):
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["device_token"])


async def gateway_poll(
    server: ServerProcess, messages: list[dict[str, Any]], updates: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession(headers=basic("gw")) as session,
        session.post(
            f"{server.url}/api/sms", json={"messages": messages, "updates": updates}
        ) as resp,
    ):
        body = await resp.json()
        assert resp.status == 200, body
        return list(body["messages"])


async def test_p_3_jane_by_sms_reaches_the_workers_app(
    pouch: PouchDriver, admin: Admin, org: ServerProcess
) -> None:
    org.cli("user", "add", "gw", "--role", "gateway", password=PASSWORD)
    token = await enrolled_phone(admin, org)
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    sms = {"id": "gw-1", "from": ALICE_PHONE, "content": "P 3 Jane", "sms_received": now_ms}
    replies = await gateway_poll(org, [sms], [])
    for _ in range(100):  # the gateway's next polls
        if replies:
            break
        await asyncio.sleep(0.1)
        replies = await gateway_poll(org, [], [])
    [reply] = replies
    assert reply["to"] == ALICE_PHONE
    assert reply["content"].startswith("Jane registered, ID ")
    patient_id = reply["content"].split("ID ", 1)[1].split(".", 1)[0]
    assert await gateway_poll(org, [], [{"id": reply["id"], "status": "DELIVERED"}]) == []

    app = org.remote("alice", **{"X-Device-Token": token})
    result = await pouch.call("replicate", source=app, target="alices-phone")
    assert result["status"] == "complete"
    mine = await local_ids(pouch, "alices-phone")
    person_id = f"person-{patient_id}"
    [pregnancy_id] = [i for i in mine if i.startswith(f"pregnancy-{patient_id}-")]
    assert person_id in mine
    person = await pouch.call("get", db="alices-phone", docid=person_id)
    assert (person["type"], person["name"], person["place"]) == ("person", "Jane", "area-a1")
    pregnancy = await pouch.call("get", db="alices-phone", docid=pregnancy_id)
    lmp = dt.date.fromisoformat(pregnancy["lmp_date"])
    edd = dt.date.fromisoformat(pregnancy["edd"])
    assert (edd - lmp).days == 280
    assert (dt.datetime.now(dt.UTC).date() - lmp).days in (21, 22)  # 3 weeks (a midnight apart)
    assert pregnancy["patient_id"] == patient_id
