"""One process at a time owns a data dir: the server, or a key command that needs it stopped.

An advisory ``flock`` on ``<data dir>/fieldsync.lock``; the kernel lets go of it
when the holder exits, even after ``kill -9``, so a crash never leaves the data
dir locked. The CLI's place and user commands do not take it: they work while the
server runs (SQLite's own locking keeps their writes safe).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sync.errors import FieldsyncError

LOCK_FILE = "fieldsync.lock"


class DataDirBusy(FieldsyncError):
    status = 409
    error = "data_dir_busy"
    default_reason = "Another fieldsync process is using this data dir."


@contextmanager
def exclusive(data_dir: Path, purpose: str) -> Iterator[None]:
    """Hold the data dir for ``purpose`` (e.g. "serve"), or raise DataDirBusy at once."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirBusy(
            f"cannot {purpose}: another fieldsync server (or key command) is using the data "
            f"dir {data_dir}; stop it first"
        ) from None
    try:
        yield
    finally:
        os.close(fd)
