"""Run README.md's command blocks, in order, as a newcomer would type them.

The conventions (README.md says them too, under "How this README is tested"):

- A ```sh block is run with bash (``set -euo pipefail``): every command in it must
  succeed. Blocks run one after the other in one folder, like one terminal: shell
  variables (exported or not) carry over from a block to the next.
- Shell code goes in ```sh blocks only: a ```bash, ```shell or ```console fence is
  an error, so no command can slip past the test under another name.
- ``<!-- illustration: WHY -->`` on the line above a ```sh block: not run; WHY
  says why it cannot be (it needs a CouchDB, it starts the whole test suite...).
- ``<!-- background: URL -->`` above a ```sh block: the block (a server, typed in a
  second terminal) is started in the background, in a shell of its own that gets
  none of the first terminal's variables, and the next block runs once ``URL``
  answers 200. It runs until a ``<!-- stop background -->`` line, or the end.
- A ```text block right after a ```sh block (only blank lines between) is what
  the block prints: each of its lines must appear, in order, in the output
  (stdout and stderr together). Runs of spaces match any whitespace and ``…``
  matches anything, so dates, tokens and ids can be left out.
- The port ``5984`` is replaced everywhere (blocks, URLs, expected output) by a
  free one, and ``FIELDSYNC_PORT`` is set to it, so the test never meets a real
  server on the default port.

The folder holds ``.venv``, a link to the environment the tests run in, so
``. .venv/bin/activate`` works as written.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

SHELL = "sh"
REFUSED_FENCES = frozenset({"bash", "shell", "console", "zsh", "shell-session", "shellsession"})
EXPECTED = "text"
DEFAULT_PORT = "5984"
MARKER = re.compile(r"<!--\s*(illustration|background|stop background)\s*:?\s*(.*?)\s*-->")
FENCE = re.compile(r"^(```+|~~~+)\s*([\w-]*)")
START_TIMEOUT = 60.0  # how long a background server may take to answer (a busy machine)
STOP_TIMEOUT = 20.0
BLOCK_TIMEOUT = 300.0
# Bash's own variables: not carried from one block to the next.
_SAVE_STATE = r"""
for __v in $(compgen -v); do
  case "$__v" in
    BASH*|COMP*|DIRSTACK|EPOCH*|EUID|FUNCNAME|GROUPS|HIST*|IFS|LINENO|OPT*|PIPESTATUS|\
PPID|PS?|RANDOM|SECONDS|SHELLOPTS|SHLVL|SRANDOM|UID|_|__v) ;;
    *) declare -p "$__v" ;;
  esac
done | grep -v '^declare -[a-zA-Z]*r' > "$README_STATE" || true
"""


class ReadmeError(AssertionError):
    """A block failed, printed something else, or broke a convention; names its line."""


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    info: str
    body: str
    marker: str = ""  # illustration | background | ""
    why: str = ""  # the illustration's reason, or the background's URL
    expected: str | None = None


@dataclass
class Stop:
    line: int


Step = Block | Stop


def parse(text: str) -> list[Step]:
    """The README's fenced blocks and stop markers, in order; expected output attached."""
    steps: list[Step] = []
    lines = text.splitlines()
    index = 0
    last_shell: Block | None = None
    while index < len(lines):
        fence = FENCE.match(lines[index])
        marker = MARKER.fullmatch(lines[index].strip())
        if marker and marker.group(1) == "stop background":
            steps.append(Stop(index + 1))
        if not fence:
            if lines[index].strip() and not marker:
                last_shell = None
            index += 1
            continue
        block, index = _read_block(lines, index, fence.group(1), fence.group(2))
        if block.info == EXPECTED and last_shell is not None:
            last_shell.expected = block.body
        elif block.info != EXPECTED:
            steps.append(block)
        last_shell = block if block.info == SHELL and not block.marker else None
    return steps


def _read_block(lines: list[str], start: int, fence: str, info: str) -> tuple[Block, int]:
    end = start + 1
    while end < len(lines) and not lines[end].startswith(fence):
        end += 1
    if end == len(lines):
        raise ReadmeError(f"README.md line {start + 1}: this block is never closed ({fence})")
    block = Block(start + 1, info, "\n".join(lines[start + 1 : end]) + "\n")
    above = _line_above(lines, start)
    marker = MARKER.fullmatch(above.strip()) if above else None
    if marker and marker.group(1) != "stop background":
        block.marker, block.why = marker.group(1), marker.group(2)
    return block, end + 1


def _line_above(lines: list[str], start: int) -> str | None:
    return lines[start - 1] if start > 0 else None


