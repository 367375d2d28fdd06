"""What every ``fieldsync`` command module builds with: parsers, the data dir, the store.

The top-level command (:mod:`sync.cli`) and each package's command group (an
``AddCommands`` of :mod:`sync.extensions`) use these, so that every command's
help reads alike and every command finds its data dir the same way:

    add_group(sub, "device", summary)          a command group: ``fieldsync device ...``
    add_command(group, "list", summary)        a command whose --help shows its text as written
    data_dir_option(parser)                    ``--data-dir DIR`` (default ./data or
                                               FIELDSYNC_DATA_DIR)
    config_of(args)                            the settings, with the data dir given
    with_conn(args, fn)                        ``fn(conn)`` in one transaction on its store
    audited(args, action, detail, fn)          the same, with its audit entry in that transaction
    one_of(values), table(head, rows)          help and output text
"""

from __future__ import annotations

import argparse
import dataclasses
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sync.audit_store import embedded as embedded_audit
from sync.config import Config, from_env
from sync.datakeys import embedded_admin
from sync.keys import load_master_key
from sync.store.schema import with_file

T = TypeVar("T")
DATA_DIR_ENV = "FIELDSYNC_DATA_DIR"
HELP_FORMAT = argparse.RawDescriptionHelpFormatter
Commands = Any  # argparse's sub-parsers action (generic only to type checkers)


def add_command(
    sub: Commands,
    name: str,
    summary: str,
    description: str | None = None,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """A (sub)command whose --help shows ``description`` and ``epilog`` as written.

    ``summary`` is its line in the parent's list; the description defaults to it.
    """
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description or f"{summary[:1].upper()}{summary[1:]}.",
        epilog=epilog,
        formatter_class=HELP_FORMAT,
    )
    return parser


def add_group(sub: Commands, name: str, summary: str, description: str | None = None) -> Commands:
    """A command group (``fieldsync NAME COMMAND``): its parser's sub-parsers action."""
    group = add_command(sub, name, summary, description)
    return group.add_subparsers(
        dest=f"{name.replace('-', '_')}_command", metavar="COMMAND", required=True, title="commands"
    )


def one_of(values: Iterable[str]) -> str:
    """Valid values for a help text, from their one source (an enum, a tuple)."""
    return ", ".join(values)


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Aligned columns under a header row, two spaces apart, no trailing blanks."""
    cells = [list(head), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def data_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--data-dir DIR``: a command that takes it works only on an existing data dir
    (checked by ``sync.cli.main`` before the command runs), unless it makes its own."""
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"the data dir to work on (default: ./data, or {DATA_DIR_ENV})",
    )


def config_of(args: argparse.Namespace) -> Config:
    """The settings (``FIELDSYNC_*``), with the data dir ``--data-dir`` names."""
    config = from_env()
    if getattr(args, "data_dir", None):
        config = dataclasses.replace(config, data_dir=Path(args.data_dir))
    return config


def with_conn(args: argparse.Namespace, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn(conn)`` in one transaction on the store of the command's data dir."""
    return with_file(config_of(args).data_dir, fn)


def audited(
    args: argparse.Namespace,
    action: str,
    detail: str | Callable[[T], str],
    fn: Callable[[sqlite3.Connection], T],
) -> T:
    """``fn`` and its audit entry (actor ``cli:<os user>``) in one transaction.

    ``detail`` may be worked out from ``fn``'s result (before and after a change).
    """
    config = config_of(args)
    master = load_master_key(config.key_file, create=False)

    def run(conn: sqlite3.Connection) -> T:
        embedded_admin.check_master(conn, master)
        result = fn(conn)
        said = detail if isinstance(detail, str) else detail(result)
        embedded_audit.note_cli(conn, master, action, said)
        return result

    return with_file(config.data_dir, run)
