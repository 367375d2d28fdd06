"""Writing a backup archive of a data dir, and restoring one into a new data dir.

What the archive holds (sealed, see :mod:`sync.backup.sealed`)::

    manifest-length(4, big-endian)  manifest(JSON)  store(the SQLite file, store_bytes long)

    manifest = {"store_bytes": N, "master_key": base64, "documents_backend": ...,
                "source": the data dir it was taken from, "fieldsync": version}

The archive is self-sufficient: with K shares it gives back the store (documents,
users, places, devices and their tokens, sealed data keys, the audit chain) *and*
the master key that opens its data keys, so a restore on a new machine serves
the same documents to the same phones with nothing else at hand.  That is why the
archive key is split: the archive is as sensitive as the data dir and its key
file together, and no single custodian can open it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

from sync import keyadmin
from sync.audit_store import embedded as embedded_audit
from sync.backup import sealed, shares
from sync.backup.sealed import ArchiveError, Header
from sync.backup.snapshot import copy_store
from sync.datakeys import embedded_admin
from sync.errors import FieldsyncError
from sync.keys import KeyError_, LocalMasterKey
from sync.store.schema import DB_FILE, connect, db_path, in_transaction

READ_BYTES = 1024 * 1024
MAX_MANIFEST = 1024 * 1024
MASTER_KEY_FILE = "master.key"

Report = Callable[[str], None]


class TargetInUse(FieldsyncError):
    """``restore`` pointed at a data dir that already holds something."""

    status = 409
    error = "target_not_empty"
    default_reason = "A backup is restored only into a new, empty data dir."


@dataclass(frozen=True)
class Written:
    header: Header
    shares: list[shares.Share]
    bytes: int
    pages: int


@dataclass(frozen=True)
class Restored:
    header: Header
    data_dir: Path
    store_bytes: int


# -- backup ----------------------------------------------------------------------------
def write(
    data_dir: Path, master: LocalMasterKey, out: Path, k: int, n: int, report: Report
) -> Written:
    """Snapshot ``data_dir``'s store, seal it (and ``master``) into ``out``, split the key."""
    shares.check_counts(k, n)
    _refuse_existing(out)
    key = secrets.token_bytes(shares.KEY_BYTES)
    archive_id = secrets.token_hex(8).upper()
    header = Header(archive_id, _now(), k, n, sealed.key_check(key, archive_id))
    temporary = data_dir / f".backup-{archive_id}.sqlite3"  # beside the store: same disk, 0600
    partial = out.with_name(f".{out.name}.partial")
    partial.unlink(missing_ok=True)  # left by a backup that was killed: ours, and useless
    try:
        snapshot = copy_store(db_path(data_dir), temporary, _pages(report))
        _opens_everything(temporary, master)
        manifest = _manifest(data_dir, temporary, master, snapshot.size)
        with new_file(partial) as handle:
            writer = sealed.SealingWriter(handle, key, header)
            writer.write(len(manifest).to_bytes(4, "big") + manifest)
            _copy_into(temporary, writer, snapshot.size, report)
            writer.close()
            _durable(handle)
        os.link(partial, out)  # never over a file made meanwhile (FileExistsError)
        _sync_dir(out.parent)
    except FileExistsError as exc:
        raise _exists(out) from exc
    except (OSError, sqlite3.Error) as exc:  # disk full, no permission
        raise FieldsyncError(f"cannot write the backup {out.absolute()}: {exc}") from exc
    finally:
        for leftover in (temporary, partial):
            leftover.unlink(missing_ok=True)
    return Written(header, shares.split(key, archive_id, k, n), out.stat().st_size, snapshot.pages)


def _refuse_existing(out: Path) -> None:
    if out.exists():
        raise _exists(out)
    if not out.parent.is_dir():
        raise FieldsyncError(f"the folder {out.parent.absolute()} for --out does not exist")


