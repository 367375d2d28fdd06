"""Slow and many clients against a real ``fieldsync serve`` process.

One address once held 1,100 half-open connections: the server ran out of file
descriptors, stopped answering everyone and wrote 188k log lines. These tests
hold such connections open with raw sockets (a half request line, a trickled
header, a stalled body) and check that the server cuts them, refuses what is over
its caps at once, keeps serving everyone else, and says so in a few log lines.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import os
import resource
import select
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from realserver import DB, FIELDSYNC, PASSWORD, ServerProcess, free_port

SLOW_CONNECTIONS = 1000
SERVER_OPEN_FILES = 1000  # the server's hard limit: fewer files than the slow connections
PATIENCE = 20.0  # generous overall deadline for anything we wait for; never a threshold
ANOTHER_ADDRESS = "127.0.0.2"  # another user: any 127/8 address reaches the loopback server
BASIC = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()


@dataclass
class LimitedServer(ServerProcess):
    """``fieldsync serve`` with a hard open-file limit, like a default systemd unit."""

    open_files: int = SERVER_OPEN_FILES

    def start(self) -> None:
        command = [FIELDSYNC, "serve", "--data-dir", str(self.data_dir)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        limit = (self.open_files, self.open_files)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit),
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        if "FIELDSYNC_TLS_CERT" not in self.env:
            super()._wait_ready()
            return
        deadline = time.monotonic() + PATIENCE
        while not _tls_get(self, self.env["FIELDSYNC_TLS_CERT"]):
            if time.monotonic() > deadline or self._process is None or self._process.poll():
                raise RuntimeError(f"fieldsync serve (TLS) not ready:\n{self.log_tail()}")
            time.sleep(0.1)

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.returncode

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


@pytest.fixture(scope="module")
def admin_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("slow") / "data"
    template = ServerProcess(data_dir, 0, data_dir.parent / "unused.log")
    template.cli("init")
    template.cli("user", "add", "admin", "--role", "admin", password=PASSWORD)
    return data_dir


def _running(tmp_path: Path, admin_data: Path, env: dict[str, str]) -> Iterator[LimitedServer]:
    shutil.copytree(admin_data, tmp_path / "data")
    server = LimitedServer(tmp_path / "data", free_port(), tmp_path / "server.log", env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Raw client sockets; all closed at the end of the test, whatever happens."""
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def _connect(
    server: ServerProcess, sockets: list[socket.socket], source: str = "127.0.0.1"
) -> socket.socket:
    address = ("127.0.0.1", server.port)
    sock = socket.create_connection(address, timeout=PATIENCE, source_address=(source, 0))
    sockets.append(sock)
    return sock


def _closed_by_server(sock: socket.socket, wait: float = 0.0) -> bool:
    """True when the server has closed the connection (EOF or reset), without answering."""
    readable, _, _ = select.select([sock], [], [], wait)
    if not readable:
        return False
    try:
        data = sock.recv(65536, socket.MSG_PEEK)
    except ConnectionResetError:
        return True
    assert data == b"", f"expected the server to close without answering, got {data[:80]!r}"
    return True


def _request(
    server: ServerProcess, sockets: list[socket.socket], source: str = "127.0.0.1"
) -> bytes:
    """One GET /_up on a fresh connection; the raw answer, or b"" when the server closed it."""
    sock = _connect(server, sockets, source)
    head = "GET /_up HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    try:
        sock.sendall(head.encode())
        return _read_all(sock)
    except (ConnectionResetError, BrokenPipeError):
        return b""


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# -- 1,000 slow connections from one address ----------------------------------------------
@pytest.fixture
def crowded(tmp_path: Path, admin_data: Path) -> Iterator[LimitedServer]:
    env = {"FIELDSYNC_MAX_CONNECTIONS_PER_ADDRESS": "200", "FIELDSYNC_HEADER_TIMEOUT_SECONDS": "60"}
    yield from _running(tmp_path, admin_data, env)


