"""Optional: the processes of a timed full pull, each on a CPU share of its own.

On a machine of few cores the server, the PouchDB client and CouchDB share the cores,
so a pull through fieldsync (three processes) competes for them in a way no deployment
does: CouchDB runs on its own nodes, fieldsync on its own, the phone is a phone.
``BENCH_CPU_APART=1`` emulates that placement on this machine: for the length of each
timed full pull (fieldsync's on each backend, and its peers: CouchDB's own unfiltered
pull, PouchDB's memory-to-memory copy), each of its processes is put in a cgroup of its
own whose CPU is capped at a third of the machine's (two cores: 0.67 of a core each).
That is three equal cores, each slower than a real one; every pull of the run, peers
included, gets the same.

It needs root and a writable cgroup CPU controller (v1 ``/sys/fs/cgroup/cpu``, or v2
with ``cpu`` enabled); the bench stops with the reason otherwise. Each process goes
back to the cgroup it came from at the end of the block (CouchDB too, which the bench
did not start), and the cgroups are removed at exit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

ENV = "BENCH_CPU_APART"
ROLES = ("server", "client", "couchdb")
PERIOD_US = 10_000  # short periods: a capped process waits at most a few ms for its share
_ROOT = Path("/sys/fs/cgroup")
_NAME = "fieldsync-bench-"


def wanted() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


class Apart:
    """Three CPU cgroups, one per role, each capped at ``share`` of a core."""

    def __init__(self) -> None:
        cores = os.cpu_count() or 1
        self.share = cores / len(ROLES)
        self.v1 = (_ROOT / "cpu" / "cgroup.procs").exists()
        controllers = _ROOT / "cgroup.controllers"
        if not self.v1 and not (controllers.exists() and "cpu" in controllers.read_text()):
            raise RuntimeError(f"{ENV} needs a cgroup CPU controller under {_ROOT}")
        self.base = _ROOT / "cpu" if self.v1 else _ROOT
        self.groups: dict[str, Path] = {}
        quota = int(PERIOD_US * self.share)
        try:
            if not self.v1:
                (self.base / "cgroup.subtree_control").write_text("+cpu")
            for role in ROLES:
                group = self.base / f"{_NAME}{role}"
                group.mkdir(exist_ok=True)
                self.groups[role] = group
                self._release(group)  # left by a bench that was killed mid-pull
                if self.v1:
                    (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                    (group / "cpu.cfs_quota_us").write_text(str(quota))
                else:
                    (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        except OSError as exc:
            self.close()
            problem = f"{ENV}: cannot set up CPU cgroups under {self.base}: {exc}"
            raise RuntimeError(problem) from exc

    def _release(self, group: Path) -> None:
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # gone meanwhile
                (self.base / "cgroup.procs").write_text(pid)

    @property
    def description(self) -> str:
        return (
            f"each process of a timed full pull capped at {self.share:.2f} of a core "
            f"({ENV}: {len(ROLES)} equal shares of {os.cpu_count()} cores)"
        )

    def _home(self, pid: int) -> Path:
        """The cgroup ``pid`` is in now (for the CPU controller)."""
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, where = line.split(":", 2)
            if (self.v1 and "cpu" in controllers.split(",")) or (not self.v1 and not controllers):
                return self.base / where.lstrip("/")
        return self.base

    @contextlib.contextmanager
    def placed(self, pids: Mapping[str, int | None]) -> Iterator[None]:
        """Each of ``pids`` (by role) in its role's cgroup while the block runs."""
        moved: list[tuple[int, Path]] = []
        try:
            for role, pid in pids.items():
                if pid is not None and role in self.groups:
                    home = self._home(pid)
                    (self.groups[role] / "cgroup.procs").write_text(str(pid))
                    moved.append((pid, home))
            yield
        finally:
            for pid, home in moved:
                with contextlib.suppress(OSError):  # a process gone meanwhile
                    (home / "cgroup.procs").write_text(str(pid))

    def close(self) -> None:
        for group in self.groups.values():
            with contextlib.suppress(OSError):
                group.rmdir()
        self.groups.clear()


_opened: list[Apart] = []  # the run's cgroups, once opened


def open_apart() -> Apart | None:
    """The cgroups of ``BENCH_CPU_APART``, or None when it is not asked for."""
    if wanted() and not _opened:
        _opened.append(Apart())
    return _opened[0] if _opened else None


def described() -> str | None:
    """How the timed pulls were placed, when ``BENCH_CPU_APART`` placed them."""
    return _opened[0].description if _opened else None


def close_apart() -> None:
    while _opened:
        _opened.pop().close()


@contextlib.contextmanager
def placed(pids: Mapping[str, int | None]) -> Iterator[None]:
    """``Apart.placed`` when ``BENCH_CPU_APART`` is set; nothing otherwise."""
    if not _opened:
        yield
        return
    with _opened[0].placed(pids):
        yield
