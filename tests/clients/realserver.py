"""A real ``fieldsync serve`` process, its CLI, and an admin HTTP client to seed it.

Used by the PouchDB interoperability tests: the server runs as its own process on a
free loopback port, on a data dir under the test's tmp_path, exactly as an
implementer would start it.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from pouch import PouchDriver

BIN = Path(sys.executable).parent
FIELDSYNC = str(BIN / "fieldsync")
PASSWORD = "correct-horse-battery-7"
DB = "health"
READY_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """``fieldsync serve`` on ``data_dir`` and ``port``; output goes to ``log_path``."""

    data_dir: Path
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)  # FIELDSYNC_* settings for serve
    # user -> X-Device-Token that remote() sends for them (an enrolled phone)
    device_tokens: dict[str, str] = field(default_factory=dict)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> None:
        command = [FIELDSYNC, "serve", "--data-dir", str(self.data_dir)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        env = {**os.environ, **self.env}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:  # never left running behind a test that failed to start it
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"fieldsync serve exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"fieldsync serve not ready in {READY_TIMEOUT} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """kill -9, as a power cut would."""
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.wait()

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()

    def cli(self, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``fieldsync ARGS --data-dir DIR`` with the server's settings (so the user and
        place commands reach the same accounts store); the password goes in
        FIELDSYNC_PASSWORD."""
        env = {**os.environ, **self.env}
        if password is not None:
            env["FIELDSYNC_PASSWORD"] = password
        command = [FIELDSYNC, *args, "--data-dir", str(self.data_dir)]
        try:
            return subprocess.run(
                command, env=env, check=True, capture_output=True, text=True, timeout=60
            )
        except subprocess.CalledProcessError as exc:
            exc.add_note(f"stdout: {exc.stdout}\nstderr: {exc.stderr}")
            raise

    def remote(self, user: str, password: str = PASSWORD, **headers: str) -> dict[str, Any]:
        """A driver reference to the ``health`` database as ``user``."""
        token = self.device_tokens.get(user)
        sent = {"X-Device-Token": token, **headers} if token else dict(headers)
        return {
            "url": f"{self.url}/{DB}",
            "username": user,
            "password": password,
            "headers": sent,
        }


@contextmanager
def servers_from(
    template: Path, tmp_path: Path, env: dict[str, str], count: int = 2
) -> Iterator[list[ServerProcess]]:
    """``count`` servers, each on its own copy of the ``template`` data dir, stopped after."""
    with ExitStack() as stack:
        servers = []
        for number in range(1, count + 1):
            data = tmp_path / f"data{number}"
            shutil.copytree(template, data)
            server = ServerProcess(data, free_port(), tmp_path / f"server{number}.log", env)
            server.start()
            stack.callback(server.stop)
            servers.append(server)
        yield servers


class Admin:
    """Seeds and inspects the server over HTTP as the ``admin`` user."""

    def __init__(self, session: aiohttp.ClientSession, server: ServerProcess) -> None:
        self.session = session
        self.db_url = f"{server.url}/{DB}"

    async def bulk_docs(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        async with self.session.post(f"{self.db_url}/_bulk_docs", json={"docs": docs}) as resp:
            body = await resp.json()
            assert resp.status == 201, (resp.status, body)
        assert all("rev" in row for row in body), body
        return list(body)

    async def put(self, doc: dict[str, Any]) -> str:
        """Write one document (new or an update carrying ``_rev``); return the new rev."""
        [row] = await self.bulk_docs([doc])
        return str(row["rev"])

    async def get(self, docid: str, **params: str) -> tuple[int, dict[str, Any]]:
        async with self.session.get(f"{self.db_url}/{docid}", params=params) as resp:
            return resp.status, await resp.json()

    async def get_attachment(self, docid: str, name: str) -> bytes:
        async with self.session.get(f"{self.db_url}/{docid}/{name}") as resp:
            assert resp.status == 200, (resp.status, await resp.text())
            return await resp.read()


def make_docs(place: str | None, count: int, prefix: str) -> list[dict[str, Any]]:
    """``count`` small patient records in ``place`` (shared documents when place is None)."""
    docs = []
    for number in range(count):
        doc: dict[str, Any] = {"_id": f"{prefix}-{number:03d}", "type": "patient", "n": number}
        if place is not None:
            doc["place"] = place
        docs.append(doc)
    return docs


def ids(docs: list[dict[str, Any]]) -> set[str]:
    return {doc["_id"] for doc in docs}


def inline_attachment(data: bytes, content_type: str = "image/jpeg") -> dict[str, str]:
    return {"content_type": content_type, "data": base64.b64encode(data).decode()}


def imei(number: int) -> str:
    """A valid 15-digit IMEI (Luhn check digit) for the n-th test phone."""
    body = f"35{number:012d}"
    total = 0
    for i, char in enumerate(reversed(body)):
        digit = int(char) * (2 if i % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return body + str((10 - total % 10) % 10)


async def enroll(server: ServerProcess, admin: Admin, worker: str, number: int) -> None:
    """Register phone ``PHONE-<worker>`` (the n-th test phone) and enrol it for ``worker``:
    the server then accepts the worker's syncs from it."""
    serial = f"PHONE-{worker}"
    device = {"serial": serial, "imei": imei(number), "worker": worker}
    async with admin.session.post(f"{server.url}/api/v1/devices", json=device) as resp:
        assert resp.status == 201, await resp.text()
    url = f"{server.url}/api/v1/devices/{serial}/enrolment-code"
    async with admin.session.post(url) as resp:
        code = (await resp.json())["code"]
    basic = base64.b64encode(f"{worker}:{PASSWORD}".encode()).decode()
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {basic}"}) as app:
        enroll = {"code": code, "serial": serial}
        async with app.post(f"{server.url}/api/v1/devices/enroll", json=enroll) as resp:
            assert resp.status == 201, await resp.text()
            server.device_tokens[worker] = (await resp.json())["device_token"]


async def local_ids(pouch: PouchDriver, db: str) -> set[str]:
    result = await pouch.call("all_docs", db=db)
    return {row["id"] for row in result["rows"] if not row["id"].startswith("_design/")}


async def pull(
    pouch: PouchDriver, server: ServerProcess, user: str, db: str, **options: Any
) -> Any:
    """One-shot replication from the server as ``user`` into the local database ``db``."""
    return await pouch.call("replicate", source=server.remote(user), target=db, options=options)


async def push(
    pouch: PouchDriver, server: ServerProcess, user: str, db: str, **options: Any
) -> Any:
    """One-shot replication from the local database ``db`` to the server as ``user``."""
    return await pouch.call("replicate", source=db, target=server.remote(user), options=options)
