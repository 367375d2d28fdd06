"""CPU seconds the processes of a timed run spent: the server, the PouchDB client, CouchDB.

On a machine of few cores the three share the CPU, so a run's wall time is about the
sum of what each spent; these figures say whose work a slower run is.  Linux only
(``/proc``); elsewhere, and for a process we cannot see, the figure is ``None``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of ``pid`` so far (every thread), or None."""
    if pid is None:
        return None
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def listening_pid(port: int) -> int | None:
    """The process that listens on TCP ``port`` on this machine (CouchDB's beam), or None."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{parts[9]}]")
    if not inodes:
        return None
    for proc in _PROC.iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


@contextmanager
def spent(pids: Mapping[str, int | None], into: dict[str, Any]) -> Iterator[None]:
    """Put the CPU seconds each named process spent in the block into ``into["cpu_s"]``."""
    before = {name: seconds(pid) for name, pid in pids.items()}
    yield
    cpu: dict[str, float | None] = {}
    for name, pid in pids.items():
        start, end = before[name], seconds(pid)
        cpu[name] = None if start is None or end is None else round(end - start, 3)
    into["cpu_s"] = cpu
