"""``fieldsync device ...``: what an implementer types, on the same SQLite file as the server."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from device_helpers import IMEIS, Client, Devices

from sync.cli import main


def run(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> tuple[int, str, str]:
    """Exit code, standard output, and standard error less the command's info log lines."""
    code = main(["device", *args, "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    return code, out, _not_logged(err)


def _not_logged(err: str) -> str:
    """``err`` without the JSON log lines of level info or debug (what an operator's log
    collector takes); messages meant for the person typing, and warnings, stay."""
    kept = []
    for line in err.splitlines(keepends=True):
        try:
            event = json.loads(line)
        except ValueError:
            kept.append(line)
            continue
        if not (isinstance(event, dict) and event.get("level") in ("debug", "info")):
            kept.append(line)
    return "".join(kept)


def test_the_whole_life_of_a_phone(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    steps = [
        (
            [
                "add",
                "r58m123",
                "--imei",
                "49-015420-323751-8",
                "--model",
                "Galaxy A03",
                "--phone",
                "+254 712 345 678",
            ],
            "device R58M123 added (in stock)",
        ),
        (["assign", "R58M123", "alice", "--reason", "new CHW"], "device R58M123 assigned to alice"),
        (["mark", "R58M123", "lost", "--reason", "bus"], "device R58M123 is now lost"),
        (["mark", "R58M123", "found"], "device R58M123 is now in_stock"),
        (["mark", "R58M123", "retired"], "device R58M123 is now retired"),
    ]
    for args, said in steps:
        assert run(capsys, data_dir, *args) == (0, said + "\n", "")
    code, out, _ = run(capsys, data_dir, "list", "--format", "json")
    [device] = json.loads(out)
    assert (code, device["serial"], device["imei"], device["phone"], device["status"]) == (
        0,
        "R58M123",
        "490154203237518",
        "+254712345678",
        "retired",
    )


def test_listing_formats(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    run(capsys, data_dir, "add", "SN1", "--imei", IMEIS[0])
    run(capsys, data_dir, "add", "SN2", "--imei", IMEIS[1], "--model", "itel A56")
    run(capsys, data_dir, "assign", "SN2", "bob")
    _, table, _ = run(capsys, data_dir, "list")
    assert table.splitlines() == [
        "SERIAL  STATUS    WORKER  PHONE  MODEL     LAST SYNC",
        "SN1     in_stock  -       -      -         -",
        "SN2     assigned  bob     -      itel A56  -",
    ]
    _, text, _ = run(capsys, data_dir, "list", "--status", "assigned", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["serial"], r["worker"], r["places"]) for r in rows] == [("SN2", "bob", "area-b1")]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["add", "SN9", "--imei", "490154203237519"], "wrong check digit"),
        (["add", "SN9", "--imei", IMEIS[2], "--phone", "0712345678"], "must be international"),
        (["assign", "SN9", "alice"], "no device with serial 'SN9'"),
        (["assign", "SN1", "nobody"], "unknown worker 'nobody'"),
        (["mark", "SN1", "assigned"], "assign it to a worker"),
        (["enrol-code", "SN1"], "device SN1 is in_stock: assign it"),
    ],
)
def test_mistakes_exit_1_with_the_reason(
    capsys: pytest.CaptureFixture[str], data_dir: Path, args: list[str], complaint: str
) -> None:
    run(capsys, data_dir, "add", "SN1", "--imei", IMEIS[0])
    code, out, err = run(capsys, data_dir, *args)
    assert (code, out) == (1, "")
    assert err.startswith("fieldsync: ") and complaint in err


async def test_the_cli_works_on_a_running_server(
    capsys: pytest.CaptureFixture[str], data_dir: Path, client: Client, devices: Devices
) -> None:
    """Codes from the CLI enrol; marking lost there refuses the very next request."""
    run(capsys, data_dir, "add", "SN1", "--imei", IMEIS[0])
    run(capsys, data_dir, "assign", "SN1", "alice")
    code, out, err = run(capsys, data_dir, "enrol-code", "SN1", "--qr")
    assert code == 0 and "for alice on device SN1; single use" in err
    enrolment_code = out.splitlines()[0]
    status, body = await devices.call(
        "POST", "/api/v1/devices/enroll", "alice", {"code": enrolment_code, "serial": "SN1"}
    )
    assert status == 201
    token = body["device_token"]
    assert (await devices.call("GET", "/health/_changes", "alice", token=token))[0] == 200
    run(capsys, data_dir, "mark", "SN1", "stolen")
    status, body = await devices.in_session("GET", "/health/_changes", "alice", token=token)
    assert (status, body["reason"]) == (401, "Device SN1 is revoked: it was reported stolen.")


def test_an_unknown_status_is_refused_naming_the_valid_ones(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    with pytest.raises(SystemExit) as exit_:
        run(capsys, data_dir, "mark", "SN1", "misplaced")
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "invalid choice: 'misplaced'" in err and "'lost'" in err and "'found'" in err


def test_a_status_is_read_as_people_type_it(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    run(capsys, data_dir, "add", "SN1", "--imei", IMEIS[0])
    assert run(capsys, data_dir, "mark", "SN1", "In-Repair") == (
        0,
        "device SN1 is now in_repair\n",
        "",
    )


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        (
            "lost",
            "device SN1 is lost: mark it found (fieldsync device mark SN1 found), then assign "
            "it to a worker (fieldsync device assign SN1 WORKER), before issuing an enrolment code",
        ),
        (
            "stolen",
            "device SN1 is stolen: mark it recovered (fieldsync device mark SN1 recovered), then "
            "assign it to a worker (fieldsync device assign SN1 WORKER), before issuing an "
            "enrolment code",
        ),
        (
            "in_repair",
            "device SN1 is in_repair: assign it to a worker (fieldsync device assign SN1 WORKER), "
            "before issuing an enrolment code",
        ),
        ("retired", "device SN1 is retired: it can never be enrolled again"),
    ],
)
def test_enrol_code_on_a_phone_no_one_holds_says_what_to_type(
    capsys: pytest.CaptureFixture[str], data_dir: Path, status: str, advice: str
) -> None:
    run(capsys, data_dir, "add", "SN1", "--imei", IMEIS[0])
    run(capsys, data_dir, "assign", "SN1", "alice")
    run(capsys, data_dir, "mark", "SN1", status)
    assert run(capsys, data_dir, "enrol-code", "SN1") == (1, "", f"fieldsync: {advice}\n")


def test_the_commands_a_lost_phone_is_told_to_run_work(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    run(capsys, data_dir, "add", "SN1", "--imei", IMEIS[0])
    run(capsys, data_dir, "assign", "SN1", "alice")
    run(capsys, data_dir, "mark", "SN1", "lost")
    _, _, err = run(capsys, data_dir, "enrol-code", "SN1")
    for command in re.findall(r"\(fieldsync device ([^)]*)\)", err):
        argv = command.replace("WORKER", "alice").split()
        assert run(capsys, data_dir, *argv)[0] == 0
    code, out, _ = run(capsys, data_dir, "enrol-code", "SN1")
    assert code == 0 and out.strip()
