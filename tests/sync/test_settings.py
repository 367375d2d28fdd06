"""Every FIELDSYNC_* setting is in one list, and README.md's table is that list.

A setting the code reads but the list lacks fails here, naming the file that reads
it; so does a README table that is out of date (``make readme-settings`` fixes it).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sms_gateway import settings as sms_settings
from sync import settings
from sync.cli import main
from sync.config import Config, from_env, setting_fields

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sync", "forms", "sms_gateway", "barcode", "device_registry")
# A whole name: FIELDSYNC_ and at least one more letter, not ending in _ (a prefix).
NAME = re.compile(r"\bFIELDSYNC_[A-Z0-9_]*[A-Z0-9]\b")


def names_in_code() -> dict[str, Path]:
    """Every FIELDSYNC_ name written in the packages' code, and one file that has it."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in NAME.findall(path.read_text()):
                found.setdefault(name, path.relative_to(ROOT))
    return found


def test_every_name_in_the_code_is_a_listed_setting() -> None:
    listed = {s.name for s in settings.every_setting()}
    unlisted = {name: str(path) for name, path in names_in_code().items() if name not in listed}
    assert unlisted == {}, "add these to the settings list (sync/settings.py or the package's)"


def test_every_listed_setting_is_read_by_the_code() -> None:
    read = {
        *setting_fields(),
        *(sms_settings.PREFIX + key for key in sms_settings.ENV_KEYS),
        *names_in_code(),
    }
    assert [s.name for s in settings.every_setting() if s.name not in read] == []


def test_names_are_unique_and_every_one_says_what_it_does() -> None:
    every = settings.every_setting()
    assert len({s.name for s in every}) == len(every)
    assert all(s.default and len(s.meaning.split()) >= 4 for s in every)


def test_sms_settings_are_the_ones_from_config_reads() -> None:
    env = {sms_settings.PREFIX + key: "" for key in sms_settings.ENV_KEYS}
    env["FIELDSYNC_SMS_SEND_HOURS"] = "07-19"
    env["FIELDSYNC_SMS_TICK"] = "2"
    read = sms_settings.from_config(Config(), env)
    assert read.send_hours == (7, 19) and read.tick_seconds == 2.0


def test_defaults_come_from_the_code() -> None:
    by_name = {s.name: s for s in settings.every_setting()}
    config = Config()
    assert by_name["FIELDSYNC_PORT"].default == str(config.port)
    assert by_name["FIELDSYNC_REQUIRE_ENROLMENT"].default == "1"
    assert by_name["FIELDSYNC_MAX_REQUEST_BYTES"].default == "67108864 (64 MiB)"
    assert by_name["FIELDSYNC_DATA_DIR"].default == "./data"
    assert by_name["FIELDSYNC_SMS_SEND_HOURS"].default == "08-18"
    assert by_name["FIELDSYNC_SMS_OFFER_TIMEOUT"].default == "600"


def test_a_core_default_shown_is_what_from_env_gives_when_unset() -> None:
    config = from_env(env={})
    by_name = {s.name: s for s in settings.core_settings()}
    for name, attr in setting_fields().items():
        value = getattr(config, attr)
        if value is not None:
            assert by_name[name].default == settings.shown(value), name


def test_readme_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    table = settings.markdown_table(settings.every_setting())
    assert settings.START in readme and settings.END in readme
    assert settings.splice(readme, table) == readme, "run: make readme-settings"


def test_the_settings_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    assert capsys.readouterr().out == settings.markdown_table(settings.every_setting())


def test_splice_replaces_only_between_the_markers(tmp_path: Path) -> None:
    text = f"# x\n\nbefore\n{settings.START}\nold\n{settings.END}\nafter\n"
    assert settings.splice(text, "| new |\n") == (
        f"# x\n\nbefore\n{settings.START}\n| new |\n{settings.END}\nafter\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text(text)
    assert settings.main([str(readme)]) == 0
    written = readme.read_text()
    assert "\nold\n" not in written and "| `FIELDSYNC_PORT` |" in written


def test_splice_refuses_a_file_without_the_markers() -> None:
    with pytest.raises(ValueError, match="markers"):
        settings.splice("# no table here\n", "| t |\n")


def test_a_pipe_in_a_meaning_does_not_break_the_table() -> None:
    table = settings.markdown_table([settings.Setting("FIELDSYNC_X", "a|b", "one | two")])
    assert "a\\|b" in table and "one \\| two" in table