def _opens_everything(copy: Path, master: LocalMasterKey) -> None:
    """Refuse a copy whose keys the master key going with it does not all open.

    The master key was read before the copy was made: had ``keys rewrap`` run in
    between, the archive would hold a store its own master key cannot open.
    """
    with closing(sqlite3.connect(copy)) as conn:
        shut = [
            keyadmin.describe(k.place, k.version)
            for k in embedded_admin.list_keys(conn, master)
            if not k.opens
        ]
        chained = conn.execute(
            "SELECT 1 FROM meta WHERE key=?", (embedded_audit.KEY_META,)
        ).fetchone()
        if chained and not shut:
            try:
                embedded_audit.open_chain(conn, master, create=False)
            except KeyError_:
                shut = ["the audit chain key"]
    if shut:
        raise KeyError_(
            f"the master key does not open {len(shut)} key(s) of the copy (first: {shut[0]}); "
            "was the master key changed (keys rewrap) meanwhile? No backup was written: run "
            "it again with the data dir's current master key"
        )


def _exists(out: Path) -> FieldsyncError:
    return FieldsyncError(
        f"{out.absolute()} already exists; a backup never overwrites a file (an older "
        "backup may be the one you need): give a new --out"
    )


def _manifest(data_dir: Path, copy: Path, master: LocalMasterKey, store_bytes: int) -> bytes:
    with closing(sqlite3.connect(copy)) as conn:
        backend = embedded_admin.documents_backend(conn)
    fields = {
        "store_bytes": store_bytes,
        "master_key": base64.b64encode(master.key).decode(),
        "documents_backend": backend,
        "source": str(data_dir.absolute()),
        "fieldsync": _version(),
    }
    return json.dumps(fields).encode()


def _pages(report: Report) -> Callable[[int, int], None]:
    shown = _Tenths(report)
    return lambda done, total: shown(done, total, f"backup: copied {done} of {total} pages")


def _copy_into(path: Path, writer: sealed.SealingWriter, size: int, report: Report) -> None:
    done, shown = 0, _Tenths(report)
    with path.open("rb") as source:
        while block := source.read(READ_BYTES):
            writer.write(block)
            done += len(block)
            shown(done, size, f"backup: sealed {_kib(done)} of {_kib(size)} KiB")


class _Tenths:
    """Reports progress once every tenth of the way, and at the end."""

    def __init__(self, report: Report) -> None:
        self._report = report
        self._shown = -1

    def __call__(self, done: int, total: int, what: str) -> None:
        percent = done * 100 // max(total, 1)
        if percent // 10 != self._shown // 10 or (done == total and percent != self._shown):
            self._shown = percent
            self._report(f"{what} ({percent}%)")


def _kib(size: int) -> str:
    return f"{size // 1024:,}"


# -- restore ---------------------------------------------------------------------------
def restore(archive: Path, given: Sequence[shares.Share], target: Path, report: Report) -> Restored:
    """Open ``archive`` with ``given`` shares into the new data dir ``target``.

    Everything is checked before anything is written (the shares, the target); the
    store is then written to a temporary folder beside ``target``, checked
    (authenticated chunk by chunk, SQLite's integrity check, the master key opens
    its data keys) and only then renamed into place.  Whatever fails on the way
    leaves no trace: never a half-written store that looks valid.
    """
    check_target(target)
    with _open_archive(archive) as source:
        header, raw = sealed.read_header(source)
        key = _key(header, given)
        try:
            size = _restore_into(
                target, sealed.opened(source, key, header, raw), header, given, report
            )
        except (OSError, sqlite3.Error) as exc:  # disk full, no permission, target made meanwhile
            raise FieldsyncError(
                f"cannot restore into {target.absolute()}: {exc}; nothing was left there"
            ) from exc
    return Restored(header, target, size)


