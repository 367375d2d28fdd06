"""The restore drill (issue 12, point 7), with the real commands and real servers.

A server runs on a data dir; a worker's enrolled phone writes documents and a
checkpoint.  ``fieldsync backup`` runs while that phone keeps writing; the archive
is restored with 3 of its 4 shares into a new data dir (2 shares and a tampered
archive are refused first, writing nothing), and a server started there gives the
same phone, with the same password and device token, the same documents at the
same revisions.  The phone's writes during the backup show the copy is of one
moment: the restored store holds exactly the writes made before some point.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image
from pyzbar import pyzbar
from shared_org import basic_auth

from sync import cli
from sync.store.schema import db_path

FIELDSYNC = str(Path(sys.executable).parent / "fieldsync")
PASSWORD = "correct-horse-battery-7"
IMEI = "490154203237518"
DB = "health"


def run(
    *argv: str, stdin: str = "", data_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    where = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return subprocess.run(
        [FIELDSYNC, *argv, *where],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**_clean_env(), "FIELDSYNC_PASSWORD": PASSWORD},
    )


def _clean_env() -> dict[str, str]:
    hidden = ("FIELDSYNC_MASTER_KEY", "FIELDSYNC_MASTER_KEY_FILE", "FIELDSYNC_DATA_DIR")
    return {k: v for k, v in os.environ.items() if k not in hidden}


def ok(*argv: str, stdin: str = "", data_dir: Path | None = None) -> str:
    done = run(*argv, stdin=stdin, data_dir=data_dir)
    assert done.returncode == 0, (argv, done.stdout, done.stderr)
    return done.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(data_dir: Path, log: Path) -> Iterator[str]:
    """``fieldsync serve`` on ``data_dir`` (a port of its own); its base URL."""
    port = _free_port()
    command = [FIELDSYNC, "serve", "--data-dir", str(data_dir), "--port", str(port)]
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=_clean_env(), stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, url, log)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise AssertionError(f"serve exited early:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/", timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise AssertionError(f"serve never answered:\n{log.read_text()}")


class Phone:
    """The worker's enrolled phone (HTTP Basic and its device token), or the admin."""

    def __init__(self, http: aiohttp.ClientSession, url: str, user: str, token: str = "") -> None:
        self.http, self.url, self.user, self.token = http, url, user, token

    def headers(self) -> dict[str, str]:
        return {"X-Device-Token": self.token} if self.token else {}

    def credentials(self) -> dict[str, str]:
        return {**basic_auth(self.user, PASSWORD), **self.headers()}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(
            method, self.url + path, json=body, headers=self.credentials()
        ) as answer:
            return answer.status, await answer.json(content_type=None)

    async def must(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = await self.call(method, path, body)
        assert status in (200, 201), (method, path, status, answer)
        return answer

    async def everything(self) -> dict[str, Any]:
        """What the phone syncs: every document's winning rev and body, changes, checkpoint."""
        changes = await self.must("GET", f"/{DB}/_changes?style=all_docs")
        listed = await self.must("GET", f"/{DB}/_all_docs?include_docs=true")
        checkpoint = await self.must("GET", f"/{DB}/_local/phone-checkpoint")
        return {
            "changes": sorted(
                (r["id"], [c["rev"] for c in r["changes"]]) for r in changes["results"]
            ),
            "docs": {row["id"]: row["doc"] for row in listed["rows"]},
            "checkpoint": checkpoint,
        }

    async def log_in(self) -> int:
        async with self.http.post(
            self.url + "/_session",
            json={"name": self.user, "password": PASSWORD},
            headers=self.headers(),
        ) as answer:
            return answer.status


@asynccontextmanager
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        yield http


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir with district-2 > area-8, an admin and ann (a CHW in area-8).

    Made in this process (the commands under test run as real processes)."""
    for name in ("FIELDSYNC_MASTER_KEY", "FIELDSYNC_MASTER_KEY_FILE", "FIELDSYNC_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FIELDSYNC_PASSWORD", PASSWORD)
    where = ["--data-dir", str(tmp_path / "data")]
    for argv in (
        ["init"],
        ["place", "add", "district-2"],
        ["place", "add", "area-8", "--parent", "district-2"],
        ["user", "add", "admin", "--role", "admin"],
        ["user", "add", "ann", "--role", "chw", "--place", "area-8"],
    ):
        assert cli.main([*argv, *where]) == 0, argv
    return tmp_path / "data"


async def enrol(admin: Phone, http: aiohttp.ClientSession) -> Phone:
    await admin.must("POST", "/api/v1/devices", {"serial": "PH-1", "imei": IMEI, "worker": "ann"})
    code = (await admin.must("POST", "/api/v1/devices/PH-1/enrolment-code"))["code"]
    ann = Phone(http, admin.url, "ann")
    token = await ann.must("POST", "/api/v1/devices/enroll", {"code": code, "serial": "PH-1"})
    return Phone(http, admin.url, "ann", token["device_token"])


async def keep_writing(phone: Phone, written: list[str], stop: asyncio.Event) -> None:
    """The phone writes one new visit after another until told to stop."""
    while not stop.is_set():
        doc_id = f"visit-{len(written):05d}"
        await phone.must("PUT", f"/{DB}/{doc_id}", {"place": "area-8", "n": len(written)})
        written.append(doc_id)


async def back_up_while_writing(
    phone: Phone, data: Path, out: Path, qr: Path
) -> tuple[list[str], int, subprocess.CompletedProcess[str]]:
    """Run ``fieldsync backup`` while ``phone`` writes: what it wrote, how much of it during."""
    written: list[str] = []
    stop = asyncio.Event()
    writer = asyncio.create_task(keep_writing(phone, written, stop))
    while len(written) < 5:
        await asyncio.sleep(0.01)
    before = len(written)
    done = await asyncio.to_thread(run, "backup", "--out", str(out), "--qr", str(qr), data_dir=data)
    during = len(written) - before
    stop.set()
    await writer
    return written, during, done


async def test_the_restore_drill(data: Path, tmp_path: Path) -> None:
    out, qr = tmp_path / "backup.fsb", tmp_path / "qr"
    async with session() as http:
        with serving(data, tmp_path / "serve.log") as url:
            admin = Phone(http, url, "admin")
            ann = await enrol(admin, http)
            await admin.must("PUT", f"/{DB}/settings", {"language": "sw"})
            rev = (await ann.must("PUT", f"/{DB}/patient-1", {"place": "area-8", "v": 1}))["rev"]
            await ann.must("PUT", f"/{DB}/patient-1", {"place": "area-8", "v": 2, "_rev": rev})
            await ann.must("PUT", f"/{DB}/_local/phone-checkpoint", {"last_seq": "42"})
            written, during, done = await back_up_while_writing(ann, data, out, qr)
            assert done.returncode == 0, done.stderr
            assert during > 0, "the phone wrote nothing while the backup ran"
            assert "pages" in done.stderr and "(100%)" in done.stderr  # progress
            before = await ann.everything()
        share_lines = done.stdout.splitlines()
        assert len(share_lines) == 4 and all(s.startswith("FSB1-") for s in share_lines)
        assert '"event": "backup_written"' in done.stderr  # logged, shares never
        assert not any(line[20:60] in done.stderr for line in share_lines)

        # Two shares, or a tampered archive: refused, and nothing written.
        restored = tmp_path / "restored"
        two = run("restore", str(out), stdin="\n".join(share_lines[:2]), data_dir=restored)
        assert two.returncode == 1 and "needs 3 of its 4" in two.stderr
        tampered = tmp_path / "tampered.fsb"
        raw = bytearray(out.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        tampered.write_bytes(bytes(raw))
        spoilt = run("restore", str(tampered), stdin="\n".join(share_lines[1:]), data_dir=restored)
        assert spoilt.returncode == 1 and "altered" in spoilt.stderr
        assert not restored.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".restored")]

        # Shares 2, 3 and 4 (the first custodian is away), one from its QR code.
        scanned = pyzbar.decode(Image.open(next(qr.glob("*-share-4-of-4.png"))))[0].data.decode()
        stdin = f"{share_lines[1]}\n\n{share_lines[2].lower()}\n{scanned}\n"
        said = run("restore", str(out), stdin=stdin, data_dir=restored)
        assert said.returncode == 0, said.stderr
        assert '"event": "backup_restored"' in said.stderr
        assert not any(line[20:60] in said.stderr + said.stdout for line in share_lines)

        with serving(restored, tmp_path / "restored.log") as url:
            ann = Phone(http, url, "ann", ann.token)
            assert await ann.log_in() == 200
            after = await ann.everything()
    assert after["docs"]["patient-1"]["v"] == 2 and "settings" in after["docs"]
    _same_moment(before, after, written)
    assert ok("audit", "verify", data_dir=restored).startswith("audit chain ok")


def _same_moment(before: dict[str, Any], after: dict[str, Any], written: list[str]) -> None:
    """The restore is the store at one moment of the phone's writing: all the visits
    written before it, none after, and everything else exactly as it was."""
    visits = sorted(d for d in after["docs"] if d.startswith("visit-"))
    assert visits == written[: len(visits)] and 5 <= len(visits) < len(written)
    late = set(written[len(visits) :])
    assert {k: v for k, v in before["docs"].items() if k not in late} == after["docs"]
    assert [c for c in before["changes"] if c[0] not in late] == after["changes"]
    assert after["checkpoint"] == before["checkpoint"]


def test_the_restored_store_passes_its_integrity_check_and_keeps_its_key(
    data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b.fsb"
    shares = ok("backup", "--out", str(out), "--shares", "5", "--threshold", "2", data_dir=data)
    lines = shares.splitlines()
    assert len(lines) == 5 and all("-2OF5-" in line for line in lines)
    ok("restore", str(out), "--share", lines[4], "--share", lines[0], data_dir=tmp_path / "r")
    with closing(sqlite3.connect(db_path(tmp_path / "r"))) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert (tmp_path / "r" / "master.key").read_bytes() == (data / "master.key").read_bytes()
    assert "ann" in ok("user", "list", data_dir=tmp_path / "r")


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--threshold", "1"], "one person open the backup alone"),
        (["--threshold", "5"], "more than the 4 shares made"),
        (["--shares", "300"], "at most 255 shares"),
    ],
)
def test_a_backup_that_could_not_be_restored_safely_is_refused(
    data: Path, tmp_path: Path, options: list[str], says: str
) -> None:
    done = run("backup", "--out", str(tmp_path / "b.fsb"), *options, data_dir=data)
    assert done.returncode == 1 and says in done.stderr and done.stdout == ""
    assert not (tmp_path / "b.fsb").exists()


def test_restore_refuses_a_data_dir_with_a_store_before_asking_for_shares(
    data: Path, tmp_path: Path
) -> None:
    lines = ok("backup", "--out", str(tmp_path / "b.fsb"), data_dir=data).splitlines()
    before = db_path(data).read_bytes()
    done = run("restore", str(tmp_path / "b.fsb"), stdin="\n".join(lines), data_dir=data)
    assert done.returncode == 1 and "already holds a fieldsync store" in done.stderr
    assert db_path(data).read_bytes() == before


def test_the_share_files_are_private_and_pipe_into_restore(data: Path, tmp_path: Path) -> None:
    qr = tmp_path / "qr"
    printed = ok("backup", "--out", str(tmp_path / "b.fsb"), "--qr", str(qr), data_dir=data)
    files = sorted(qr.iterdir())
    assert len(files) == 8 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    texts = [f.read_text() for f in files if f.suffix == ".txt"]
    assert [t.splitlines()[1] for t in texts] == printed.splitlines()
    assert texts[2].startswith("# fieldsync backup share 3 of 4 (any 3 open backup ")
    for png, line in zip(sorted(qr.glob("*.png")), printed.splitlines(), strict=True):
        assert pyzbar.decode(Image.open(png))[0].data.decode() == line
    ok("restore", str(tmp_path / "b.fsb"), stdin="".join(texts[1:]), data_dir=tmp_path / "r")
    assert "ann" in ok("user", "list", data_dir=tmp_path / "r")
    txt = [str(f) for f in files if f.suffix == ".txt"]
    given = ["--share", txt[0], "--share", txt[3], "--share", printed.splitlines()[1]]
    ok("restore", str(tmp_path / "b.fsb"), *given, data_dir=tmp_path / "r2")
    typo = texts[1].replace("-3OF4-2-", "-3OF4-3-")
    refused = run(
        "restore", str(tmp_path / "b.fsb"), stdin=texts[0] + typo, data_dir=tmp_path / "r3"
    )
    assert (
        refused.returncode == 1
        and "line 4 of standard input has a typing mistake" in refused.stderr
    )
