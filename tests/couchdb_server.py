"""A CouchDB-API server for the CouchDB-backend tests, and helpers to use it.

If ``FIELDSYNC_TEST_COUCHDB_URL`` is set (an admin URL with the credentials in it,
e.g. ``http://admin:pw@127.0.0.1:5984``), the tests use that server as it is.
Otherwise `couchdb_server` starts ``pouchdb-server`` (npm, in ``tests/clients``)
in memory on a free loopback port with one server admin, so that the same
credentials-in-the-URL form works against both.

pouchdb-server 4.2.0 dies (TypeError in express-pouchdb) when a request that is not
from a server admin creates a database, so every request here carries the admin's
credentials.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from json import dumps, loads
from pathlib import Path
from typing import Any

ENV_URL = "FIELDSYNC_TEST_COUCHDB_URL"
POUCHDB_SERVER = Path(__file__).parent / "clients" / "node_modules" / ".bin" / "pouchdb-server"
ADMIN = "admin"
ADMIN_PASSWORD = "pouch-admin-pw"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 3


class CouchServerError(RuntimeError):
    """pouchdb-server could not be started."""


def clustered(url: str) -> bool:
    """Whether the CouchDB at ``url`` is a cluster of several nodes (a real one, on demand)."""
    status, body = couch_request(url, "GET", "/_membership")
    return status == 200 and len(body.get("cluster_nodes", [])) > 1


def couch_request(url: str, method: str, path: str, json: Any = None) -> tuple[int, Any]:
    """Send one request to ``url + path``; return the status and the decoded JSON body.

    ``url`` may carry ``user:password@``; it becomes a Basic ``Authorization`` header
    (urllib does not read credentials from a URL). Error statuses are returned, not
    raised. ``path`` must already be URL-encoded (see `db_path`).
    """
    base, headers = _split_credentials(url)
    data = None
    if json is not None:
        data = dumps(json).encode()
        headers["Content-Type"] = "application/json"
    headers["Accept"] = "application/json"
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, _decode(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, _decode(exc.read())


def db_path(name: str) -> str:
    """``/{name}`` with every reserved character encoded (``$`` -> ``%24``, ``/`` -> ``%2F``)."""
    return "/" + urllib.parse.quote(name, safe="")


def new_prefix() -> str:
    """A database-name prefix no other test uses: a letter, 8 hex digits, ``_``."""
    return f"t{secrets.token_hex(4)}_"


def delete_databases(url: str, prefix: str) -> list[str]:
    """Delete every database whose name starts with ``prefix``; return their names."""
    status, names = couch_request(url, "GET", "/_all_dbs")
    if status != 200:
        raise CouchServerError(f"GET /_all_dbs answered {status}: {names}")
    doomed = [name for name in names if name.startswith(prefix)]
    for name in doomed:
        status, body = couch_request(url, "DELETE", db_path(name))
        if status not in (200, 202, 404):
            raise CouchServerError(f"DELETE {name} answered {status}: {body}")
    return doomed


@contextmanager
def couchdb_server() -> Iterator[str]:
    """Yield an admin base URL: ``$FIELDSYNC_TEST_COUCHDB_URL``, else a fresh pouchdb-server."""
    configured = os.environ.get(ENV_URL)
    if configured:
        yield configured.rstrip("/")
        return
    with tempfile.TemporaryDirectory(prefix="pouchdb-server-") as workdir:
        process, url, logdir = _start_pouchdb_server(Path(workdir))
        try:
            yield url
        finally:
            died = process.poll()
            _stop(process)
            if died is not None:
                logs = _logs(logdir)
                raise CouchServerError(f"pouchdb-server died during the tests ({died}):\n{logs}")


def _start_pouchdb_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    node = shutil.which("node")
    if node is None or not POUCHDB_SERVER.exists():
        raise CouchServerError("node and `npm ci` in tests/clients are needed (make setup)")
    failures = []
    for attempt in range(PORT_ATTEMPTS):
        port = _free_port()
        attempt_dir = workdir / str(attempt)
        attempt_dir.mkdir()
        process, url = _spawn(node, attempt_dir, port)
        try:
            _wait_ready(process, url, _uuid_of(attempt_dir))
        except CouchServerError as exc:
            _stop(process)
            failures.append(f"port {port}: {exc}\n{_logs(attempt_dir)}")
            continue
        return process, url, attempt_dir
    raise CouchServerError("pouchdb-server did not start:\n" + "\n\n".join(failures))


def _spawn(node: str, workdir: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    # The admin password is hashed by pouchdb-server when it reads the file; the
    # uuid tells our server apart from anything else that took the port meanwhile.
    config = {
        "admins": {ADMIN: ADMIN_PASSWORD},
        "couchdb": {"uuid": secrets.token_hex(16)},
        "log": {"file": str(workdir / "couch.log")},
    }
    (workdir / "config.json").write_text(dumps(config))
    command = [node, str(POUCHDB_SERVER), "--in-memory", "-n", "--no-color"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    command += ["--dir", str(workdir), "--config", str(workdir / "config.json")]
    with (workdir / "server.log").open("ab") as log:
        process = subprocess.Popen(
            command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    return process, f"http://{ADMIN}:{ADMIN_PASSWORD}@127.0.0.1:{port}"


def _uuid_of(workdir: Path) -> str:
    return str(loads((workdir / "config.json").read_text())["couchdb"]["uuid"])


def _wait_ready(process: subprocess.Popen[bytes], url: str, uuid: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CouchServerError(f"exited with status {process.returncode}")
        try:
            status, body = couch_request(url, "GET", "/_all_dbs")
        except OSError:
            time.sleep(0.1)
            continue
        if status != 200:
            raise CouchServerError(f"GET /_all_dbs as admin answered {status}: {body}")
        status, body = couch_request(url, "GET", "/")
        if not isinstance(body, dict) or body.get("uuid") != uuid:
            raise CouchServerError(f"another server answers on the port: {status} {body}")
        return
    raise CouchServerError(f"no answer in {READY_TIMEOUT} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url.rstrip("/"), {}
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return base, {"Authorization": f"Basic {token}"}


def _decode(raw: bytes) -> Any:
    try:
        return loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _logs(workdir: Path) -> str:
    return f"{_tail(workdir / 'server.log')}\n{_tail(workdir / 'couch.log')}"


def _tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
