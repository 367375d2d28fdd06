"""Commands cannot quietly work on the wrong data: only ``init`` and ``serve`` create a data dir.

Every command that takes ``--data-dir`` is found by walking the parser, so a
command added later is checked without anyone remembering to list it here.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from sync import cli
from sync.keys import MASTER_KEY_ENV, KeyRing, key_from_file
from sync.store.schema import DB_FILE, connect, connections, db_path, initialise

FIELDSYNC = str(Path(sys.executable).parent / "fieldsync")
# restore makes a new data dir from a backup, and refuses one that holds anything
# (tests/sync/test_backup_archive.py, test_backup_drill.py).
CREATORS = {("init",), ("serve",), ("restore",)}


# -- every command, from the parser ---------------------------------------------------
def _leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield path, parser
    for group in groups:
        for name, child in group.choices.items():
            yield from _leaves(child, (*path, name))


def _takes_data_dir(parser: argparse.ArgumentParser) -> bool:
    return any("--data-dir" in action.option_strings for action in parser._actions)


def _example(action: argparse.Action) -> str:
    """A value the parser accepts; what it means does not matter (nothing may run)."""
    if action.choices:
        return str(next(iter(action.choices)))
    return "1" if action.type is int else "x"


def _argv(path: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    """The command with its required arguments filled in, ``--data-dir`` left out."""
    argv = list(path)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or "--data-dir" in action.option_strings:
            continue
        if not action.option_strings:
            argv.append(_example(action))
        elif action.required:
            argv += [action.option_strings[0], _example(action)]
    return argv


DATA_DIR_COMMANDS = {
    path: _argv(path, parser)
    for path, parser in _leaves(cli.build_parser())
    if _takes_data_dir(parser)
}
OPENERS = {path: argv for path, argv in DATA_DIR_COMMANDS.items() if path not in CREATORS}


def test_the_walk_finds_every_command_group() -> None:
    groups = {path[0] for path in DATA_DIR_COMMANDS}
    assert groups == {
        "init",
        "serve",
        "place",
        "user",
        "keys",
        "audit",
        "migrate",
        "patient-id",
        "device",
        "sms",
        "backup",
        "restore",
    }
    assert ("device", "mark") in OPENERS and ("keys", "rewrap") in OPENERS
    assert len(OPENERS) >= 21


def test_only_init_and_serve_create() -> None:
    parser = cli.build_parser()
    creators = {
        path
        for path, argv in DATA_DIR_COMMANDS.items()
        if getattr(parser.parse_args([*argv, "--data-dir", "d"]), "creates_data_dir", False)
    }
    assert creators == CREATORS


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, with no data dir or master key in the environment."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for name in ("FIELDSYNC_DATA_DIR", MASTER_KEY_ENV, "FIELDSYNC_MASTER_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FIELDSYNC_PASSWORD", "correct-horse-battery-7")
    return cwd


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _tree(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and directory under ``root`` (itself included): mode, mtime, content hash."""
    found = {}
    for path in [root, *sorted(root.rglob("*"))] if root.exists() else []:
        info = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        found[str(path.relative_to(root))] = (info.st_mode, info.st_mtime_ns, digest)
    return found


