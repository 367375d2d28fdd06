"""In-process fixtures for the SMS gateway: the real app on a real SQLite file.

The places, users, phones and clock are described in sms_fixtures.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from sms_fixtures import Client, FakeClock, Gateway, make_app, seed

from sms_gateway.routes import OVERRIDES, Overrides
from sync.config import Config


@pytest.fixture(autouse=True)
def fresh_logging() -> None:
    """A CLI test elsewhere may have pointed structlog at a captured stream since closed."""
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded once (password hashing is slow on purpose); each test gets a copy."""
    template = tmp_path_factory.mktemp("sms-template") / "data"
    seed(template)
    return template


@pytest.fixture
def data_dir(tmp_path: Path, seeded: Path) -> Path:
    shutil.copytree(seeded, tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def sms_settings() -> dict[str, Any]:
    """Override in a test module to change the SMS settings."""
    return {"tick": 0.05}


@pytest.fixture
def config(data_dir: Path, sms_settings: dict[str, Any]) -> Config:
    return Config(data_dir=data_dir, require_enrolment=False, extra={"sms": sms_settings})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config, clock: FakeClock
) -> Client:
    app = make_app(config)
    app[OVERRIDES] = Overrides(clock=clock)
    return await aiohttp_client(app)


@pytest.fixture
def gateway(client: Client) -> Gateway:
    return Gateway(client)
