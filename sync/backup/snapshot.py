"""A consistent copy of the live store, taken while the server reads and writes it.

SQLite's online backup API copies the store page by page
(https://www.sqlite.org/backup.html).  Copied in steps, it starts over whenever
another connection writes between two steps, so a busy server could keep it from
ever finishing; the source connection therefore holds one read transaction for the
whole copy.  In WAL mode a reader never blocks the writer, and the copy is the
store exactly as it was when that transaction began: every page from one moment.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from sync.store.schema import connect

PAGES_PER_STEP = 1024  # 4 MiB at SQLite's default page size: a progress line now and then

Progress = Callable[[int, int], None]  # pages copied, pages in all


@dataclass(frozen=True)
class Snapshot:
    path: Path
    pages: int
    size: int


def copy_store(store: Path, target: Path, progress: Progress) -> Snapshot:
    """Copy ``store`` into the new file ``target`` (mode 0600), one moment's pages."""
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    with closing(connect(store, create=False)) as source, closing(sqlite3.connect(target)) as copy:
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM meta").fetchone()  # the read transaction starts here
        try:
            source.backup(
                copy,
                pages=PAGES_PER_STEP,
                progress=lambda _status, remaining, total: progress(total - remaining, total),
            )
        finally:
            source.execute("COMMIT")
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        (pages,) = copy.execute("PRAGMA page_count").fetchone()
    with target.open("rb") as handle:
        os.fsync(handle.fileno())
    return Snapshot(target, int(pages), target.stat().st_size)