def check_conventions(steps: list[Step]) -> None:
    """Shell code only in ```sh; every marker on a ```sh block; every illustration says why."""
    for step in steps:
        if isinstance(step, Stop):
            continue
        where = f"README.md line {step.line}"
        if step.info in REFUSED_FENCES:
            raise ReadmeError(f"{where}: use ```sh for commands (```{step.info} is not run)")
        if step.marker and step.info != SHELL:
            raise ReadmeError(f"{where}: <!-- {step.marker} --> belongs above a ```sh block")
        if step.marker == "illustration" and len(step.why.split()) < 3:
            raise ReadmeError(f"{where}: say why the block is not run: <!-- illustration: WHY -->")
        if step.marker == "background" and not step.why.startswith(("http://", "https://")):
            raise ReadmeError(f"{where}: name the URL to wait for: <!-- background: URL -->")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def expected_lines_missing(expected: str, output: str) -> list[str]:
    """The expected lines not found, in order, in the output (empty: it matches)."""
    out_lines = output.splitlines()
    position = 0
    missing: list[str] = []
    for wanted in (line.strip() for line in expected.splitlines()):
        if not wanted:
            continue
        pattern = _loose(wanted)
        found = next(
            (i for i in range(position, len(out_lines)) if pattern.search(out_lines[i])), None
        )
        if found is None:
            missing.append(wanted)
        else:
            position = found + 1
    return missing


def _loose(line: str) -> re.Pattern[str]:
    parts = [r"\s+".join(re.escape(word) for word in part.split()) for part in line.split("…")]
    return re.compile(".*".join(parts))


@dataclass
class Session:
    """One terminal: a folder, an environment, the shell state and the servers started."""

    folder: Path
    venv: Path
    port: int = field(default_factory=free_port)
    servers: list[tuple[Block, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        link = self.folder / ".venv"
        if not link.exists():
            link.symlink_to(self.venv, target_is_directory=True)
        self.state = self.folder / ".readme-state"
        self.state.write_text("")

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["FIELDSYNC_PORT"] = str(self.port)
        env["README_STATE"] = str(self.state)
        env.pop("VIRTUAL_ENV", None)
        return env

    def ported(self, text: str) -> str:
        return re.sub(rf"\b{DEFAULT_PORT}\b", str(self.port), text)

    def script(self, block: Block, first_terminal: bool) -> Path:
        """The block as a bash script; in the first terminal, with the session's variables."""
        path = self.folder / f".readme-block-{block.line}.sh"
        head, tail = ('source "$README_STATE"\n', _SAVE_STATE) if first_terminal else ("", "")
        path.write_text(f"{head}set -euo pipefail\n{self.ported(block.body)}\n{tail}")
        return path

    def run(self, steps: list[Step]) -> None:
        try:
            for step in steps:
                if isinstance(step, Stop):
                    self.stop_servers()
                elif step.info == SHELL and step.marker == "background":
                    self.start(step)
                elif step.info == SHELL and step.marker != "illustration":
                    self.foreground(step)
        finally:
            self.stop_servers()

    def foreground(self, block: Block) -> None:
        for server, process, log in self.servers:
            if process.poll() is not None:
                raise ReadmeError(
                    f"README.md line {block.line}: the server of line {server.line} stopped "
                    f"(exit {process.returncode}):\n{_tail(log)}"
                )
        done = subprocess.run(
            ["bash", str(self.script(block, first_terminal=True))],
            cwd=self.folder,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=BLOCK_TIMEOUT,
            check=False,
        )
        output = done.stdout.decode(errors="replace")
        where = f"README.md line {block.line}"
        if done.returncode != 0:
            raise ReadmeError(
                f"{where}: the block exited with status {done.returncode}\n"
                f"--- block\n{block.body}--- output\n{output}"
            )
        if block.expected is not None:
            missing = expected_lines_missing(self.ported(block.expected), output)
            if missing:
                raise ReadmeError(
                    f"{where}: the output lacks (in order) {missing!r}\n--- output\n{output}"
                )

    def start(self, block: Block) -> None:
        log = self.folder / f".readme-server-{block.line}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", str(self.script(block, first_terminal=False))],
                cwd=self.folder,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as one below
            )
        self.servers.append((block, process, log))
        self._wait_up(block, process, log, self.ported(block.why))

    def _wait_up(self, block: Block, process: subprocess.Popen[bytes], log: Path, url: str) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the README's own self-signed certificate
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ReadmeError(
                    f"README.md line {block.line}: the server stopped (exit "
                    f"{process.returncode}) before {url} answered:\n{_tail(log)}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise ReadmeError(f"README.md line {block.line}: {url} never answered:\n{_tail(log)}")

    def stop_servers(self) -> None:
        """Stop the servers this session started: their process groups, by id."""
        while self.servers:
            _, process, _ = self.servers.pop()
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def venv_of_this_python() -> Path:
    return Path(sys.prefix)
