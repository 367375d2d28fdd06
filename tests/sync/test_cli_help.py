"""``fieldsync --help``, and every command's: plain text that says what each thing does.

Every command, at every depth, is found by walking the parser: a command added
later is checked without anyone remembering to list it here.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync import cli
from sync.keys import MASTER_KEY_ENV, KeyRing, key_from_file
from sync.scopes import Role
from sync.store.schema import connections, db_path

MARKUP = ("``", ":mod:", ":func:", ":class:", ":meth:", ":attr:", ":data:", ":ref:")


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """The top-level parser, every command group and every command in them."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, (*path, name))


PARSERS = dict(_parsers(cli.build_parser()))
IDS = [" ".join(path) or "fieldsync" for path in PARSERS]


def _help(capsys: pytest.CaptureFixture[str], path: tuple[str, ...]) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*path, "--help"])
    out, err = capsys.readouterr()
    assert (exit_.value.code, err) == (0, "")
    return out


def _arguments(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """Every option and positional but -h; a group's commands stand for its sub-parsers."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            yield from action._choices_actions
        else:
            yield action


def _name(action: argparse.Action) -> str:
    return "/".join(action.option_strings) or str(action.metavar or action.dest)


def test_the_walk_reaches_every_depth() -> None:
    assert {(), ("device",), ("device", "enrol-code"), ("keys", "list"), ("sms", "status")} <= set(
        PARSERS
    )
    assert len(PARSERS) >= 30


@pytest.mark.parametrize("path", PARSERS, ids=IDS)
def test_help_is_plain_text(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, path)
    assert [mark for mark in MARKUP if mark in text] == []
    assert re.search(r":[a-z]+:`", text) is None  # no reST role of any kind
    description = PARSERS[path].description
    assert description and description.strip(), "a command says what it does"


@pytest.mark.parametrize("path", PARSERS, ids=IDS)
def test_every_argument_says_what_it_does(path: tuple[str, ...]) -> None:
    silent = [_name(a) for a in _arguments(PARSERS[path]) if not (a.help or "").strip()]
    assert silent == []


@pytest.mark.parametrize("path", PARSERS, ids=IDS)
def test_every_choice_is_listed_in_the_help(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    text = " ".join(_help(capsys, path).split())  # argparse wraps long help lines
    for action in _arguments(PARSERS[path]):
        if action.choices is None or isinstance(action.choices, dict):
            continue
        missing = [str(c) for c in action.choices if not re.search(rf"\b{re.escape(c)}\b", text)]
        assert missing == [], f"{_name(action)} does not list {missing}"


def test_roles_are_choices() -> None:
    [role] = [a for a in PARSERS[("user", "add")]._actions if "--role" in a.option_strings]
    assert list(role.choices or ()) == [r.value for r in Role]


def test_the_top_level_says_where_to_start(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, ())
    assert "fieldsync init" in text and "--data-dir" in text and "./data" in text
    for group in ("place", "user", "keys", "audit", "patient-id", "device", "sms"):
        assert re.search(rf"^\s+{group}\b", text, re.MULTILINE), group


# -- keys list: a table with a header ---------------------------------------------------
def test_keys_list_has_a_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("FIELDSYNC_DATA_DIR", MASTER_KEY_ENV, "FIELDSYNC_MASTER_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    data_dir = str(data)
    assert cli.main(["init", "--data-dir", data_dir]) == 0
    master = key_from_file(data / "master.key", create=False)
    for place in ("area-1", "a-much-longer-place-name", ""):
        KeyRing(master, connections(db_path(data))).current(place)
    capsys.readouterr()
    code = cli.main(["keys", "list", "--data-dir", data_dir])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].split() == ["PLACE", "VERSION", "CREATED", "MASTER", "KEY"]
    assert lines[0].startswith("PLACE  ")
    columns = [lines[0].index(word) for word in ("VERSION", "CREATED", "MASTER KEY")]
    rows = lines[1:-1]
    assert sorted(row.split()[0] for row in rows) == [
        "(shared)",
        "a-much-longer-place-name",
        "area-1",
    ]
    for row in rows:  # every value starts under its heading
        assert [row[c - 1] for c in columns] == [" "] * 3 and " " not in [row[c] for c in columns]
    assert lines[-1] == "3 data keys; 0 not opened by the configured master key"
