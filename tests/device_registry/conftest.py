"""In-process fixtures for the device registry: the real app on a real SQLite file.

The organisation they seed is described in ``device_helpers``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path

import pytest
from device_helpers import Client, Devices, seed
from password_checks import checks

from sync.app import create_app
from sync.config import Config
from sync.store.schema import connect, db_path

__all__ = ["checks"]  # password checks counted (login-limit tests)


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One seeded data dir, copied per test (scrypt for five users is slow)."""
    base = tmp_path_factory.mktemp("seed") / "data"
    seed(base)
    return base


@pytest.fixture
def data_dir(seeded: Path, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    target.mkdir()
    with closing(connect(db_path(seeded))) as source, closing(connect(db_path(target))) as copy:
        source.backup(copy)
    return target


@pytest.fixture
def config(data_dir: Path) -> Config:
    return Config(data_dir=data_dir)


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[Client]], config: Config) -> Client:
    return await aiohttp_client(create_app(config))


@pytest.fixture
def devices(client: Client) -> Devices:
    return Devices(client)
