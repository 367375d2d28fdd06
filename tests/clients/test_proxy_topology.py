"""docker-compose.yml's topology without Docker: PouchDB -> TLS proxy -> two fieldsync -> CouchDB.

Issue 11, point 8.  The compose file runs a CouchDB cluster, two fieldsync
instances and nginx in front with deploy/nginx.conf.  Here the same pieces run as
plain processes on loopback: pouchdb-server (the CouchDB-API server of CI, or
``FIELDSYNC_TEST_COUCHDB_URL``), two ``fieldsync serve`` on free ports with one
CouchDB URL, and Debian's nginx running deploy/nginx.conf itself, rendered the way
the nginx image renders it (tests/nginx_proxy.py), with a certificate made here
by a test CA that node is told to trust (``NODE_EXTRA_CA_CERTS``).

A phone pushes documents (one with an attachment) through
``https://127.0.0.1:PORT``, a second phone pulls them back, and both instances'
request logs show replication requests: the proxy spread the sync over both.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import shutil
import ssl
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from nginx_proxy import Proxy, ProxyError, nginx_binary
from pouch import PouchDriver
from realserver import DB, PASSWORD, ServerProcess, free_port

from sync.keys import load_master_key

DAY = dt.timedelta(days=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate it signed for 127.0.0.1 and localhost:
    ``(ca.pem, server.pem, server.key)``."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("fieldsync test CA"))
        .issuer_name(_name("fieldsync test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + DAY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem_key(key))
    paths[2].chmod(0o600)
    return paths


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[Path, Path, Path]:
    folder = tmp_path / "tls"
    folder.mkdir()
    return make_certificates(folder)


@pytest.fixture
def instances(
    tmp_path: Path, org_data: Path, couchdb_url: str, couch_prefix: str
) -> Iterator[list[ServerProcess]]:
    """Two ``fieldsync serve`` on one CouchDB, trusting the proxy on 127.0.0.1.

    Until users and places live in CouchDB, both data dirs are copies of one
    template (with one master key); the data keys live in CouchDB.
    """
    template = tmp_path / "template"
    shutil.copytree(org_data, template)
    load_master_key(template / "master.key", create=True)
    env = {
        "FIELDSYNC_COUCHDB_URL": couchdb_url,
        "FIELDSYNC_COUCHDB_PREFIX": couch_prefix,
        "FIELDSYNC_REQUIRE_ENROLMENT": "0",
        "FIELDSYNC_TRUSTED_PROXIES": "127.0.0.1",  # the compose file: the proxy's address
        "FIELDSYNC_LOG_FORMAT": "json",
    }
    with ExitStack() as stack:
        servers = []
        for number in (1, 2):
            data = tmp_path / f"data{number}"
            shutil.copytree(template, data)
            server = ServerProcess(data, free_port(), tmp_path / f"fieldsync{number}.log", env)
            server.start()
            stack.callback(server.stop)
            servers.append(server)
        yield servers


@pytest.fixture
def proxy(
    tmp_path: Path, instances: list[ServerProcess], certificates: tuple[Path, Path, Path]
) -> Iterator[Proxy]:
    try:
        nginx_binary()
    except ProxyError as exc:
        pytest.fail(str(exc))
    _, cert, key = certificates
    upstreams = (f"127.0.0.1:{instances[0].port}", f"127.0.0.1:{instances[1].port}")
    running = Proxy(tmp_path / "nginx", upstreams, cert, key)
    running.workdir.mkdir()
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _remote(proxy: Proxy, user: str) -> dict[str, str]:
    return {"url": f"{proxy.url}/{DB}", "username": user, "password": PASSWORD}


def _requests_by_user(server: ServerProcess) -> dict[str, int]:
    """How many requests of each signed-in user this instance's log shows."""
    counts: dict[str, int] = {}
    for line in server.log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "request" and "user" in entry:
            counts[entry["user"]] = counts.get(entry["user"], 0) + 1
    return counts


async def test_a_phone_syncs_through_the_tls_proxy_onto_both_instances(
    proxy: Proxy,
    instances: list[ServerProcess],
    certificates: tuple[Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca, _, _ = certificates
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", str(ca))  # read by node when it starts
    photo = bytes(range(256)) * 800  # 200 KB: a body well past nginx's buffers
    docs = [{"_id": f"visit-{n:02d}", "place": "area-a1", "n": n} for n in range(30)]
    docs[0]["_attachments"] = {
        "photo.jpg": {"content_type": "image/jpeg", "data": base64.b64encode(photo).decode()}
    }
    pouch = await PouchDriver.start()
    try:
        await pouch.call("bulk_docs", db="alice-phone", docs=docs)
        pushed = await pouch.call(
            "replicate", source="alice-phone", target=_remote(proxy, "alice"), timeout=120
        )
        assert pushed["status"] == "complete", pushed
        assert (pushed["docs_written"], pushed["doc_write_failures"]) == (30, 0), pushed
        pulled = await pouch.call(
            "replicate", source=_remote(proxy, "sam"), target="sam-phone", timeout=120
        )
        assert pulled["status"] == "complete", pulled
        rows = (await pouch.call("all_docs", db="sam-phone"))["rows"]
        assert {row["id"] for row in rows} >= {doc["_id"] for doc in docs}
        got = await pouch.call("get_attachment", db="sam-phone", docid="visit-00", name="photo.jpg")
    finally:
        await pouch.aclose()
    assert base64.b64decode(got) == photo
    seen = [_requests_by_user(server) for server in instances]
    assert all(counts.get("alice") for counts in seen), f"alice's push per instance: {seen}"
    assert all(counts.get("sam") for counts in seen), f"sam's pull per instance: {seen}"


async def test_the_proxy_tells_fieldsync_the_phone_spoke_https(
    proxy: Proxy, instances: list[ServerProcess], certificates: tuple[Path, Path, Path]
) -> None:
    """X-Forwarded-Proto from the trusted proxy: HSTS and a Secure session cookie.

    Straight to an instance over plain HTTP neither is sent, so both come from the
    proxy's header being passed and believed.
    """
    ca, _, _ = certificates
    context = ssl.create_default_context(cafile=str(ca))
    login = {"name": "alice", "password": PASSWORD}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{proxy.url}/_session", json=login, ssl=context) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
            assert "secure" in resp.headers["Set-Cookie"].lower()
        async with session.get(f"{proxy.url}/_proxy_up", ssl=context) as resp:
            assert (resp.status, await resp.text()) == (200, "ok\n")
        async with session.post(f"{instances[0].url}/_session", json=login) as resp:
            assert resp.status == 200, await resp.text()
            assert "Strict-Transport-Security" not in resp.headers
            assert "secure" not in resp.headers["Set-Cookie"].lower()
