"""Login timing: an unknown name must cost what a wrong password costs (issue 9, point 3).

    .venv/bin/python -m bench.login_timing

Runs the app in-process on a throw-away data dir and prints the median time of a
Basic request with a wrong password for an existing user and for unknown names
(each under the per-name and per-address limits).
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from sync.app import create_app
from sync.config import Config
from sync.people_store import embedded_tables
from sync.scopes import Role
from sync.store.schema import with_file

ROUNDS = 9


def basic(name: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


async def timed(client: TestClient[Any, Any], name: str, password: str) -> float:
    started = time.perf_counter()
    response = await client.get("/health/", headers=basic(name, password))
    assert response.status == 401, response.status
    return time.perf_counter() - started


async def measure(data_dir: Path) -> tuple[float, float]:
    with_file(data_dir, lambda c: embedded_tables.add_user(c, "alice", Role.ADMIN, "correct horse"))
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(Config(data_dir=data_dir))))
    await client.start_server()
    try:
        wrong, unknown = [], []
        for n in range(ROUNDS):
            wrong.append(await timed(client, "alice", f"guess-{n}"))
            unknown.append(await timed(client, f"nobody-{n}", f"guess-{n}"))
    finally:
        await client.close()
    return statistics.median(wrong), statistics.median(unknown)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wrong, unknown = asyncio.run(measure(Path(tmp) / "data"))
    print(f"wrong password: {wrong * 1000:.0f} ms, unknown name: {unknown * 1000:.0f} ms (median)")


if __name__ == "__main__":
    main()
