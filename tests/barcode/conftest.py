"""In-process fixtures for the barcode API: the real app on a real SQLite file.

Test modules use only fixtures from here, never ``from conftest import``:
several test directories have a conftest.py, so that import is ambiguous.

The app is the app factory's, ``create_app`` (it mounts ``barcode.routes``
through its ``extend``).  Device enrolment is off, so requests carry no device
and blocks name theirs in the body.  Places and
users::

    country
    ├── area-a      alice (chw)
    └── area-b      bob (chw)

    sam (supervisor): captures both areas
    admin (admin); gw (gateway)
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from sync.app import create_app
from sync.config import Config
from sync.people_store import embedded_tables
from sync.scopes import Role
from sync.store.schema import connect, db_path, initialise

PASSWORD = "correct horse"
PLACES = [("country", None), ("area-a", "country"), ("area-b", "country")]
USERS: list[tuple[str, Role, list[str]]] = [
    ("admin", Role.ADMIN, []),
    ("alice", Role.CHW, ["area-a"]),
    ("bob", Role.CHW, ["area-b"]),
    ("sam", Role.SUPERVISOR, ["country"]),
    ("gw", Role.GATEWAY, []),
]
# Small limits so the size and bomb tests stay cheap.
BARCODE_SETTINGS = {"max_image_bytes": 400_000, "max_image_pixels": 4_000_000}

Client = TestClient[Any, Any]


def seed(data_dir: Path) -> None:
    path = db_path(data_dir)
    initialise(path)
    with closing(connect(path)) as conn:
        for place, parent in PLACES:
            embedded_tables.add_place(conn, place, parent, None)
        for name, role, places in USERS:
            embedded_tables.add_user(conn, name, role, PASSWORD, places, [])


def as_user(name: str) -> dict[str, str]:
    token = base64.b64encode(f"{name}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def make_app(config: Config) -> web.Application:
    return create_app(config)


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One seeded data dir per session: hashing the passwords is the slow part."""
    template = tmp_path_factory.mktemp("seeded") / "data"
    seed(template)
    return template


@pytest.fixture
def data_dir(tmp_path: Path, seeded: Path) -> Path:
    return Path(shutil.copytree(seeded, tmp_path / "data"))


@pytest.fixture
def config(data_dir: Path) -> Config:
    return Config(
        data_dir=data_dir,
        max_request_bytes=2 * 1024 * 1024,
        require_enrolment=False,
        extra={"barcode": dict(BARCODE_SETTINGS)},
    )


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[Client]], config: Config) -> Client:
    return await aiohttp_client(make_app(config))


class Api:
    """Requests as one user or another, against the in-process app."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @staticmethod
    def auth(user: str) -> dict[str, str]:
        return as_user(user)

    async def call(
        self, method: str, path: str, user: str = "admin", body: Any = None
    ) -> tuple[int, Any]:
        """A JSON request as ``user``; the status and the decoded JSON answer."""
        response = await self.client.request(method, path, headers=as_user(user), json=body)
        return response.status, await response.json()

    async def put_person(self, patient_id: str, place: str, name: str) -> None:
        doc = {"place": place, "name": name, "type": "person"}
        status, body = await self.call("PUT", f"/health/person-{patient_id}", "admin", doc)
        assert status == 201, body


@pytest.fixture
def api(client: Client) -> Api:
    return Api(client)


@pytest.fixture
def app_factory() -> Callable[[Config], web.Application]:
    return make_app
