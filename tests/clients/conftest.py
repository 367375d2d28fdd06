"""Fixtures for the real-client tests: a PouchDB driver and a real server process.

The ``org`` fixture gives every test the same small place tree and users::

    country
    ├── district-a
    │   └── facility-a
    │       ├── area-a1     alice (chw)
    │       └── area-a2
    └── district-b
        └── area-b1         bob (chw)

    sam (supervisor): captures district-a, reads district-b too
    admin (admin): sees and writes everything
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from pouch import PouchDriver
from realserver import PASSWORD, Admin, ServerProcess, free_port

PLACES = [
    ("country", None),
    ("district-a", "country"),
    ("facility-a", "district-a"),
    ("area-a1", "facility-a"),
    ("area-a2", "facility-a"),
    ("district-b", "country"),
    ("area-b1", "district-b"),
]
USERS = [
    ("admin", "admin", []),
    ("alice", "chw", ["--place", "area-a1"]),
    ("bob", "chw", ["--place", "area-b1"]),
    ("sam", "supervisor", ["--place", "district-a", "--read-place", "district-b"]),
]


@pytest.fixture
async def pouch() -> AsyncIterator[PouchDriver]:
    driver = await PouchDriver.start()
    try:
        yield driver
    finally:
        await driver.aclose()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data", free_port(), tmp_path / "server.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def org(server: ServerProcess) -> ServerProcess:
    """The server, with the place tree and users of this module's docstring."""
    for place, parent in PLACES:
        server.cli("place", "add", place, *(["--parent", parent] if parent else []))
    for name, role, scope in USERS:
        server.cli("user", "add", name, "--role", role, *scope, password=PASSWORD)
    return server


@pytest.fixture
async def admin(org: ServerProcess) -> AsyncIterator[Admin]:
    auth = aiohttp.BasicAuth("admin", PASSWORD)
    async with aiohttp.ClientSession(auth=auth) as session:
        yield Admin(session, org)