@pytest.fixture
def many_sockets() -> None:
    """This test holds over 1,000 sockets: raise our own soft open-file limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = SLOW_CONNECTIONS + 200
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def test_a_thousand_slow_connections_do_not_starve_another_user(
    crowded: LimitedServer, sockets: list[socket.socket], many_sockets: None
) -> None:
    for _ in range(SLOW_CONNECTIONS):
        _connect(crowded, sockets).sendall(b"GET /_")  # half a request line, then nothing

    connector = aiohttp.TCPConnector(local_addr=(ANOTHER_ADDRESS, 0))
    timeout = aiohttp.ClientTimeout(total=PATIENCE)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.get(f"{crowded.url}/_up") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}
        async with session.get(f"{crowded.url}/{DB}/", headers={"Authorization": BASIC}) as resp:
            assert resp.status == 200
            assert (await resp.json())["db_name"] == DB

    held = _held_after_refusals(sockets, expected_refused=SLOW_CONNECTIONS - 200)
    assert len(held) == 200  # the per-address cap; the rest were closed unread
    held[0].sendall(b"up HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert _read_all(held[0]).startswith(b"HTTP/1.1 200")  # held connections are live

    poll = asyncio.create_task(_long_poll(crowded, wait_ms=60000, source=ANOTHER_ADDRESS))
    await asyncio.sleep(0.5)
    assert not poll.done()
    await asyncio.to_thread(crowded.stop)  # SIGTERM; flushes the trouble summary
    assert crowded.returncode == 0  # stopped gracefully, not killed after its 5 s
    assert (await poll)["results"] == []  # the shutdown answered the long-poll
    lines = crowded.log_lines()
    refused = [json.loads(line) for line in lines if "connections_refused" in line]
    assert [(r["reason"], r["count"]) for r in refused] == [("per_address", 800)]
    startup = ("audit_chain_checked", "account_store", "listening", "connection_limits")
    said = [line for line in lines if not any(f'"{e}"' in line for e in startup)]
    assert len(said) < 8, "\n".join(said[:20])  # one summary line, not one per connection


def _held_after_refusals(
    sockets: list[socket.socket], expected_refused: int
) -> list[socket.socket]:
    deadline = time.monotonic() + PATIENCE
    while True:
        refused = [sock for sock in sockets if _closed_by_server(sock)]
        if len(refused) >= expected_refused or time.monotonic() > deadline:
            return [sock for sock in sockets if sock not in refused]
        time.sleep(0.1)


PROXY = "127.0.0.2"


# -- read deadlines -----------------------------------------------------------------------
STRICT = {"FIELDSYNC_HEADER_TIMEOUT_SECONDS": "1", "FIELDSYNC_BODY_TIMEOUT_SECONDS": "2"}


@pytest.fixture
def strict(tmp_path: Path, admin_data: Path) -> Iterator[LimitedServer]:
    yield from _running(tmp_path, admin_data, STRICT)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, admin_data: Path) -> Iterator[LimitedServer]:
    """STRICT deadlines, five connections per address, PROXY a trusted reverse proxy."""
    env = {**STRICT, "FIELDSYNC_MAX_CONNECTIONS_PER_ADDRESS": "5"}
    env["FIELDSYNC_TRUSTED_PROXIES"] = PROXY
    yield from _running(tmp_path_factory.mktemp("guarded"), admin_data, env)


def test_a_trickled_header_and_a_stalled_body_are_cut_off(
    strict: LimitedServer, sockets: list[socket.socket]
) -> None:
    trickler = _connect(strict, sockets)
    trickler.sendall(b"GET /_up HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    staller = _connect(strict, sockets)
    head = (
        f"PUT /{DB}/stalled HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {BASIC}\r\n"
        "Content-Type: application/json\r\nContent-Length: 50\r\n\r\n"
    )
    staller.sendall(head.encode() + b'{"place": ')  # then silence
    assert _trickle_until_cut(trickler), "the server still waits for the header"
    assert _closed_by_server(staller, wait=PATIENCE), "the server still waits for the body"

    strict.stop()  # the trouble summary is flushed at shutdown
    lines = strict.log_lines()
    for event in ("header_timeouts", "body_timeouts"):
        assert [json.loads(line)["count"] for line in lines if event in line] == [1]
    assert not [line for line in lines if "Traceback" in line or "Error handling" in line]


def _trickle_until_cut(sock: socket.socket) -> bool:
    """A header byte every 0.25 s: never idle, never done; True once the server hangs up."""
    for _ in range(int(PATIENCE / 0.25)):
        if _closed_by_server(sock, wait=0.25):
            return True
        try:
            sock.sendall(b"a")
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


async def test_a_slow_upload_and_a_long_poll_outlive_the_read_deadlines(
    guarded: LimitedServer, sockets: list[socket.socket]
) -> None:
    """Both take longer than either deadline; neither is idle that long, so both finish."""
    upload = asyncio.to_thread(_slow_login, guarded, sockets)
    answer, body = await asyncio.gather(upload, _long_poll(guarded))
    assert answer.startswith(b"HTTP/1.1 200")
    assert body["results"] == []
    assert "last_seq" in body


def _slow_login(server: LimitedServer, sockets: list[socket.socket]) -> bytes:
    """A login whose body trickles in for longer than the 2 s body deadline (2G)."""
    body = json.dumps({"name": "admin", "password": PASSWORD}).encode()
    sock = _connect(server, sockets)
    head = (
        "POST /_session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode())
    started = time.monotonic()
    for start in range(0, len(body), 5):
        time.sleep(0.25)
        sock.sendall(body[start : start + 5])
    assert time.monotonic() - started > 2  # longer in total than the body deadline
    return _read_all(sock)


async def _long_poll(
    server: LimitedServer, wait_ms: int = 2500, source: str = "127.0.0.1"
) -> dict[str, object]:
    url = f"{server.url}/{DB}/_changes"
    params = {"feed": "longpoll", "since": "now", "timeout": str(wait_ms), "heartbeat": "1000"}
    timeout = aiohttp.ClientTimeout(total=PATIENCE)
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
        session.get(url, params=params, headers={"Authorization": BASIC}) as resp,
    ):
        assert resp.status == 200
        body: dict[str, object] = json.loads(await resp.read())
    return body


# -- the per-address cap --------------------------------------------------------------------


def test_the_per_address_cap_refuses_the_next_connection_at_once(
    guarded: LimitedServer, sockets: list[socket.socket]
) -> None:
    idle = [_connect(guarded, sockets) for _ in range(5)]
    assert _request(guarded, sockets) == b""  # connection 6: closed unread, no answer
    idle[0].close()
    answers = _retry_until_answered(guarded, sockets)
    assert answers.startswith(b"HTTP/1.1 200")  # a freed place is given to the next one


def _retry_until_answered(server: LimitedServer, sockets: list[socket.socket]) -> bytes:
    """The server learns of a client's close a moment later: ask again until served."""
    deadline = time.monotonic() + PATIENCE
    while not (answer := _request(server, sockets)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return answer


def test_a_trusted_proxy_is_not_capped_per_address(
    guarded: LimitedServer, sockets: list[socket.socket]
) -> None:
    """A proxy's connections carry many phones; only the global cap applies to it."""
    for _ in range(5):
        _connect(guarded, sockets, source=PROXY)
    assert _request(guarded, sockets, source=PROXY).startswith(b"HTTP/1.1 200")


# -- TLS ----------------------------------------------------------------------------------
def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _tls_get(server: ServerProcess, cafile: str) -> bytes:
    """GET /_up over TLS; b"" when the server closed the connection (before or after hello)."""
    context = ssl.create_default_context(cafile=cafile)
    address = ("127.0.0.1", server.port)
    try:
        with (
            socket.create_connection(address, timeout=PATIENCE) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
        ):
            sock.sendall(b"GET /_up HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return _read_all(sock)
    except OSError:
        return b""


@pytest.fixture
def tls(tmp_path: Path, admin_data: Path) -> Iterator[LimitedServer]:
    cert, key = _self_signed(tmp_path)
    env = {
        "FIELDSYNC_TLS_CERT": str(cert),
        "FIELDSYNC_TLS_KEY": str(key),
        "FIELDSYNC_HEADER_TIMEOUT_SECONDS": "1",
        "FIELDSYNC_MAX_CONNECTIONS_PER_ADDRESS": "2",
    }
    yield from _running(tmp_path, admin_data, env)


def test_under_tls_the_caps_and_the_deadline_apply_before_the_handshake(
    tls: LimitedServer, sockets: list[socket.socket]
) -> None:
    """A client that never says hello holds a file like any other: it counts and is cut."""
    cafile = tls.env["FIELDSYNC_TLS_CERT"]
    silent = [_connect(tls, sockets) for _ in range(2)]  # TCP only, no ClientHello
    assert _tls_get(tls, cafile) == b""  # the third: refused before its handshake
    assert all(_closed_by_server(sock, wait=PATIENCE) for sock in silent)  # handshake deadline
    deadline = time.monotonic() + PATIENCE
    while not (answer := _tls_get(tls, cafile)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answer.startswith(b"HTTP/1.1 200")
    tls.stop()
    lines = tls.log_lines()
    events = {json.loads(line)["event"] for line in lines if line.startswith("{")}
    assert {"connections_refused", "tls_handshakes_failed"} <= events
    startup = ("audit_chain_checked", "account_store", "listening", "connection_limits")
    said = [line for line in lines if not any(f'"{e}"' in line for e in startup)]
    assert len(said) < 8, "\n".join(said[:20])  # one summary line, not one per connection
