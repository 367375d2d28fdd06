"""`fieldsync patient-id new | retire | card`, run in-process through argparse."""

from __future__ import annotations

import argparse
import io
import sqlite3
from contextlib import closing, redirect_stdout
from pathlib import Path

import pytest
from couchdb_server import couch_request
from couchdb_server import db_path as couch_path
from PIL import Image
from pyzbar.pyzbar import decode

from barcode import embedded, ports
from barcode.checkdigit import validate
from barcode.cli import register
from sync import cli
from sync.store.schema import connect, db_path


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fieldsync")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def initialised(data_dir: Path) -> str:
    """A data dir made the way an implementer makes one (``fieldsync init``)."""
    with redirect_stdout(io.StringIO()):
        assert cli.main(["init", "--data-dir", str(data_dir)]) == 0
    return str(data_dir)


def printed(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.split()


def test_new_allocates_and_prints_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = initialised(tmp_path / "data")
    assert run(["patient-id", "new", "--data-dir", data]) == 0
    assert printed(capsys) == ["10000X"]
    assert run(["patient-id", "new", "--count", "3", "--data-dir", data]) == 0
    ids = printed(capsys)
    assert ids == ["10001V", "10002T", "10003P"]
    assert all(validate(i).valid for i in ids)
    with closing(connect(db_path(tmp_path / "data"))) as conn:
        assert embedded.status_of(conn, "10002T") is ports.Status.ISSUED


def test_new_honours_the_data_dir_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIELDSYNC_DATA_DIR", str(tmp_path / "env"))
    assert cli.main(["init"]) == 0
    capsys.readouterr()
    assert run(["patient-id", "new"]) == 0
    assert (tmp_path / "env" / "fieldsync.sqlite3").exists()


def test_new_with_a_sheet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = tmp_path / "cards.pdf"
    data = initialised(tmp_path / "data")
    assert (
        run(["patient-id", "new", "--count", "12", "--sheet", str(sheet), "--data-dir", data]) == 0
    )
    assert len(printed(capsys)) == 12
    assert sheet.read_bytes().startswith(b"%PDF-")


@pytest.mark.parametrize("count", ["0", "1001"])
def test_new_refuses_silly_counts(
    tmp_path: Path, count: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = initialised(tmp_path / "data")
    assert run(["patient-id", "new", "--count", count, "--data-dir", data]) == 1
    assert "between 1 and 1000" in capsys.readouterr().out


def test_retire_then_new_skips_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = initialised(tmp_path / "data")
    assert run(["patient-id", "retire", "10000X", "--reason", "misprint", "--data-dir", data]) == 0
    assert capsys.readouterr().out == "10000X retired\n"
    assert run(["patient-id", "new", "--data-dir", data]) == 0
    assert printed(capsys) == ["10001V"]
    assert run(["patient-id", "retire", "10000Y", "--data-dir", data]) == 1
    assert "check digit is wrong" in capsys.readouterr().out
    with closing(sqlite3.connect(db_path(tmp_path / "data"))) as conn:
        row = conn.execute("SELECT retired_reason FROM patient_ids WHERE id='10000X'").fetchone()
    assert row == ("misprint",)


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_card(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"card{suffix}"
    assert run(["patient-id", "card", "10000x", "--name", "Jane Doe", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    if suffix == ".png":
        assert {s.data for s in decode(Image.open(out))} == {b"10000X"}


def test_card_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["patient-id", "card", "10000Y", "--out", str(tmp_path / "c.png")]) == 1
    assert run(["patient-id", "card", "10000X", "--out", str(tmp_path / "c.gif")]) == 1


def test_with_couchdb_configured_the_cli_allocates_from_couchdb(
    couchdb_url: str,
    couch_prefix: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CLI and every server instance allocate from one place: CouchDB, when configured."""
    monkeypatch.setenv("FIELDSYNC_COUCHDB_URL", couchdb_url)
    monkeypatch.setenv("FIELDSYNC_COUCHDB_PREFIX", couch_prefix)
    assert run(["patient-id", "retire", "10001V", "--reason", "misprint"]) == 0
    assert capsys.readouterr().out == "10001V retired\n"
    assert run(["patient-id", "new", "--count", "2"]) == 0
    first = printed(capsys)
    assert run(["patient-id", "new", "--count", "2"]) == 0  # a new run: a new claimed range
    second = printed(capsys)
    assert first == ["10000X", "10002T"]  # 10001V was retired: skipped
    assert len(set(first + second)) == 4
    status, doc = couch_request(
        couchdb_url, "GET", couch_path(couch_prefix + "patient_ids") + "/10001V"
    )
    assert (status, doc["status"], doc["retired_reason"]) == (200, "retired", "misprint")
