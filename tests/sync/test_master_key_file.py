"""The master key in a file outside the data dir: ``FIELDSYNC_MASTER_KEY_FILE``, as a Docker secret.

docker-compose.yml mounts the key at /run/secrets/master.key (read-only, owned as on
the host) and points ``FIELDSYNC_MASTER_KEY_FILE`` at it.  The server must use that
file, write no key of its own into the data dir, and, when the file cannot be read,
stop with a message that names the file and the user id that must read it.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

FIELDSYNC = str(Path(sys.executable).parent / "fieldsync")
READY_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _secret(folder: Path) -> Path:
    """A key file as Docker mounts a secret: in its own directory, read-only."""
    folder.mkdir()
    key_file = folder / "master.key"
    key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    key_file.chmod(0o400)
    return key_file


def _env(key_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
    return {**env, "FIELDSYNC_MASTER_KEY_FILE": str(key_file)}


def _ready(url: str, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, "fieldsync serve exited early"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                return exc.code
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no answer from {url} in {READY_TIMEOUT} s")


def test_serve_uses_the_key_file_outside_the_data_dir(tmp_path: Path) -> None:
    key_file = _secret(tmp_path / "secrets")
    data = tmp_path / "data"
    env = _env(key_file)
    made = subprocess.run(
        [FIELDSYNC, "init", "--data-dir", str(data)], env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    port = _free_port()
    command = [FIELDSYNC, "serve", "--data-dir", str(data), "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert _ready(f"http://127.0.0.1:{port}/_ready", process) == 200, log.read_text()
    finally:
        process.terminate()
        process.wait(10)
    assert not (data / "master.key").exists()
    assert key_file.read_bytes().strip()  # untouched, still the only key


def test_an_unreadable_key_file_stops_serve_with_a_clear_message(tmp_path: Path) -> None:
    not_a_file = tmp_path / "secrets" / "master.key"
    not_a_file.mkdir(parents=True)  # what Docker mounts when the secret's source is missing
    command = [FIELDSYNC, "serve", "--data-dir", str(tmp_path / "data"), "--port", "1"]
    result = subprocess.run(
        command, env=_env(not_a_file), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"cannot read the master key file {not_a_file}" in result.stderr
    assert f"readable by user id {os.getuid()}" in result.stderr
