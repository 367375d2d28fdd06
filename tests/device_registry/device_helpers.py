"""What the device registry's tests share: the seeded organisation and JSON helpers.

A module of its own rather than ``conftest``: every test directory has a conftest,
and ``from conftest import ...`` gets whichever was imported first.

The place tree and users (as in tests/sync, plus a district sam does not see)::

    country
    ├── district-a
    │   └── facility-a
    │       ├── area-a1     alice (chw)
    │       └── area-a2
    ├── district-b
    │   └── area-b1         bob (chw)
    └── district-c
        └── area-c1         carol (chw)

    sam (supervisor): captures district-a, reads district-b too; never sees district-c
    admin (admin)
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import shared_org
from aiohttp.test_utils import TestClient

from device_registry.context import REGISTRY
from device_registry.verdict import TOKEN_HEADER
from sync.appkeys import STORE
from sync.people_store import embedded_tables
from sync.scopes import Role

PASSWORD = shared_org.PASSWORD
PLACES = [*shared_org.PLACES, ("district-c", "country"), ("area-c1", "district-c")]
USERS: list[shared_org.User] = [*shared_org.USERS, ("carol", Role.CHW, ["area-c1"], [])]
# Valid IMEIs (Luhn check digit right), one per test device.
IMEIS = [
    "490154203237518",
    "356938035643809",
    "353918056745215",
    "861536030196001",
    "357805023984942",
    "012345678901237",
]


def seed(data_dir: Path) -> None:
    shared_org.seed(data_dir, PLACES, USERS)


def as_user(name: str, token: str | None = None, **headers: str) -> dict[str, str]:
    """HTTP Basic credentials (and a device token) as headers."""
    found = {**shared_org.basic_auth(name), **headers}
    if token is not None:
        found["X-Device-Token"] = token
    return found


Client = TestClient[Any, Any]


class Devices:
    """JSON calls to the registry and the replication surface, one user per call."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def call(
        self,
        method: str,
        path: str,
        user: str = "admin",
        body: Any = None,
        token: str | None = None,
        **headers: str,
    ) -> tuple[int, Any]:
        response = await self.client.request(
            method, path, headers=as_user(user, token, **headers), json=body
        )
        text = await response.text()
        if response.content_type == "application/json" and text.strip():
            return response.status, await response.json()
        return response.status, text

    async def login(self, user: str, token: str | None = None) -> str:
        """A session cookie for ``user`` (``POST /_session``), kept out of the cookie jar.

        A worker's app logs in from its enrolled device (``token``); supervisors log in
        to the console from a browser, without one.
        """
        headers = {} if token is None else {TOKEN_HEADER: token}
        response = await self.client.post(
            "/_session", json={"name": user, "password": PASSWORD}, headers=headers
        )
        assert response.status == 200, await response.text()
        cookie = response.cookies["AuthSession"].value
        self.client.session.cookie_jar.clear()
        return cookie

    async def earlier_session(self, user: str) -> str:
        """The cookie of a session ``user`` opened earlier, while their phone was in good
        standing (a session outlives a later revocation; each request then says why)."""

        def run(conn: sqlite3.Connection) -> str:
            found = embedded_tables.get_user(conn, user)
            assert found is not None
            return embedded_tables.start_session(conn, user, found.password_hash, time.time())

        return await self.client.app[STORE].write_tx(run)

    async def in_session(
        self, method: str, path: str, user: str, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        """A call with a session cookie instead of Basic: device refusals say why (sync.auth)."""
        headers = {"Cookie": f"AuthSession={await self.earlier_session(user)}"}
        if token is not None:
            headers["X-Device-Token"] = token
        response = await self.client.request(method, path, headers=headers, json=body)
        text = await response.text()
        if response.content_type == "application/json" and text.strip():
            return response.status, await response.json()
        return response.status, text

    async def add(self, serial: str, imei: str, **fields: Any) -> dict[str, Any]:
        status, body = await self.call(
            "POST", "/api/v1/devices", body={"serial": serial, "imei": imei, **fields}
        )
        assert status == 201, body
        return dict(body)

    async def code(self, serial: str, user: str = "admin") -> str:
        status, body = await self.call("POST", f"/api/v1/devices/{serial}/enrolment-code", user)
        assert status == 201, body
        return str(body["code"])

    async def enrol(self, serial: str, worker: str) -> str:
        """Issue a code as admin and exchange it as ``worker``: the device token."""
        code = await self.code(serial)
        status, body = await self.call(
            "POST", "/api/v1/devices/enroll", worker, {"code": code, "serial": serial}
        )
        assert status == 201, body
        return str(body["device_token"])

    async def issued(self, serial: str, imei: str, worker: str, **fields: Any) -> str:
        """A device added, assigned to ``worker`` and enrolled: its token."""
        await self.add(serial, imei, worker=worker, **fields)
        return await self.enrol(serial, worker)

    async def mark(self, serial: str, status: str, user: str = "admin") -> tuple[int, Any]:
        return await self.call("POST", f"/api/v1/devices/{serial}/status", user, {"status": status})

    async def drain(self) -> None:
        """Wait for the background writes (refusals, last-sync updates)."""
        await self.client.app[REGISTRY].guard.writes.drain()
