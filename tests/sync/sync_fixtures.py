"""In-process fixtures: the real app on a real SQLite file, driven by aiohttp's test client.

The place tree and users every test here shares::

    country
    ├── district-a
    │   └── facility-a
    │       ├── area-a1     alice (chw)
    │       └── area-a2
    └── district-b
        └── area-b1         bob (chw)

    sam (supervisor): captures district-a, reads district-b too
    admin (admin)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from shared_org import PASSWORD, PLACES, USERS, seed
from shared_org import basic_auth as as_user

from sync.app import create_app
from sync.config import Config

__all__ = ["PASSWORD", "PLACES", "USERS", "as_user", "seed"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    seed(tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def config(data_dir: Path) -> Config:
    # Device enrolment is the device registry's subject (tests/device_registry);
    # these tests are about the protocol, so workers sync without a device token.
    return Config(data_dir=data_dir, max_request_bytes=2 * 1024 * 1024, require_enrolment=False)


Client = TestClient[Any, Any]


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[Client]], config: Config) -> Client:
    return await aiohttp_client(create_app(config))


class Api:
    """Small JSON helpers over the test client, one user per call."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def call(
        self, method: str, path: str, user: str = "admin", body: Any = None, **params: Any
    ) -> tuple[int, Any]:
        response = await self.client.request(
            method, path, headers=as_user(user), json=body, params=params or None
        )
        text = await response.text()
        return response.status, (await response.json()) if text.strip() else None

    async def bulk(self, docs: list[dict[str, Any]], user: str = "admin", **extra: Any) -> Any:
        status, body = await self.call("POST", "/health/_bulk_docs", user, {"docs": docs, **extra})
        assert status == 201, body
        return body


@pytest.fixture
def api(client: Client) -> Api:
    return Api(client)


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[Client]:
    """The app on ``config``, started and stopped by hand (for commands run in between)."""
    client: Client = TestClient(TestServer(create_app(config)))
    try:
        await client.start_server()
        yield client
    finally:
        await client.close()


async def until_served(api: Api, path: str = "/health") -> Api:
    """Wait until ``path`` answers 200: on CouchDB the database is made in the background."""
    for _ in range(200):
        if (await api.call("GET", path))[0] == 200:
            return api
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never answered 200")
