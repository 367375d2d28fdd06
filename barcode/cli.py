"""The ``fieldsync patient-id`` commands.

    fieldsync patient-id check ID [--scheme luhn30|luhn10|verhoeff]
        prints ``valid`` (exit 0) or the reason it is not (exit 1)

Each leaf parser sets ``func``: it takes the parsed arguments and returns the
exit code, so the top-level CLI ends with ``return args.func(args)``.
"""

from __future__ import annotations

import argparse

from barcode.checkdigit import Scheme, validate


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``patient-id`` command group to the top-level CLI."""
    group = subparsers.add_parser("patient-id", help="check and allocate check-digit patient IDs")
    commands = group.add_subparsers(dest="patient_id_command", metavar="COMMAND", required=True)
    _add_check(commands)
    # `patient-id new` goes here: allocating a unique ID needs the store, so its
    # _add_new(commands) belongs with the barcode service layer, not with the
    # pure check digits this command uses.


def _add_check(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check",
        help="say whether a patient ID's check digit is right",
        description="Spaces, hyphens and letter case are ignored.",
    )
    check.add_argument("id", metavar="ID", help="the patient ID, as printed or typed")
    check.add_argument(
        "--scheme",
        choices=[scheme.value for scheme in Scheme],
        default=Scheme.LUHN30.value,
        help="check-digit scheme (default: %(default)s, as OpenMRS idgen's LuhnMod30)",
    )
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Print ``valid`` or the reason; 0 when valid, 1 when not."""
    result = validate(args.id, Scheme(args.scheme))
    print("valid" if result.valid else result.reason)
    return 0 if result.valid else 1
