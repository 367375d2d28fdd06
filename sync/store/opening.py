"""Opening a data dir: only ``fieldsync init`` and ``serve`` create one.

A data dir is a directory holding the store (``fieldsync.sqlite3``) and, unless
the master key comes from ``FIELDSYNC_MASTER_KEY`` or ``FIELDSYNC_MASTER_KEY_FILE``,
the master key (``master.key``)::

    fieldsync init [--data-dir DIR]   makes what is missing: DIR, the store, master.key;
                                      on a complete data dir it changes nothing (exit 0)
    fieldsync serve                   the same, then serves
    every other --data-dir command    opens the data dir as it is (:func:`existing`)

Every command, ``init`` and ``serve`` included, first refuses a data dir whose
store holds keys sealed under a master key that is not there
(:func:`check_master_key`): a new key written beside them would open none of
them, and the start would then fail for a reason nobody could see.  Both checks
only read: a refused command leaves every file as it found it.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from sync.audit_store.embedded import KEY_META
from sync.config import Config
from sync.errors import FieldsyncError
from sync.keys import MASTER_KEY_ENV, MasterKeyMissing, key_from_file
from sync.store.schema import NoStore, db_path, initialise, no_store


@dataclass(frozen=True)
class Sealed:
    """What the store holds that only its master key opens."""

    data_keys: int
    chain_key: bool  # the audit chain's key (:mod:`sync.audit`)

    def __bool__(self) -> bool:
        return self.data_keys > 0 or self.chain_key

    def __str__(self) -> str:
        parts = [f"{self.data_keys} data key(s)"] if self.data_keys else []
        return " and ".join(parts + ["the audit chain key"] * self.chain_key)


def existing(config: Config) -> None:
    """Refuse, before anything is written, a data dir a command must not work on.

    It must hold a store (:class:`NoStore` names where we looked), and the master
    key must be at hand if the store holds anything sealed under it.
    """
    if not db_path(config.data_dir).is_file():
        raise no_store(config.data_dir)
    check_master_key(config)


def check_master_key(config: Config) -> None:
    """Refuse a data dir whose sealed keys need a master key file that is missing."""
    if _master_key_at_hand(config) or not db_path(config.data_dir).is_file():
        return
    sealed = sealed_keys(config.data_dir)
    if sealed:
        key_file = config.key_file.absolute()
        raise MasterKeyMissing(
            f"the master key file {key_file} is missing, but the store in "
            f"{config.data_dir.absolute()} holds {sealed} sealed under the original master "
            f"key, which no new key can open. Put it back at {key_file}, or point "
            f"FIELDSYNC_MASTER_KEY_FILE (or {MASTER_KEY_ENV}) at it; nothing was changed"
        )


def sealed_keys(data_dir: Path) -> Sealed:
    """Count the store's sealed keys without writing, or even creating a file beside it."""
    path = db_path(data_dir)
    try:
        with closing(sqlite3.connect(_read_only(path), uri=True, timeout=30)) as conn:
            (data_keys,) = conn.execute("SELECT count(*) FROM data_keys").fetchone()
            chain = conn.execute("SELECT 1 FROM meta WHERE key=?", (KEY_META,)).fetchone()
    except sqlite3.DatabaseError as exc:  # not SQLite, or not ours
        raise NoStore(
            f"{path.absolute()} is not a fieldsync store ({exc}); nothing was changed"
        ) from exc
    return Sealed(int(data_keys), chain is not None)


def _read_only(path: Path) -> str:
    """A URI that reads ``path`` as it is.

    Without a write-ahead log beside it the file holds everything and no one has
    it open for writing: read it as immutable (no ``-wal``/``-shm`` made and
    removed).  With one (a server running, or one that crashed) read it read-only:
    a read-write connection closing last would checkpoint the log into the file.
    """
    uri = path.absolute().as_uri()
    wal = path.with_name(path.name + "-wal")
    return f"{uri}?mode=ro" if wal.exists() else f"{uri}?immutable=1"


def create(config: Config) -> list[Path]:
    """Make what the data dir lacks (directory, store, master key file): what was made.

    A complete data dir is left byte for byte as it was (an empty list).
    """
    check_master_key(config)
    made: list[Path] = []
    path = db_path(config.data_dir)
    try:
        if not path.is_file():
            made += [] if config.data_dir.is_dir() else [config.data_dir]
            initialise(path)
            made.append(path)
        if not _master_key_at_hand(config):
            key_from_file(config.key_file, create=True)
            made.append(config.key_file)
    except (OSError, sqlite3.Error) as exc:  # not a directory, no permission, disk full
        where = config.data_dir.absolute()
        raise FieldsyncError(f"cannot create the data dir at {where}: {exc}") from exc
    return made


def _master_key_at_hand(config: Config) -> bool:
    """The master key comes from the environment, or its file is there."""
    return bool(os.environ.get(MASTER_KEY_ENV)) or config.key_file.exists()
