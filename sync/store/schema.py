"""The SQLite schema: documents (by database) and the system tables.

One file holds everything (``fieldsync.sqlite3`` under the data dir), in WAL
mode so the CLI can change users and places while the server runs.  Only
:func:`initialise` makes the file (``fieldsync init`` and ``serve``, see
:mod:`sync.store.opening`); :func:`with_file`, the management commands' way in, opens
one that exists and refuses a data dir without it (:class:`NoStore`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager, closing
from pathlib import Path
from typing import TypeVar

from sync.errors import FieldsyncError

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dbs(
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,
    update_seq INTEGER NOT NULL DEFAULT 0, revs_limit INTEGER NOT NULL DEFAULT 1000,
    created TEXT NOT NULL, uuid TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs(
    db INTEGER NOT NULL, id TEXT NOT NULL, place TEXT NOT NULL, seq INTEGER NOT NULL,
    winner TEXT NOT NULL, deleted INTEGER NOT NULL, leaves TEXT NOT NULL, tree TEXT NOT NULL,
    UNIQUE(db, id));
CREATE INDEX IF NOT EXISTS docs_by_seq ON docs(db, seq);
DROP INDEX IF EXISTS docs_by_place_seq;
CREATE INDEX IF NOT EXISTS docs_changes_by_place
    ON docs(db, place, seq, id, winner, deleted, leaves);
CREATE INDEX IF NOT EXISTS docs_by_place_id ON docs(db, place, id);
CREATE INDEX IF NOT EXISTS docs_by_place_deleted ON docs(db, place, deleted);
CREATE TABLE IF NOT EXISTS revs(
    db INTEGER NOT NULL, doc_id TEXT NOT NULL, rev TEXT NOT NULL, place TEXT NOT NULL,
    deleted INTEGER NOT NULL, key_ref TEXT NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY(db, doc_id, rev));
CREATE TABLE IF NOT EXISTS attachments(
    db INTEGER NOT NULL, digest TEXT NOT NULL, place TEXT NOT NULL, key_ref TEXT NOT NULL,
    length INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(db, digest, place));
CREATE TABLE IF NOT EXISTS local_docs(
    db INTEGER NOT NULL, owner TEXT NOT NULL, id TEXT NOT NULL, rev TEXT NOT NULL,
    body BLOB NOT NULL, PRIMARY KEY(db, owner, id));
CREATE TABLE IF NOT EXISTS places(
    id TEXT PRIMARY KEY, parent TEXT REFERENCES places(id), name TEXT NOT NULL,
    created TEXT NOT NULL, retired TEXT);
CREATE TABLE IF NOT EXISTS users(
    name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,
    places TEXT NOT NULL, read_places TEXT NOT NULL, created TEXT NOT NULL,
    updated TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'active',
    language TEXT NOT NULL DEFAULT 'en');
CREATE TABLE IF NOT EXISTS data_keys(
    place TEXT NOT NULL, version INTEGER NOT NULL, wrapped BLOB NOT NULL,
    created TEXT NOT NULL, PRIMARY KEY(place, version));
CREATE TABLE IF NOT EXISTS scope_snapshots(hash TEXT PRIMARY KEY, places TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit(
    id INTEGER PRIMARY KEY, ts TEXT NOT NULL, actor TEXT NOT NULL, device TEXT,
    action TEXT NOT NULL, db TEXT, doc_ids TEXT NOT NULL, prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL, detail TEXT);
CREATE TABLE IF NOT EXISTS sessions(
    id_hash TEXT PRIMARY KEY, user TEXT NOT NULL, password_tag TEXT NOT NULL,
    created REAL NOT NULL, last_seen REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions(user);
"""

DB_FILE = "fieldsync.sqlite3"


class NoStore(FieldsyncError):
    """The data dir holds no store: a command other than ``init``/``serve`` pointed at it."""

    status = 404
    error = "no_data_dir"
    default_reason = "There is no fieldsync data dir here."


def db_path(data_dir: Path) -> Path:
    return data_dir / DB_FILE


def no_store(data_dir: Path) -> NoStore:
    """The refusal for a data dir without a store: where we looked, and what to do."""
    where = data_dir.absolute()
    return NoStore(
        f"no fieldsync data dir at {where} (no {DB_FILE} there): run "
        f"`fieldsync init --data-dir {where}` first, or pass the right --data-dir "
        "(or FIELDSYNC_DATA_DIR); nothing was created"
    )


def connect(path: Path, *, create: bool = True) -> sqlite3.Connection:
    """A connection with the pragmas every user of the file needs.

    With ``create=False`` a missing file is an error (``sqlite3.OperationalError``)
    rather than a new, empty database.
    """
    target = str(path) if create else f"{path.absolute().as_uri()}?mode=rw"
    conn = sqlite3.connect(
        target, timeout=30, isolation_level=None, check_same_thread=False, uri=not create
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA cache_size=-32768")  # 32 MiB of pages per connection
    # No memory map: in WAL mode every commit by another connection makes each
    # reader drop its whole mapping at its next read, and faulting a large file's
    # pages back in costs more than reading them (measured: bench, 1M documents).
    conn.execute("PRAGMA mmap_size=0")
    return conn


def initialise(path: Path) -> None:
    """Make the file (and its directory) if missing, and bring its tables up to date."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(connect(path)) as conn:
        _upgrade(conn)


def _upgrade(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    _add_column(conn, "audit", "detail", "TEXT")
    _add_column(conn, "places", "retired", "TEXT")
    _add_column(conn, "users", "status", "TEXT NOT NULL DEFAULT 'active'")
    _add_column(conn, "users", "language", "TEXT NOT NULL DEFAULT 'en'")


def _add_column(conn: sqlite3.Connection, table: str, column: str, kind: str) -> None:
    """Bring a table of an older data dir up to date (a column added since)."""
    if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn(conn)`` inside ``BEGIN IMMEDIATE``: committed whole, or rolled back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def connections(path: Path) -> Callable[[], AbstractContextManager[sqlite3.Connection]]:
    """A factory of short-lived connections to ``path``, each closed after its ``with``."""
    return lambda: closing(connect(path))


def with_file(data_dir: Path, fn: Callable[[sqlite3.Connection], T]) -> T:
    """One transaction on the data dir's SQLite file (the CLI's way in, server running or not).

    The file must be there: a mistyped ``--data-dir`` is refused, never given a new store.
    """
    path = db_path(data_dir)
    if not path.is_file():
        raise no_store(data_dir)
    try:
        conn = connect(path, create=False)
    except sqlite3.OperationalError as exc:  # gone since the check above
        raise no_store(data_dir) from exc
    with closing(conn):
        _upgrade(conn)
        return in_transaction(conn, fn)
