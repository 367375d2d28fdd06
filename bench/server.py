"""A real ``fieldsync serve`` process on a free loopback port, its CLI, and an admin client."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
FIELDSYNC = str(BIN / "fieldsync")
HOST = "127.0.0.1"
DB = "health"
READY_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Server:
    """``fieldsync serve --data-dir DIR --host 127.0.0.1 --port N``, stopped by its PID."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [FIELDSYNC, "serve", "--data-dir", str(self.data_dir)]
        command += ["--host", HOST, "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fieldsync serve exited early:\n{self.log_tail()}")
            if self._listening():
                return
            time.sleep(0.1)
        raise RuntimeError(f"fieldsync serve not ready in {READY_TIMEOUT:.0f} s:\n{self.log_tail()}")

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
    def cli(self, *args: str, password: str | None = None) -> None:
        env = dict(os.environ)
        if password is not None:
            env["FIELDSYNC_PASSWORD"] = password
        command = [FIELDSYNC, *args, "--data-dir", str(self.data_dir)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stdout}{done.stderr}")

    # -- admin HTTP ----------------------------------------------------------------
    def remote(self, user: str, password: str) -> dict[str, str]:
        """A driver reference to the ``health`` database as ``user``."""
        return {"url": f"{self.url}/{DB}", "username": user, "password": password}

    def request(
        self, method: str, path: str, auth: tuple[str, str], body: Any = None
    ) -> tuple[int, Any]:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
