"""The ``fieldsync patient-id`` commands.

    fieldsync patient-id check ID [--scheme luhn30|luhn10|verhoeff]
        prints ``valid`` (exit 0) or the reason it is not (exit 1)
    fieldsync patient-id new [--count N] [--sheet FILE.pdf] [--data-dir DIR]
        allocates N new IDs (default 1), prints one a line; --sheet also
        writes a PDF of their cards, with a line for the name
    fieldsync patient-id retire ID [--reason TEXT] [--data-dir DIR]
        retires an ID for good: it is never allocated again
    fieldsync patient-id card ID [--name NAME] --out FILE.png|FILE.svg|FILE.pdf
        draws one card (no store needed)

Allocation goes through the configured patient-ID store (barcode.backends):
the server's SQLite file (WAL, ``BEGIN IMMEDIATE``), as the other management
commands do, or CouchDB when ``FIELDSYNC_COUCHDB_URL`` is set; either way it
is safe while the server (or several of them) runs.  Each leaf
parser sets ``func``: it takes the parsed arguments and returns the exit
code, so the top-level CLI ends with ``return args.func(args)``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from barcode import cards, sheet
from barcode.backends import patient_id_store
from barcode.checkdigit import Scheme, validate
from barcode.ports import PatientIdStore
from barcode.settings import BarcodeSettings
from sync.clitools import Commands, add_command, add_group, data_dir_option, one_of
from sync.config import Config, from_env

T = TypeVar("T")


SCHEMES = tuple(scheme.value for scheme in Scheme)


def register(subparsers: Commands) -> None:
    """Add the ``patient-id`` command group to the top-level CLI."""
    commands = add_group(
        subparsers,
        "patient-id",
        "check and allocate check-digit patient IDs, draw their cards",
        "Patient IDs carry a check digit, so a mistyped ID is caught where it is\n"
        "typed. New IDs are allocated from the data dir, each once; a card (or a\n"
        "sheet of them) carries the ID as text and as a barcode.",
    )
    _add_check(commands)
    _add_new(commands)
    _add_retire(commands)
    _add_card(commands)


def _add_check(commands: Commands) -> None:
    check = add_command(
        commands,
        "check",
        "say whether a patient ID's check digit is right",
        'Print "valid" (exit 0) or why the ID is not (exit 1). Spaces, hyphens\n'
        "and letter case are ignored.",
    )
    check.add_argument("id", metavar="ID", help="the patient ID, as printed or typed")
    check.add_argument(
        "--scheme",
        choices=SCHEMES,
        default=Scheme.LUHN30.value,
        metavar="SCHEME",
        help=f"the check-digit scheme: {one_of(SCHEMES)} "
        "(default: %(default)s, as OpenMRS idgen's LuhnMod30)",
    )
    check.set_defaults(func=run_check)


def _add_new(commands: Commands) -> None:
    new = add_command(
        commands,
        "new",
        "allocate new patient IDs",
        "Allocate new patient IDs, never given before, and print one a line. Safe\n"
        "while the server runs.",
    )
    new.add_argument(
        "--count", type=int, default=1, metavar="N", help="how many (default: %(default)s)"
    )
    new.add_argument(
        "--sheet", type=Path, metavar="FILE.pdf", help="also write a PDF sheet of their cards"
    )
    data_dir_option(new)
    new.set_defaults(func=run_new)


def _add_retire(commands: Commands) -> None:
    retire = add_command(
        commands,
        "retire",
        "retire a patient ID so it is never reused",
        "Retire a patient ID for good: it is never allocated again.",
    )
    retire.add_argument("id", metavar="ID", help="the patient ID to retire")
    retire.add_argument("--reason", default="", metavar="TEXT", help="why, for the record")
    data_dir_option(retire)
    retire.set_defaults(func=run_retire)


def _add_card(commands: Commands) -> None:
    card = add_command(
        commands,
        "card",
        "draw a patient's ID card",
        "Draw one patient's ID card to a file; the file name's ending (.png, .svg\n"
        "or .pdf) chooses the format. Needs no data dir.",
    )
    card.add_argument("id", metavar="ID", help="the patient ID (its check digit is verified)")
    card.add_argument("--name", help="the patient's name (default: a line to write it on)")
    card.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE",
        help="the file to write: FILE.png, FILE.svg or FILE.pdf",
    )
    card.set_defaults(func=run_card)


def run_check(args: argparse.Namespace) -> int:
    """Print ``valid`` or the reason; 0 when valid, 1 when not."""
    result = validate(args.id, Scheme(args.scheme))
    print("valid" if result.valid else result.reason)
    return 0 if result.valid else 1


def run_new(args: argparse.Namespace) -> int:
    config = _config(args)
    settings = _settings(config)
    if not 1 <= args.count <= settings.max_batch:
        print(f"--count must be between 1 and {settings.max_batch}")
        return 1
    fmt, by = settings.id_format, f"cli:{_who()}"
    ids = _with_store(config, lambda store: store.allocate(fmt, args.count, by))
    for patient_id in ids:
        print(patient_id)
    if args.sheet is not None:
        args.sheet.write_bytes(sheet.render_pdf([cards.layout(i) for i in ids]))
    return 0


def run_retire(args: argparse.Namespace) -> int:
    config = _config(args)
    fmt, by = _settings(config).id_format, f"cli:{_who()}"
    try:
        retired = _with_store(config, lambda store: store.retire(fmt, args.id, by, args.reason))
    except ValueError as exc:
        print(exc)
        return 1
    print(f"{retired} retired")
    return 0


def run_card(args: argparse.Namespace) -> int:
    result = validate(args.id)
    if not result.valid:
        print(result.reason)
        return 1
    layout = cards.layout(result.id, args.name)
    suffix = args.out.suffix.lower()
    if suffix == ".png":
        args.out.write_bytes(cards.render_png(layout))
    elif suffix == ".svg":
        args.out.write_text(cards.render_svg(layout), encoding="utf-8")
    elif suffix == ".pdf":
        args.out.write_bytes(sheet.render_pdf([layout]))
    else:
        print("--out must end in .png, .svg or .pdf")
        return 1
    return 0


def _config(args: argparse.Namespace) -> Config:
    config = from_env()
    if getattr(args, "data_dir", None):
        config = replace(config, data_dir=Path(args.data_dir))
    return config


def _settings(config: Config) -> BarcodeSettings:
    return BarcodeSettings.from_mapping(config.extra.get("barcode", {}))


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _with_store(config: Config, fn: Callable[[PatientIdStore], Awaitable[T]]) -> T:
    """Run ``fn`` on the configured patient-ID store (barcode.backends)."""

    async def run() -> T:
        async with patient_id_store(config) as store:
            return await fn(store)

    return asyncio.run(run())
