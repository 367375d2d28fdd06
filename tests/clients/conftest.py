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

import base64
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest
from browser import Browser
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


BACKENDS = ["sqlite", "couchdb"]


@pytest.fixture(params=BACKENDS)
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Where the documents live: the embedded store, or CouchDB (pouchdb-server in CI,
    ``FIELDSYNC_TEST_COUCHDB_URL`` for a real CouchDB); every real-client test runs on both."""
    if request.param == "sqlite":
        return {}
    url: str = request.getfixturevalue("couchdb_url")
    prefix: str = request.getfixturevalue("couch_prefix")
    return {"FIELDSYNC_COUCHDB_URL": url, "FIELDSYNC_COUCHDB_PREFIX": prefix}


@contextmanager
def running(data_dir: Path, log_path: Path, env: dict[str, str]) -> Iterator[ServerProcess]:
    process = ServerProcess(data_dir, free_port(), log_path, env)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def server_env() -> dict[str, str]:
    """Environment settings for ``fieldsync serve``; a test module may override this."""
    return {}


@pytest.fixture
def server(
    tmp_path: Path, server_env: dict[str, str], backend_env: dict[str, str]
) -> Iterator[ServerProcess]:
    """A real ``fieldsync serve`` on an empty data dir."""
    env = {**server_env, **backend_env}
    with running(tmp_path / "data", tmp_path / "server.log", env) as process:
        yield process


@pytest.fixture(scope="session")
def org_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding PLACES and USERS, made once with the CLI (~0.5 s a call)."""
    data_dir = tmp_path_factory.mktemp("org") / "data"
    template = ServerProcess(data_dir, 0, data_dir.parent / "unused.log")
    template.cli("init")
    for place, parent in PLACES:
        template.cli("place", "add", place, *(["--parent", parent] if parent else []))
    for name, role, scope in USERS:
        template.cli("user", "add", name, "--role", role, *scope, password=PASSWORD)
    return data_dir


@pytest.fixture
def org(
    tmp_path: Path, org_data: Path, server_env: dict[str, str], backend_env: dict[str, str]
) -> Iterator[ServerProcess]:
    """A real server on a fresh copy of ``org_data``: the places and users above."""
    shutil.copytree(org_data, tmp_path / "data")
    env = {**server_env, **backend_env}
    with running(tmp_path / "data", tmp_path / "server.log", env) as process:
        yield process


@pytest.fixture
def crash_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real server with one place ("area") and an admin, for the ``kill -9`` tests."""
    server = ServerProcess(tmp_path / "data", free_port(), tmp_path / "server.log")
    server.cli("init")
    server.cli("place", "add", "area")
    server.cli("user", "add", "admin", "--role", "admin", password=PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def admin(org: ServerProcess) -> AsyncIterator[Admin]:
    token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"}) as session:
        yield Admin(session, org)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    """Headless Chromium on one page (skips when chromium is not installed)."""
    started = await Browser.start(tmp_path / "chromium-profile")
    try:
        yield started
    finally:
        await started.close()