def _restore_into(
    target: Path,
    plain: Iterator[bytes],
    header: Header,
    given: Sequence[shares.Share],
    report: Report,
) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.restoring-", dir=target.parent))
    try:
        size = _unpack(plain, work, report)
        _check_store(work, header, given)
        _durable_dir(work)
        if target.exists():
            target.rmdir()  # empty, as checked above (or OSError: it filled up meanwhile)
        work.rename(target)
        _sync_dir(target.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return size


def check_target(target: Path) -> None:
    """Refuse a data dir to restore into that is not new or empty (before anything is read)."""
    where = target.absolute()
    if db_path(target).exists():
        raise TargetInUse(
            f"{where} already holds a fieldsync store ({DB_FILE}); restore never overwrites "
            "one: give a new --data-dir (a folder that does not exist yet, or an empty one)"
        )
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise TargetInUse(
            f"{where} is not an empty folder; restore into a new --data-dir (a folder that "
            "does not exist yet, or an empty one); nothing was changed"
        )


def _open_archive(archive: Path) -> BinaryIO:
    try:
        return archive.open("rb")
    except OSError as exc:
        raise ArchiveError(f"cannot read the archive {archive.absolute()}: {exc.strerror}") from exc


def _key(header: Header, given: Sequence[shares.Share]) -> bytes:
    usable = shares.consistent(given, header.archive_id)
    if (usable[0].threshold, usable[0].shares) != (header.threshold, header.shares):
        raise shares.ShareError(
            f"the shares say {usable[0].threshold} of {usable[0].shares}, the archive "
            f"{header.threshold} of {header.shares}: one of them was altered"
        )
    key = shares.combine(usable)
    if not secrets.compare_digest(sealed.key_check(key, header.archive_id), header.key_check):
        raise shares.ShareError(
            "these shares do not open this archive (each is well formed, so one was altered, "
            "or the archive's header was); nothing was written"
        )
    return key


def _unpack(plain: Iterator[bytes], work: Path, report: Report) -> int:
    """Write the manifest's master key and the store into ``work``: the store's size."""
    stream = _Plain(plain)
    manifest = _read_manifest(stream)
    size, shown = int(manifest["store_bytes"]), _Tenths(report)
    with new_file(work / DB_FILE) as store:
        done = 0
        while done < size:
            block = stream.read_exact(min(READ_BYTES, size - done))
            store.write(block)
            done += len(block)
            shown(done, size, f"restore: wrote {_kib(done)} of {_kib(size)} KiB of the store")
        _durable(store)
    if not stream.at_end():
        raise ArchiveError("the archive holds more than its manifest says: it was not made by us")
    with new_file(work / MASTER_KEY_FILE) as key_file:
        key_file.write(manifest["master_key"].encode() + b"\n")
        _durable(key_file)
    return size


def _read_manifest(stream: _Plain) -> dict[str, Any]:
    length = int.from_bytes(stream.read_exact(4), "big")
    if length > MAX_MANIFEST:
        raise ArchiveError("the archive's manifest is damaged (too long)")
    try:
        manifest = json.loads(stream.read_exact(length))
        int(manifest["store_bytes"])
        base64.b64decode(manifest["master_key"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise ArchiveError("the archive's manifest is damaged") from exc
    return dict(manifest)


def _check_store(work: Path, header: Header, given: Sequence[shares.Share]) -> None:
    """The restored store passes SQLite's integrity check, its master key opens its keys,
    and the restore is on its audit trail."""
    master = LocalMasterKey(base64.b64decode((work / MASTER_KEY_FILE).read_text().strip()))
    with closing(connect(db_path(work), create=False)) as conn:
        (verdict,) = conn.execute("PRAGMA integrity_check").fetchone()
        if verdict != "ok":
            raise ArchiveError(f"the restored store fails SQLite's integrity check: {verdict}")
        numbers = ",".join(str(s.x) for s in given)
        detail = f"restored from backup {header.archive_id} of {header.created} (shares {numbers})"

        def note(c: sqlite3.Connection) -> None:
            embedded_admin.check_master(c, master)
            embedded_audit.note_cli(c, master, "restore", detail)

        in_transaction(conn, note)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class _Plain:
    """Exact reads over the archive's checked plaintext chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                raise ArchiveError("the archive holds less than its manifest says")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def at_end(self) -> bool:
        if self._buffer:
            return False
        return all(not chunk for chunk in self._chunks)


# -- files -----------------------------------------------------------------------------
def new_file(path: Path) -> BinaryIO:
    """A new file, mode 0600 (never an existing one: FileExistsError)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def _durable(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _durable_dir(folder: Path) -> None:
    for path in folder.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    _sync_dir(folder)


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _version() -> str:
    with suppress(metadata.PackageNotFoundError):
        return metadata.version("fieldsync")
    return "unknown"
