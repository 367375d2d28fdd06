"""The compose file's one-shot scripts: deploy/make-cert.sh and deploy/couchdb-cluster-setup.sh.

Both run here under Debian's ``sh`` (dash), a stricter shell than the images'
(busybox ash in curlimages/curl, dash in the fieldsync image), with the real
openssl and curl.  The cluster set-up talks to a stand-in coordinator that
answers CouchDB's ``/_cluster_setup`` and ``/_membership`` as documented
(https://docs.couchdb.org/en/stable/setup/cluster.html#the-cluster-setup-api,
https://docs.couchdb.org/en/stable/api/server/common.html#membership) and
records what it was asked; a real three-node cluster is what docker-compose.yml
starts.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from nginx_proxy import Proxy, ProxyError, nginx_binary

ROOT = Path(__file__).resolve().parents[2]
MAKE_CERT = ROOT / "deploy" / "make-cert.sh"
CLUSTER_SETUP = ROOT / "deploy" / "couchdb-cluster-setup.sh"
ADMIN, PASSWORD = "admin", "0123456789abcdef"


def make_cert(cert_dir: Path, hostname: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CERT_DIR": str(cert_dir), "CERT_HOSTNAME": hostname}
    return subprocess.run(
        ["sh", str(MAKE_CERT)], env=env, capture_output=True, text=True, timeout=60
    )


def _san(cert_path: Path) -> list[Any]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return list(extension.value)


def test_make_cert_makes_a_certificate_once_and_then_keeps_it(tmp_path: Path) -> None:
    first = make_cert(tmp_path, "sync.example.org")
    assert first.returncode == 0, first.stderr
    crt, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    assert _san(crt) == [x509.DNSName("sync.example.org")]
    assert key.stat().st_mode & 0o777 == 0o600
    made = crt.read_bytes(), key.read_bytes()
    again = make_cert(tmp_path, "other.example.org")
    assert again.returncode == 0, again.stderr
    assert "keeping the certificate" in again.stdout
    assert (crt.read_bytes(), key.read_bytes()) == made
    assert not list(tmp_path.glob("*.new"))


def test_make_cert_names_an_address_as_an_ip_and_refuses_nonsense(tmp_path: Path) -> None:
    for address in ("192.0.2.7", "2001:db8::7"):
        folder = tmp_path / address.replace(":", "_")
        result = make_cert(folder, address)
        assert result.returncode == 0, result.stderr
        assert _san(folder / "tls.crt") == [x509.IPAddress(ipaddress.ip_address(address))]
    bad = make_cert(tmp_path / "bad", "sync example;org")
    assert bad.returncode == 2
    assert "neither a host name nor an address" in bad.stderr
    assert not (tmp_path / "bad" / "tls.key").exists()


def test_nginx_accepts_the_made_certificate_with_deploy_nginx_conf(tmp_path: Path) -> None:
    try:
        nginx_binary()
    except ProxyError as exc:
        pytest.fail(str(exc))
    assert make_cert(tmp_path / "certs", "localhost").returncode == 0
    proxy = Proxy(
        tmp_path / "nginx",
        ("127.0.0.1:1", "127.0.0.1:2"),
        tmp_path / "certs" / "tls.crt",
        tmp_path / "certs" / "tls.key",
    )
    proxy.workdir.mkdir()
    proxy.write_config()
    proxy.check()  # nginx -t: parses the file and loads the certificate and key


@dataclass
class Coordinator:
    """CouchDB's cluster set-up as the first node answers it; every POST body recorded."""

    nodes_that_join: set[str]
    state: str = "cluster_disabled"
    members: list[str] = field(default_factory=lambda: ["couchdb@127.0.0.1"])
    posted: list[dict[str, Any]] = field(default_factory=list)

    def _authorized(self, request: web.Request) -> bool:
        token = base64.b64encode(f"{ADMIN}:{PASSWORD}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {token}"

    @web.middleware
    async def auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not self._authorized(request):
            body = {"error": "unauthorized", "reason": "Name or password is incorrect."}
            return web.json_response(body, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def get_setup(self, _: web.Request) -> web.Response:
        return web.json_response({"state": self.state})

    async def post_setup(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.posted.append(body)
        action = body["action"]
        if action == "enable_cluster" and "remote_node" not in body:
            self.state = "cluster_enabled"
        elif action == "add_node" and body["host"] in self.nodes_that_join:
            self.members.append(f"couchdb@{body['host']}")
        elif action == "finish_cluster":
            if self.state == "cluster_finished":
                return web.json_response({"error": "bad_request"}, status=400)
            self.state = "cluster_finished"
        return web.json_response({"ok": True}, status=201)

    async def membership(self, _: web.Request) -> web.Response:
        body = {"all_nodes": self.members, "cluster_nodes": self.members}
        return web.Response(text=json.dumps(body, separators=(",", ":")) + "\n")


@pytest.fixture
async def coordinator() -> AsyncIterator[tuple[Coordinator, int]]:
    fake = Coordinator(nodes_that_join={"couchdb-2", "couchdb-3"})
    app = web.Application(middlewares=[fake.auth])
    app.router.add_get("/_cluster_setup", fake.get_setup)
    app.router.add_post("/_cluster_setup", fake.post_setup)
    app.router.add_get("/_membership", fake.membership)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield fake, port
    finally:
        await runner.cleanup()


async def run_setup(port: int, password: str = PASSWORD) -> tuple[int, str, str]:
    if shutil.which("curl") is None:
        pytest.fail("curl is needed: apt-get install -y curl")
    env = {
        **os.environ,
        "COUCHDB_NODES": "127.0.0.1 couchdb-2 couchdb-3",
        "COUCHDB_USER": ADMIN,
        "COUCHDB_PASSWORD": password,
        "COUCHDB_PORT": str(port),
    }
    process = await asyncio.create_subprocess_exec(
        "sh",
        str(CLUSTER_SETUP),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cluster_setup_joins_every_node_then_finishes(
    coordinator: tuple[Coordinator, int],
) -> None:
    fake, port = coordinator
    code, out, err = await run_setup(port)
    assert code == 0, err
    credentials = {"username": ADMIN, "password": PASSWORD}
    enable = {"action": "enable_cluster", "bind_address": "0.0.0.0", **credentials}
    expected: list[dict[str, Any]] = [{**enable, "node_count": "3"}]
    for node in ("couchdb-2", "couchdb-3"):
        expected.append(
            {
                **enable,
                "port": port,
                "node_count": "3",
                "remote_node": node,
                "remote_current_user": ADMIN,
                "remote_current_password": PASSWORD,
            }
        )
        expected.append({"action": "add_node", "host": node, "port": port, **credentials})
    expected.append({"action": "finish_cluster"})
    assert fake.posted == expected
    assert fake.state == "cluster_finished"
    assert "cluster of 3 nodes ready" in out


async def test_cluster_setup_run_again_changes_nothing(
    coordinator: tuple[Coordinator, int],
) -> None:
    fake, port = coordinator
    assert (await run_setup(port))[0] == 0
    before = list(fake.posted)
    code, out, err = await run_setup(port)
    assert code == 0, err
    assert fake.posted == before
    assert "set up before" in out


async def test_cluster_setup_fails_when_a_node_did_not_join(
    coordinator: tuple[Coordinator, int],
) -> None:
    fake, port = coordinator
    fake.nodes_that_join.discard("couchdb-3")
    code, _, err = await run_setup(port)
    assert code == 1
    assert "not cluster members: couchdb-3" in err


async def test_cluster_setup_fails_on_a_wrong_password_or_a_quote_in_it(
    coordinator: tuple[Coordinator, int],
) -> None:
    fake, port = coordinator
    code, _, err = await run_setup(port, password="wrong")
    assert code != 0
    assert "401" in err
    code, _, err = await run_setup(port, password='pass"word')
    assert code == 2
    assert "without" in err
    assert fake.posted == []