@pytest.mark.parametrize("argv", OPENERS.values(), ids=[" ".join(p) for p in OPENERS])
@pytest.mark.parametrize("there", ["missing", "empty"])
def test_a_command_refuses_a_dir_without_a_store(
    argv: list[str], there: str, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = elsewhere.parent / "typo"
    if there == "empty":
        target.mkdir()
    code, _, err = _run(capsys, *argv, "--data-dir", str(target))
    assert code != 0
    assert f"no fieldsync data dir at {target}" in err
    assert f"fieldsync init --data-dir {target}" in err
    assert (list(target.iterdir()) == []) if there == "empty" else not target.exists()
    assert list(elsewhere.iterdir()) == []  # nothing in the working directory either


def test_the_stolen_phone_from_another_folder(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's story: the default ``./data`` of the wrong folder is not made up."""
    code, out, err = _run(capsys, "device", "mark", "PH-002", "stolen")
    assert code == 1 and out == ""
    assert f"no fieldsync data dir at {elsewhere / 'data'}" in err
    assert list(elsewhere.iterdir()) == []


def test_the_data_dir_from_the_environment_is_checked_too(
    elsewhere: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIELDSYNC_DATA_DIR", str(elsewhere / "nowhere"))
    code, _, err = _run(capsys, "place", "add", "x")
    assert code == 1 and f"no fieldsync data dir at {elsewhere / 'nowhere'}" in err
    assert list(elsewhere.iterdir()) == []


def test_a_file_that_is_not_a_store_is_refused(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = elsewhere / "data"
    data.mkdir()
    (data / DB_FILE).write_bytes(b"not sqlite at all, just bytes long enough to be read" * 4)
    before = _tree(data)
    code, _, err = _run(capsys, "place", "list", "--data-dir", str(data))
    assert code == 1 and f"{data / DB_FILE} is not a fieldsync store" in err
    assert _tree(data) == before


# -- init -----------------------------------------------------------------------------
def test_init_creates_the_store_and_the_master_key(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = elsewhere / "site" / "data"
    code, out, err = _run(capsys, "init", "--data-dir", str(data))
    assert (code, err) == (0, "")
    assert f"fieldsync data dir ready at {data}" in out
    assert sorted(p.name for p in data.iterdir()) == [DB_FILE, "master.key"]
    assert (data / "master.key").stat().st_mode & 0o777 == 0o600
    with closing(connect(db_path(data), create=False)) as conn:
        assert conn.execute("SELECT count(*) FROM data_keys").fetchone() == (0,)


def test_a_second_init_changes_nothing(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = elsewhere / "data"
    assert _run(capsys, "init", "--data-dir", str(data))[0] == 0
    assert _run(capsys, "place", "add", "area", "--data-dir", str(data))[0] == 0
    before = _tree(data)
    code, out, _ = _run(capsys, "init", "--data-dir", str(data))
    assert code == 0
    assert out == f"fieldsync data dir at {data} is already initialised; nothing changed\n"
    assert _tree(data) == before


def test_commands_work_after_init(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(elsewhere / "data")]
    assert _run(capsys, "init", *data)[0] == 0
    assert _run(capsys, "place", "add", "area", *data) == (0, "place area added\n", "")
    assert _run(capsys, "place", "list", *data) == (0, "area\t-\tarea\n", "")
    assert _run(capsys, "device", "add", "PH-002", "--imei", "490154203237518", *data)[0] == 0
    code, out, _ = _run(capsys, "device", "mark", "PH-002", "stolen", *data)
    assert (code, out) == (0, "device PH-002 is now stolen\n")


def test_init_with_the_master_key_in_the_environment_writes_no_key_file(
    elsewhere: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, "A" * 43 + "=")
    code, out, _ = _run(capsys, "init", "--data-dir", "data")
    assert code == 0 and f"master key: from {MASTER_KEY_ENV}" in out
    assert [p.name for p in (elsewhere / "data").iterdir()] == [DB_FILE]
    assert _run(capsys, "place", "add", "area", "--data-dir", "data")[0] == 0


def test_init_completes_a_store_that_has_no_key_and_nothing_sealed(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = elsewhere / "data"
    initialise(db_path(data))
    store = _tree(data)[DB_FILE]
    code, out, _ = _run(capsys, "init", "--data-dir", str(data))
    assert code == 0 and out.startswith(
        f"fieldsync data dir ready at {data}; made: {data}/master.key"
    )
    assert _tree(data)[DB_FILE] == store


def test_init_on_a_file_says_so(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (elsewhere / "data").write_text("notes")
    code, _, err = _run(capsys, "init", "--data-dir", "data")
    assert code == 1 and f"cannot create the data dir at {elsewhere / 'data'}" in err
    assert [p.name for p in elsewhere.iterdir()] == ["data"]


# -- a missing master key where data keys exist ---------------------------------------
@pytest.fixture
def keyless(elsewhere: Path) -> Path:
    """A data dir whose store holds a data key and the audit chain key; master.key gone.

    Made with the store's own functions, not ``init``, so that these tests say
    the same thing of a build that has no ``init``.
    """
    data = elsewhere / "data"
    initialise(db_path(data))
    master = key_from_file(data / "master.key", create=True)
    KeyRing(master, connections(db_path(data))).current("area")
    assert cli.main(["place", "add", "area", "--data-dir", str(data)]) == 0  # the chain key
    (data / "master.key").unlink()
    return data


def _refused_for_the_key(err: str, data: Path) -> None:
    assert f"the master key file {data / 'master.key'} is missing" in err
    assert "holds 1 data key(s) and the audit chain key" in err
    assert "original master key" in err


# serve: below, as the real command; restore refuses any dir that holds a store at all.
KEY_CHECKED = [p for p in DATA_DIR_COMMANDS if p not in {("serve",), ("restore",)}]


@pytest.mark.parametrize(
    "argv", [DATA_DIR_COMMANDS[p] for p in KEY_CHECKED], ids=[" ".join(p) for p in KEY_CHECKED]
)
def test_a_missing_master_key_is_refused_before_anything_is_written(
    argv: list[str], keyless: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    before = _tree(keyless)
    code, _, err = _run(capsys, *argv, "--data-dir", str(keyless))
    assert code == 1
    _refused_for_the_key(err, keyless)
    assert _tree(keyless) == before


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_refuses_a_missing_master_key_before_writing(
    keyless: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real command: a new key used to be written, then the start failed saying why not."""
    before = _tree(keyless)
    port = str(_free_port())
    done = subprocess.run(
        [FIELDSYNC, "serve", "--data-dir", str(keyless), "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "FIELDSYNC_PASSWORD"},
    )
    assert done.returncode == 1
    _refused_for_the_key(done.stderr, keyless)
    assert _tree(keyless) == before


def test_the_real_command_refuses_a_typo(elsewhere: Path) -> None:
    done = subprocess.run(
        [FIELDSYNC, "place", "add", "x", "--data-dir", "./typo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert f"no fieldsync data dir at {elsewhere / 'typo'}" in done.stderr
    assert list(elsewhere.iterdir()) == []
