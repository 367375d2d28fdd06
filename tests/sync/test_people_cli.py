"""``fieldsync user disable|enable|remove`` and ``place rename|move|retire``, on the data dir.

The commands work on the same file as a running server: a change made by the
CLI counts from the next request the server answers.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest
from audit_disk import on_disk
from sync_fixtures import Api, Client, as_user

from sync import cli
from sync.config import Config


@pytest.fixture(autouse=True)
def master_key(data_dir: Path) -> None:
    """The seeded data dir, completed as ``fieldsync init`` completes one (its master key)."""
    assert cli.main(["init", "--data-dir", str(data_dir)]) == 0


def run(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> tuple[int, str, str]:
    """Exit code, standard output, and standard error less the info log lines."""
    code = cli.main([*args, "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    said = [line for line in err.splitlines(keepends=True) if not _logged(line)]
    return code, out, "".join(said)


def _logged(line: str) -> bool:
    try:
        return json.loads(line).get("level") == "info"
    except (ValueError, AttributeError):
        return False


def test_disable_enable_and_remove_a_user(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    disabled = run(capsys, data_dir, "user", "disable", "alice")
    assert disabled[0] == 0 and disabled[1].startswith("user alice disabled: ")
    assert (
        run(capsys, data_dir, "user", "list")[1].splitlines()[1]
        == "alice\tchw\tarea-a1\t-\tdisabled"
    )
    assert run(capsys, data_dir, "user", "disable", "alice") == (
        1,
        "",
        "fieldsync: user 'alice' is already disabled\n",
    )
    assert run(capsys, data_dir, "user", "enable", "alice")[0] == 0
    assert run(capsys, data_dir, "user", "list")[1].splitlines()[1] == "alice\tchw\tarea-a1\t-"
    removed = run(capsys, data_dir, "user", "remove", "alice")
    assert removed[0] == 0 and "can no longer log in" in removed[1]
    assert run(capsys, data_dir, "user", "list")[1].splitlines()[1].endswith("\tremoved")
    refused = run(capsys, data_dir, "user", "enable", "alice")
    assert refused[0] == 1 and "removed user cannot be enabled" in refused[2]


@pytest.mark.parametrize("command", ["disable", "enable", "remove"])
def test_an_unknown_name_is_refused_clearly(
    capsys: pytest.CaptureFixture[str], data_dir: Path, command: str
) -> None:
    assert run(capsys, data_dir, "user", command, "nobody") == (
        1,
        "",
        "fieldsync: user 'nobody' does not exist\n",
    )


def test_a_removed_name_is_never_given_out_again(
    capsys: pytest.CaptureFixture[str], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(capsys, data_dir, "user", "remove", "bob")[0] == 0
    monkeypatch.setenv("FIELDSYNC_PASSWORD", "a long password")
    code, _, err = run(
        capsys, data_dir, "user", "add", "bob", "--role", "chw", "--place", "area-b1"
    )
    assert code == 1 and "never given out again" in err
    for command in (["passwd", "bob"], ["set-places", "bob", "--place", "area-b1"]):
        code, _, err = run(capsys, data_dir, "user", *command)
        assert code == 1 and "was removed" in err


def test_the_last_active_admin_stays(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    for command in ("disable", "remove"):
        code, _, err = run(capsys, data_dir, "user", command, "admin")
        assert code == 1 and "last active admin" in err


def test_rename_move_and_retire_a_place(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    said = run(capsys, data_dir, "place", "rename", "area-a2", "Riverside")
    assert said == (0, "place area-a2 is now named 'Riverside'\n", "")
    said = run(capsys, data_dir, "place", "move", "area-a2", "--parent", "district-b")
    assert said[0] == 0 and said[1].startswith("place area-a2 is now under district-b")
    assert run(capsys, data_dir, "place", "move", "area-a2", "--root")[1].startswith(
        "place area-a2 is now a root"
    )
    assert run(capsys, data_dir, "place", "retire", "area-a2")[0] == 0
    listed = run(capsys, data_dir, "place", "list")[1].splitlines()
    assert next(line for line in listed if line.startswith("area-a2\t")).startswith(
        "area-a2\t-\tRiverside\tretired 20"
    )


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["move", "district-a", "--parent", "area-a1"], "the tree would loop"),
        (["move", "district-a", "--parent", "mars"], "parent place 'mars' does not exist"),
        (["move", "nowhere", "--parent", "country"], "place 'nowhere' does not exist"),
        (["move", "area-a2"], "--parent ID (the place it will lie in) or --root"),
        (["move", "area-a2", "--parent", "country", "--root"], "one of the two"),
        (["rename", "nowhere", "x"], "place 'nowhere' does not exist"),
        (["rename", "area-a2", ""], "invalid place name"),
        (["retire", "area-a1"], "still has users assigned (alice)"),
        (["retire", "district-a"], "still has active places below it (facility-a)"),
    ],
)
def test_bad_place_changes_are_refused(
    capsys: pytest.CaptureFixture[str], data_dir: Path, args: list[str], reason: str
) -> None:
    code, out, err = run(capsys, data_dir, "place", *args)
    assert code == 1 and out == "" and reason in err, err


def test_nothing_goes_under_a_retired_place(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    assert run(capsys, data_dir, "place", "retire", "area-a2")[0] == 0
    for args in (["move", "area-b1", "--parent", "area-a2"], ["add", "x", "--parent", "area-a2"]):
        code, _, err = run(capsys, data_dir, "place", *args)
        assert code == 1 and "is retired" in err
    code, _, err = run(capsys, data_dir, "user", "set-places", "bob", "--place", "area-a2")
    assert code == 1 and "is retired" in err


def test_cli_changes_are_audited_and_logged(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    code = cli.main(["user", "disable", "bob", "--data-dir", str(data_dir)])
    _, err = capsys.readouterr()
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert code == 0
    assert [(e["event"], e["user"], e["status"]) for e in events] == [
        ("user_disabled", "bob", "disabled")
    ]
    run(capsys, data_dir, "place", "move", "area-a2", "--parent", "district-b")
    who = f"cli:{getpass.getuser()}"
    assert [(r[0], r[2], r[5]) for r in on_disk(data_dir, "user_disable", "place_move")] == [
        (who, "user_disable", "user bob: active -> disabled"),
        (who, "place_move", "place area-a2: parent facility-a -> district-b"),
    ]
    assert cli.main(["audit", "verify", "--data-dir", str(data_dir)]) == 0


async def test_a_cli_change_counts_from_the_servers_next_request(
    api: Api, client: Client, config: Config
) -> None:
    """The server keeps running; the CLI changes the file under it."""
    await api.bulk([{"_id": "in-a2", "place": "area-a2"}])
    assert (await api.call("GET", "/health/in-a2", "bob"))[0] == 404
    base = ["--data-dir", str(config.data_dir)]
    assert cli.main(["place", "move", "area-a2", "--parent", "area-b1", *base]) == 0
    assert (await api.call("GET", "/health/in-a2", "bob"))[0] == 200
    assert cli.main(["user", "disable", "bob", *base]) == 0
    response = await client.get("/health/in-a2", headers=as_user("bob"))
    assert response.status == 401 and "disabled" in (await response.json())["reason"]
    assert cli.main(["user", "enable", "bob", *base]) == 0
    assert (await api.call("GET", "/health/in-a2", "bob"))[0] == 200
