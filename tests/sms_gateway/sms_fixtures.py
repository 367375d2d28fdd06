"""Helpers for the in-process SMS tests (conftest.py holds the fixtures that use them).

Places and users (as in tests/sync), plus a gateway account and two phones
registered in the device registry::

    country
    ├── district-a
    │   └── facility-a
    │       ├── area-a1     alice (chw)   phone +254700000001 (device SN-A1)
    │       └── area-a2
    └── district-b
        └── area-b1         bob (chw)     phone +254700000002 (device SN-B1)

    sam (supervisor): captures district-a, reads district-b too
    admin (admin), gw (gateway)

The clock is a :class:`FakeClock` starting 2024-05-01 09:00 UTC (inside the
default 08-18 sending window, time zone UTC).
"""

from __future__ import annotations

import datetime as dt
from contextlib import closing
from pathlib import Path
from typing import Any

import shared_org
from aiohttp import web
from aiohttp.test_utils import TestClient

from device_registry import embedded_sql, inventory
from device_registry import schema as device_schema
from sms_gateway.routes import SMS, Sms
from sync.app import create_app
from sync.config import Config
from sync.scopes import UNLIMITED, Role
from sync.store.schema import connect, db_path

PASSWORD = shared_org.PASSWORD
ALICE_PHONE = "+254700000001"
BOB_PHONE = "+254700000002"
STRANGER_PHONE = "+254799999999"
START = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.UTC)
PLACES = shared_org.PLACES
USERS: list[shared_org.User] = [*shared_org.USERS, ("gw", Role.GATEWAY, [], [])]
DEVICES = [  # serial, IMEI (check digit right), phone, worker
    ("SN-A1", "490154203237518", ALICE_PHONE, "alice"),
    ("SN-B1", "356938035643809", BOB_PHONE, "bob"),
]


def seed(data_dir: Path) -> None:
    shared_org.seed(data_dir, PLACES, USERS)
    with closing(connect(db_path(data_dir))) as conn:
        device_schema.ensure(conn)
        for serial, imei, phone, worker in DEVICES:
            new = inventory.validate_new(serial, imei, phone=phone)
            embedded_sql.add(conn, new, "test", UNLIMITED)
            embedded_sql.assign(conn, serial, worker, "test", UNLIMITED)


def as_user(name: str, password: str = PASSWORD) -> dict[str, str]:
    return shared_org.basic_auth(name, password)


class FakeClock:
    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)

    def set(self, moment: dt.datetime) -> None:
        self.now = moment


def make_app(config: Config) -> web.Application:
    """The real app factory: forms/ and sms_gateway/ are mounted by ``create_app``."""
    return create_app(config)


Client = TestClient[Any, Any]


class Gateway:
    """A medic-gateway phone (and a few helpers to look at the results)."""

    def __init__(self, client: Client, user: str = "gw") -> None:
        self.client = client
        self.user = user
        self.sent = 0

    @property
    def sms(self) -> Sms:
        return self.client.app[SMS]  # type: ignore[no-any-return]

    def message(
        self, text: str, phone: str = ALICE_PHONE, msg_id: str | None = None
    ) -> dict[str, Any]:
        self.sent += 1
        return {
            "id": msg_id or f"gw-msg-{self.sent}",
            "from": phone,
            "content": text,
            "sms_sent": int(START.timestamp() * 1000),
            "sms_received": int(self.sms.service.clock().timestamp() * 1000),
        }

    async def post(self, body: Any) -> tuple[int, Any]:
        response = await self.client.post("/api/sms", json=body, headers=as_user(self.user))
        return response.status, await response.json()

    async def poll(
        self,
        messages: list[dict[str, Any]] | None = None,
        updates: list[dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        status, body = await self.post({"messages": messages or [], "updates": updates or []})
        assert status == 200, body
        return list(body["messages"])

    async def send(
        self, *texts: str, phone: str = ALICE_PHONE, ack: bool = True
    ) -> list[dict[str, Any]]:
        """Text messages in, processed, and the next poll's answer.

        With ``ack`` the answer is reported delivered at once, as a gateway with good
        signal would; else it stays forwarded (and is offered again if the clock moves).
        """
        await self.poll([self.message(t, phone) for t in texts])
        await self.sms.service.process_pending()
        replies = await self.poll()
        if ack and replies:
            delivered = [{"id": r["id"], "status": "DELIVERED"} for r in replies]
            assert await self.poll(updates=delivered) == []
        return replies

    async def listing(self, user: str = "admin", **filters: str) -> dict[str, Any]:
        response = await self.client.get(
            "/api/v1/sms/messages", params=filters, headers=as_user(user)
        )
        assert response.status == 200, await response.text()
        return dict(await response.json())

    async def doc(self, doc_id: str, user: str = "admin") -> tuple[int, dict[str, Any]]:
        response = await self.client.get(f"/health/{doc_id}", headers=as_user(user))
        return response.status, await response.json()
