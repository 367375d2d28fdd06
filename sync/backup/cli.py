"""The ``fieldsync backup`` and ``fieldsync restore`` commands.

    fieldsync backup --out FILE [--shares 4] [--threshold 3] [--qr DIR] [--data-dir DIR]
        standard output: the shares, one a line (nothing else); progress on standard error
    fieldsync restore FILE --data-dir NEWDIR [--share TEXT ...]
        the shares from --share, else from standard input, one a line

``backup`` works while the server runs; ``restore`` makes a new data dir (the one
command besides ``init`` and ``serve`` that may) and refuses one that holds anything.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import segno
import structlog

from sync.audit_store import embedded as embedded_audit
from sync.backup import archive, shares
from sync.clitools import Commands, add_command, config_of, data_dir_option
from sync.datakeys import embedded_admin
from sync.extensions import Extensions
from sync.keys import MASTER_KEY_ENV, load_master_key
from sync.store.cliconn import with_conn

log = structlog.get_logger("fieldsync.backup")

DEFAULT_SHARES = 4
DEFAULT_THRESHOLD = 3
MASTER_KEY_FILE_ENV = "FIELDSYNC_MASTER_KEY_FILE"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_backup(args: argparse.Namespace) -> int:
    config = config_of(args)
    shares.check_counts(args.threshold, args.shares)
    master = load_master_key(config.key_file, create=False)
    with_conn(args, lambda c: embedded_admin.check_master(c, master))
    backend = with_conn(args, embedded_admin.documents_backend)
    if backend != "embedded":
        _say(
            f"warning: this server keeps its documents in {backend}; the archive holds the "
            "store beside them (users, places, devices, data keys, audit) and the master key, "
            "not the documents: back those up with CouchDB's own tools"
        )
    out = Path(args.out)
    written = archive.write(config.data_dir, master, out, args.threshold, args.shares, _say)
    header = written.header
    for share in written.shares:  # first: an archive whose shares were never shown is lost
        print(share.text(), flush=True)
    if args.qr:
        _write_qr(Path(args.qr), written.shares)
    elif sys.stderr.isatty():  # a custodian at the terminal: each share as a QR code too
        show_qr(written.shares, sys.stderr)
    detail = (
        f"backup {header.archive_id} written to {out.name}: {written.bytes} bytes, "
        f"{header.threshold} of {header.shares} shares"
    )
    with_conn(args, lambda c: embedded_audit.note_cli(c, master, "backup", detail))
    log.info(
        "backup_written",
        archive_id=header.archive_id,
        bytes=written.bytes,
        pages=written.pages,
        threshold=header.threshold,
        shares=header.shares,
    )
    _say(
        f"backup {header.archive_id} written to {out.absolute()} ({written.bytes:,} bytes).\n"
        f"Above, on standard output: its {header.shares} shares, one a line. Give each to a "
        f"different custodian; any {header.threshold} of them open the archive, fewer cannot. "
        "Keep no share beside the archive."
    )
    return 0


def show_qr(made: Iterable[shares.Share], out: TextIO) -> None:
    """Each share as a QR code drawn in text, for a terminal (standard output keeps only
    the shares' text, for ``restore`` to read)."""
    for share in made:
        out.write(f"{share.label()}:\n")
        segno.make(share.text(), error="m").terminal(out=out, compact=True)
    out.flush()


def _write_qr(folder: Path, made: Iterable[shares.Share]) -> None:
    """Each share as a QR code (PNG) and as text (mode 0600), for its custodian to print."""
    folder.mkdir(parents=True, exist_ok=True)
    for share in made:
        stem = folder / f"{share.archive_id}-share-{share.x}-of-{share.shares}"
        picture = io.BytesIO()
        segno.make(share.text(), error="m").save(picture, kind="png", scale=6, border=4)
        text = f"# fieldsync backup {share.label()}\n{share.text()}\n"
        for path, data in (
            (stem.with_suffix(".png"), picture.getvalue()),
            (stem.with_suffix(".txt"), text.encode()),
        ):
            with archive.new_file(path) as handle:
                handle.write(data)
        _say(f"share {share.x}: {stem}.png and {stem.name}.txt")


def cmd_restore(args: argparse.Namespace) -> int:
    config = config_of(args)
    archive.check_target(config.data_dir)  # before asking anyone for a share
    given = _shares(args.share)
    restored = archive.restore(Path(args.archive), given, config.data_dir, _say)
    header = restored.header
    log.info(
        "backup_restored",
        archive_id=header.archive_id,
        created=header.created,
        data_dir=str(restored.data_dir.absolute()),
        shares=[s.x for s in given],
    )
    where = restored.data_dir.absolute()
    print(
        f"backup {header.archive_id} (made {header.created}) restored into {where}, with its "
        f"master key in {where / archive.MASTER_KEY_FILE}. Start it with "
        f"`fieldsync serve --data-dir {where}` (with {MASTER_KEY_ENV} and "
        f"{MASTER_KEY_FILE_ENV} unset, or pointing at that key)."
    )
    return 0


def _shares(from_options: list[str]) -> list[shares.Share]:
    """The shares from ``--share`` (a share, or a file of them), else standard input."""
    if not from_options:
        if sys.stdin.isatty():
            _say("Type or paste the shares, one a line; then Ctrl-D.")
        return _lines(sys.stdin, "standard input")
    found: list[shares.Share] = []
    for number, given in enumerate(from_options, 1):
        if Path(given).is_file():
            with Path(given).open(encoding="utf-8", errors="replace") as handle:
                found += _lines(handle, given)
        else:
            found.append(shares.parse(given, f"--share number {number}"))
    return found


def _lines(lines: Iterable[str], where: str) -> list[shares.Share]:
    """One share a line; blank lines and ``#`` comments (the .txt files' labels) skipped."""
    return [
        shares.parse(line, f"the share on line {number} of {where}")
        for number, line in enumerate(lines, 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


BACKUP_HELP = f"""\
Write an encrypted backup of the data dir while the server runs: a consistent
copy of the store (SQLite's backup API) and the master key, sealed under a new
random key (AES-256-GCM). That key is split into N shares (Shamir's secret
sharing): any K of them open the archive; fewer, and any one alone, cannot.

Standard output holds the shares, one a line and nothing else; progress and
what to do next go to standard error. Give each share to a different custodian
and keep none beside the archive.

The copy is made beside the store first (as large as the store, deleted after),
so the data dir's disk needs room for a second copy of it for a while.

defaults: K={DEFAULT_THRESHOLD} of N={DEFAULT_SHARES} shares"""

RESTORE_HELP = """\
Restore a backup into a new data dir: the store and its master key, exactly as
they were when the backup was made, so a server started on it serves the same
documents to the same phones (their passwords and device tokens still work).

The shares come from --share (a share, or a file of them), or else from
standard input, one a line (blank lines and lines starting with # are skipped,
so the .txt files that backup --qr writes can be given or piped in as they are).
Fewer shares than the backup needs, shares of another backup, a mistyped or a
repeated share: refused, and nothing written.

The data dir must not exist yet, or be empty: restore never overwrites a store.
The archive is checked chunk by chunk as it is read, the restored store must pass
SQLite's integrity check, and only then is the data dir put in place."""


def extend(ext: Extensions) -> None:
    """Register the ``backup`` and ``restore`` commands (:mod:`sync.extensions`)."""
    ext.cli_commands.append(register)


def register(sub: Commands) -> None:
    """Add the ``backup`` and ``restore`` commands to the top-level CLI."""
    backup = add_command(
        sub, "backup", "write an encrypted backup whose key is split among custodians", BACKUP_HELP
    )
    backup.add_argument("--out", required=True, metavar="FILE", help="the archive to write (new)")
    backup.add_argument(
        "--shares",
        type=int,
        default=DEFAULT_SHARES,
        metavar="N",
        help=f"how many shares to make, 2 to {shares.MAX_SHARES} (default: %(default)s)",
    )
    backup.add_argument(
        "--threshold",
        type=int,
        default=DEFAULT_THRESHOLD,
        metavar="K",
        help="how many shares open the archive, 2 to N (default: %(default)s)",
    )
    backup.add_argument(
        "--qr",
        metavar="DIR",
        help="also write each share as a QR code (PNG) and a text file into DIR",
    )
    data_dir_option(backup)
    backup.set_defaults(func=cmd_backup)
    restore = add_command(
        sub, "restore", "restore a backup into a new data dir, with enough shares", RESTORE_HELP
    )
    restore.add_argument("archive", metavar="FILE", help="the archive that backup wrote")
    restore.add_argument(
        "--data-dir",
        required=True,
        metavar="NEWDIR",
        help="the new data dir to restore into (must not exist yet, or be empty)",
    )
    restore.add_argument(
        "--share",
        action="append",
        default=[],
        metavar="TEXT",
        help="a share as backup printed it, or a file of shares such as the .txt files of "
        "backup --qr (repeatable; without it the shares are read from standard input)",
    )
    restore.set_defaults(func=cmd_restore, creates_data_dir=True)
