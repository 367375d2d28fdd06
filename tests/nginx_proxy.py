"""Run deploy/nginx.conf, the compose file's TLS proxy, with Debian's nginx on loopback.

docker-compose.yml mounts deploy/nginx.conf as the nginx image's template, and the
image renders it with ``envsubst`` restricted to the ``PROXY_*`` variables
(``NGINX_ENVSUBST_FILTER=^PROXY_``).  `render` does the same substitution here,
so the file under test is the file the compose file mounts: only the values
differ (loopback upstreams, a free port, a test certificate, a temporary state
directory).  A ``${PROXY_*}`` name the file uses and the caller did not give is an
error, never left for nginx to misread.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
NGINX = "/usr/sbin/nginx"
APT_HINT = "Debian's nginx is needed: apt-get install -y nginx (make system-test does it)"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
# envsubst replaces $NAME and ${NAME}; the image's filter keeps it to these names.
PLACEHOLDER = re.compile(r"\$\{(PROXY_[A-Z0-9_]+)\}|\$(PROXY_[A-Z0-9_]+)")


class ProxyError(RuntimeError):
    """nginx could not be started with the rendered configuration."""


def placeholders(template: str) -> set[str]:
    """Every ``PROXY_*`` name the template asks for."""
    return {braced or bare for braced, bare in PLACEHOLDER.findall(template)}


def render(template: str, values: dict[str, str]) -> str:
    """``envsubst`` over the ``PROXY_*`` names; every one the template uses must be given."""
    missing = placeholders(template) - set(values)
    if missing:
        raise ProxyError(f"no value for {', '.join(sorted(missing))}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1) or m.group(2)], template)


def nginx_binary() -> str:
    if not os.access(NGINX, os.X_OK):
        raise ProxyError(APT_HINT)
    return NGINX


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proxy:
    """nginx running deploy/nginx.conf in ``workdir``, serving HTTPS on 127.0.0.1:``port``."""

    workdir: Path
    upstreams: tuple[str, str]
    cert: Path
    key: Path
    port: int = field(default_factory=free_port)
    max_body: str = "64m"
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "nginx.log"

    def values(self) -> dict[str, str]:
        return {
            "PROXY_USER": pwd.getpwuid(os.geteuid()).pw_name,  # the image's: nginx
            "PROXY_STATE_DIR": str(self.workdir / "state"),
            "PROXY_LISTEN": f"127.0.0.1:{self.port}",  # the image's: 443
            "PROXY_UPSTREAM_1": self.upstreams[0],
            "PROXY_UPSTREAM_2": self.upstreams[1],
            "PROXY_CERT": str(self.cert),
            "PROXY_CERT_KEY": str(self.key),
            "PROXY_MAX_BODY": self.max_body,
        }

    def write_config(self) -> Path:
        (self.workdir / "state").mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nginx.conf"
        conf.write_text(render(NGINX_CONF.read_text(), self.values()))
        return conf

    def command(self, *extra: str) -> list[str]:
        # -e: errors before the file's own error_log is read; -p: no default prefix.
        conf = self.workdir / "nginx.conf"
        return [nginx_binary(), "-e", "stderr", "-p", str(self.workdir), "-c", str(conf), *extra]

    def check(self) -> None:
        """``nginx -t``: the rendered file parses and its certificate loads."""
        result = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise ProxyError(f"nginx -t refused the rendered deploy/nginx.conf:\n{result.stderr}")

    def start(self) -> None:
        self.write_config()
        self.check()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command("-g", "daemon off;"),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False  # only "does it speak TLS yet"; the tests verify
        context.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise ProxyError(f"nginx exited early:\n{self.log_tail()}")
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw,
                    context.wrap_socket(raw, server_hostname="localhost"),
                ):
                    return
            except OSError:
                time.sleep(0.1)
        raise ProxyError(f"nginx did not answer in {READY_TIMEOUT} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown: its workers go with it), then SIGKILL; our PID only."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
