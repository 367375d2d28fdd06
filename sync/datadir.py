"""One process at a time owns a data dir: the server, or a key command that needs it stopped.

An advisory ``flock`` on ``<data dir>/fieldsync.lock``; the kernel lets go of it
when the holder exits, even after ``kill -9``, so a crash never leaves the data
dir locked. The CLI's place and user commands do not take it: they work while the
server runs (SQLite's own locking keeps their writes safe).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from sync.errors import FieldsyncError

LOCK_FILE = "fieldsync.lock"


class DataDirBusy(FieldsyncError):
    status = 409
    error = "data_dir_busy"
    default_reason = "Another fieldsync process is using this data dir."


def _try_lock(data_dir: Path) -> int | None:
    """The locked file's descriptor, or None if another process holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _busy(data_dir: Path, purpose: str, waited: float) -> DataDirBusy:
    after = f" (waited {waited:g} s)" if waited else ""
    return DataDirBusy(
        f"cannot {purpose}: another fieldsync server (or key command) is using the data "
        f"dir {data_dir}{after}; stop it first"
    )


@contextmanager
def exclusive(data_dir: Path, purpose: str) -> Iterator[None]:
    """Hold the data dir for ``purpose`` (a key command), or raise DataDirBusy at once."""
    fd = _try_lock(data_dir)
    if fd is None:
        raise _busy(data_dir, purpose, 0)
    try:
        yield
    finally:
        os.close(fd)


@asynccontextmanager
async def serving(data_dir: Path, wait: float) -> AsyncIterator[None]:
    """Hold the data dir for a server, waiting up to ``wait`` seconds for it to be free.

    A restart (stop, then start at once) meets the old process still shutting
    down; it gets a few seconds to let go before the new one gives up.
    """
    deadline = time.monotonic() + wait
    while (fd := _try_lock(data_dir)) is None:
        if time.monotonic() >= deadline:
            raise _busy(data_dir, "serve", wait)
        await asyncio.sleep(0.1)
    try:
        yield
    finally:
        os.close(fd)
