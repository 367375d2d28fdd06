"""`fieldsync patient-id check`, run in-process through argparse."""

from __future__ import annotations

import argparse

import pytest

from barcode.cli import register


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fieldsync")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


@pytest.mark.parametrize(
    "argv",
    [
        ["patient-id", "check", "1003EY"],
        ["patient-id", "check", "1003-ey"],
        ["patient-id", "check", "24687", "--scheme", "luhn10"],
        ["patient-id", "check", "--scheme", "verhoeff", "2363"],
    ],
)
def test_valid_id_prints_valid_and_exits_0(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv) == 0
    assert capsys.readouterr().out == "valid\n"


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["patient-id", "check", "1003EX"], "check digit is wrong"),
        (
            ["patient-id", "check", "10B3EY"],
            "character 'B' at position 3 is not allowed in a luhn30 ID",
        ),
        (
            ["patient-id", "check", "1003EY", "--scheme", "luhn10"],
            "character 'E' at position 5 is not allowed in a luhn10 ID",
        ),
        (["patient-id", "check", "2"], "ID must be 2 to 32 characters"),
        (["patient-id", "check", " "], "ID is empty"),
    ],
)
def test_invalid_id_prints_reason_and_exits_1(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv) == 1
    assert capsys.readouterr().out == reason + "\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["patient-id"],
        ["patient-id", "check"],
        ["patient-id", "check", "1003EY", "--scheme", "mod97"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(argv)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_scheme_defaults_to_luhn30() -> None:
    parser = argparse.ArgumentParser(prog="fieldsync")
    register(parser.add_subparsers(dest="command", required=True))
    assert parser.parse_args(["patient-id", "check", "X"]).scheme == "luhn30"
