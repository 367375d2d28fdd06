"""README.md runs as written: every ```sh block, in order, on a fresh data dir.

The conventions are in ``readme_runner``'s docstring and in the README itself.
A failure names the block's line in README.md.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from readme_runner import (
    Block,
    ReadmeError,
    Session,
    Stop,
    check_conventions,
    expected_lines_missing,
    parse,
    venv_of_this_python,
)

README = Path(__file__).resolve().parent.parent / "README.md"
MOST_ILLUSTRATIONS = 8  # illustration-only blocks must stay few


def test_readme_runs_as_written(tmp_path: Path) -> None:
    missing = [tool for tool in ("bash", "curl", "openssl") if shutil.which(tool) is None]
    assert missing == [], f"README.md uses them: apt-get install -y {' '.join(missing)}"
    steps = parse(README.read_text())
    check_conventions(steps)
    Session(tmp_path / "newcomer", venv_of_this_python()).run(steps)


def test_readme_runs_most_of_its_blocks() -> None:
    blocks = [s for s in parse(README.read_text()) if isinstance(s, Block) and s.info == "sh"]
    shown = [b for b in blocks if b.marker == "illustration"]
    assert len(blocks) >= 20
    assert len(shown) <= MOST_ILLUSTRATIONS, [f"line {b.line}: {b.why}" for b in shown]


# -- the runner itself -------------------------------------------------------------------
SAMPLE = """\
# A sample

```sh
echo hello
```

```text
hello
```

<!-- illustration: it needs a machine we do not have -->
```sh
false
```

<!-- background: http://127.0.0.1:5984/_up -->
```sh
serve
```

<!-- stop background -->

```json
{"not": "run"}
```
"""


def test_parse_reads_blocks_markers_and_expected_output() -> None:
    steps = parse(SAMPLE)
    assert [type(s).__name__ for s in steps] == ["Block", "Block", "Block", "Stop", "Block"]
    first, shown, server, stop, json_block = steps
    assert isinstance(first, Block) and first.line == 3 and first.expected == "hello\n"
    assert isinstance(shown, Block) and shown.marker == "illustration"
    assert shown.why == "it needs a machine we do not have"
    assert isinstance(server, Block) and server.marker == "background"
    assert server.why == "http://127.0.0.1:5984/_up"
    assert isinstance(stop, Stop) and stop.line == 21
    assert isinstance(json_block, Block) and json_block.info == "json"


def test_text_block_after_prose_is_not_expected_output() -> None:
    steps = parse("```sh\necho a\n```\n\nSome words.\n\n```text\nb\n```\n")
    assert len(steps) == 1 and isinstance(steps[0], Block) and steps[0].expected is None


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("```bash\necho\n```\n", "use ```sh"),
        ("<!-- illustration: no -->\n```sh\necho\n```\n", "say why"),
        ("<!-- background: soon -->\n```sh\necho\n```\n", "name the URL"),
        ("<!-- illustration: a json body shown -->\n```json\n{}\n```\n", "belongs above"),
    ],
)
def test_conventions_are_enforced(text: str, complaint: str) -> None:
    with pytest.raises(ReadmeError, match=complaint):
        check_conventions(parse(text))


def test_loose_match_in_order_with_ellipsis() -> None:
    output = "user  admin added (admin)\ntoken: abc123\ndone\n"
    assert expected_lines_missing("user admin added\ntoken: …\ndone\n", output) == []
    assert expected_lines_missing("done\nuser admin added\n", output) == ["user admin added"]


def test_a_failing_block_names_its_line(tmp_path: Path) -> None:
    text = "# x\n\n```sh\nexport GREETING=hi\n```\n\n```sh\necho $GREETING\nfalse\n```\n"
    with pytest.raises(ReadmeError, match=r"README.md line 7: the block exited with status 1"):
        Session(tmp_path, venv_of_this_python()).run(parse(text))


def test_variables_carry_over_and_output_is_checked(tmp_path: Path) -> None:
    text = '```sh\nNAME=chw-08\n```\n\n```sh\necho "hello $NAME"\n```\n\n```text\nbye\n```\n'
    with pytest.raises(ReadmeError, match=r"(?s)line 5: the output lacks .*'bye'.*hello chw-08"):
        Session(tmp_path, venv_of_this_python()).run(parse(text))


def test_a_background_server_starts_in_its_own_shell_and_is_stopped(tmp_path: Path) -> None:
    text = (
        "```sh\nexport FIRST_TERMINAL=yes\n```\n\n"
        "<!-- background: http://127.0.0.1:5984/ -->\n"
        '```sh\ntest -z "${FIRST_TERMINAL:-}"\n'
        "exec python -m http.server --bind 127.0.0.1 5984\n```\n\n"
        "```sh\ncurl -sf http://127.0.0.1:5984/ > /dev/null\n```\n\n"
        "<!-- stop background -->\n\n"
        "```sh\n! curl -sf http://127.0.0.1:5984/ > /dev/null\n```\n"
    )
    session = Session(tmp_path, venv_of_this_python())
    session.run(parse(text))
    assert session.servers == []
