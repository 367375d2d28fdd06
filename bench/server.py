"""A real ``fieldsync serve`` process on a free loopback port, its CLI, and an admin client."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
FIELDSYNC = str(BIN / "fieldsync")
HOST = "127.0.0.1"
DB = "health"
READY_TIMEOUT = 30.0
# Settings that choose the document store: the bench sets them per server, never inherits them.
STORE_SETTINGS = ("FIELDSYNC_COUCHDB_", "FIELDSYNC_CLOUDANT_")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def environment(settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any store setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(STORE_SETTINGS)}
    return env | dict(settings or {})


class Server:
    """``fieldsync serve --data-dir DIR --host 127.0.0.1 --port N``, stopped by its PID.

    ``settings`` are environment variables of the server only (the document store:
    ``FIELDSYNC_COUCHDB_URL`` and ``_PREFIX``); without them it serves the embedded store.
    """

    def __init__(
        self, data_dir: Path, log_path: Path, settings: Mapping[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.settings = dict(settings or {})
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [FIELDSYNC, "serve", "--data-dir", str(self.data_dir)]
        command += ["--host", HOST, "--port", str(self.port)]
        env = environment(self.settings)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fieldsync serve exited early:\n{self.log_tail()}")
            if self._listening():
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"fieldsync serve not ready in {READY_TIMEOUT:.0f} s:\n{self.log_tail()}"
        )

    def _listening(self) -> bool:
        """True once the server has logged its URL and answers ``GET /``."""
        logged = any(
            '"listening"' in line and f":{self.port}/" in line
            for line in self.log_path.read_text(errors="replace").splitlines()
        )
        if not logged:
            return False
        try:
            with urllib.request.urlopen(self.url + "/", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def stop(self) -> None:
        """SIGTERM to our own child's PID; SIGKILL if it does not go within 10 s."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- the CLI, on the same data dir while the server runs ---------------------------
    def cli(self, *args: str, password: str | None = None) -> str:
        """Run a ``fieldsync`` command on this server's stores (its data dir, and the
        document store of its settings: with issue 11, users, places and devices live in
        CouchDB when the server's do)."""
        env = environment(self.settings)
        if password is not None:
            env["FIELDSYNC_PASSWORD"] = password
        command = [FIELDSYNC, *args, "--data-dir", str(self.data_dir)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    # -- devices: a CHW's app must be enrolled and send X-Device-Token --------------------
    def enrol_device(self, worker: str, password: str, serial: str) -> dict[str, str]:
        """Headers the worker's app sends: none if the server asks for no enrolment.

        Otherwise as an implementer would: add a phone, assign it to the worker, issue
        a one-time code (CLI), and the app exchanges it for its device token (HTTP).
        """
        status, _ = self.request("GET", f"/{DB}/", (worker, password))
        if status == 200:
            return {}
        self.cli("device", "add", serial, "--imei", imei(serial), "--model", "bench phone")
        self.cli("device", "assign", serial, worker)
        code = self.cli("device", "enrol-code", serial).split()[0]
        body = {"code": code, "serial": serial}
        status, answer = self.request("POST", "/api/v1/devices/enroll", (worker, password), body)
        if status != 201:
            raise RuntimeError(f"enrolling {serial} for {worker}: {status} {answer}")
        headers = {answer.get("header", "X-Device-Token"): answer["device_token"]}
        status, answer = self.request("GET", f"/{DB}/", (worker, password), headers=headers)
        if status != 200:
            raise RuntimeError(f"{worker} with an enrolled device: {status} {answer}")
        return headers

    # -- HTTP --------------------------------------------------------------------------
    def remote(self, user: str, password: str, headers: dict[str, str]) -> dict[str, Any]:
        """A driver reference to the ``health`` database as ``user``."""
        return {
            "url": f"{self.url}/{DB}",
            "username": user,
            "password": password,
            "headers": headers,
        }

    def request(
        self,
        method: str,
        path: str,
        auth: tuple[str, str],
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def gauge(self, name: str, auth: tuple[str, str]) -> dict[str, float]:
        """The samples of gauge ``name`` on ``GET /metrics``, by their labels' text."""
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request = urllib.request.Request(self.url + "/metrics")
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
        found = {}
        for line in text.splitlines():
            if line.startswith(name + "{"):
                labels, _, value = line[len(name) :].rpartition(" ")
                found[labels] = float(value)
        return found


def imei(serial: str) -> str:
    """A 15-digit IMEI with a valid Luhn check digit, derived from ``serial``."""
    digits = "35" + f"{int(hashlib.sha256(serial.encode()).hexdigest(), 16) % 10**12:012d}"
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2 == 0:  # doubled: every second digit from the right, check digit excluded
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return digits + str((10 - total % 10) % 10)
