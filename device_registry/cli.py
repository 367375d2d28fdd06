"""The ``fieldsync device`` commands, for implementers (they act with an admin's reach).

    fieldsync device add SERIAL --imei IMEI [--imei2 IMEI] [--model M] [--phone +E164]
                                [--place PLACE] [--notes TEXT]
    fieldsync device assign SERIAL WORKER [--reason TEXT]
    fieldsync device enrol-code SERIAL [--qr]     prints the one-time code (and a QR)
    fieldsync device mark SERIAL STATUS [--reason TEXT]   (STATUS: lost, stolen, found, ...)
    fieldsync device list [--status S] [--format table|csv|json]

Every command takes ``--data-dir`` and works while the server runs: it goes
through the same device port as the server (``device_registry.backends``: the
data dir's SQLite file, or CouchDB with ``FIELDSYNC_COUCHDB_URL``), so marking a
phone lost here refuses its very next request through every instance.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from device_registry import codes, enrolment, inventory, status
from device_registry.backends import command_ports
from device_registry.model import CSV_COLUMNS, Device
from device_registry.ports import DeviceStore
from device_registry.status import DeviceStatus
from sync.clitools import (
    Commands,
    add_command,
    add_group,
    config_of,
    data_dir_option,
    one_of,
    table,
)
from sync.config import Config
from sync.errors import Conflict
from sync.scopes import UNLIMITED

T = TypeVar("T")


STATUSES = tuple(s.value for s in DeviceStatus)
STATUS_WORDS = (*STATUSES, *status.BACK_TO_STOCK)
LIST_FORMATS = ("table", "csv", "json")
STATUS_NOTE = f"""\
statuses: {one_of(STATUSES)}
  ({one_of(status.BACK_TO_STOCK)} mean back to in_stock)"""
DESCRIPTION = f"""\
The phone inventory. A phone is added in stock, assigned to a worker, given a
one-time enrolment code for the app, and marked when it is lost, stolen, in
repair, found again or retired. Marking a phone anything but assigned revokes
it at once, even while the server runs.

{STATUS_NOTE}"""


def register(subparsers: Commands) -> None:
    """Add the ``device`` command group to the top-level CLI."""
    commands = add_group(
        subparsers,
        "device",
        "the phone inventory: add, assign, enrol, mark lost or found",
        DESCRIPTION,
    )
    _add_add(commands)
    assign = add_command(
        commands,
        "assign",
        "hand a phone to a CHW or supervisor",
        "Hand a phone to a CHW or supervisor; a phone assigned to someone else\n"
        "is reassigned (its enrolment is revoked).",
    )
    assign.add_argument("serial", metavar="SERIAL", help="the phone's serial number")
    assign.add_argument("worker", metavar="WORKER", help="the user name of the worker")
    assign.add_argument("--reason", default="", metavar="TEXT", help="why, for the history")
    _finish(assign, run_assign)
    _add_enrol_code(commands)
    _add_mark(commands)
    listing = add_command(commands, "list", "list the inventory")
    listing.add_argument(
        "--status",
        choices=STATUS_WORDS,
        type=status.normalise,
        metavar="STATUS",
        help=f"only phones with this status: {one_of(STATUS_WORDS)}",
    )
    listing.add_argument(
        "--format",
        choices=LIST_FORMATS,
        default="table",
        help=f"{one_of(LIST_FORMATS)} (default: %(default)s)",
    )
    _finish(listing, run_list)


def _add_add(commands: Commands) -> None:
    add = add_command(commands, "add", "add a phone to the inventory (in stock)")
    add.add_argument("serial", metavar="SERIAL", help="the phone's serial number")
    add.add_argument(
        "--imei", required=True, metavar="IMEI", help="15 digits; the check digit is verified"
    )
    add.add_argument("--imei2", metavar="IMEI", help="the second IMEI of a dual-SIM phone")
    add.add_argument("--model", default="", metavar="MODEL", help="make and model")
    add.add_argument("--os-version", default="", metavar="VERSION", help="Android version")
    add.add_argument(
        "--phone", metavar="+E164", help="the SIM's phone number, international (+254712345678)"
    )
    add.add_argument("--place", metavar="ID", help="the place that keeps the phone while in stock")
    add.add_argument("--notes", default="", metavar="TEXT", help="anything worth knowing")
    _finish(add, run_add)


def _add_enrol_code(commands: Commands) -> None:
    code = add_command(
        commands,
        "enrol-code",
        "issue a one-time enrolment code for an assigned phone",
        "Issue a one-time code that enrols the app on an assigned phone, for its\n"
        "worker. It expires in a day; a new code voids the old one. The code goes to\n"
        "standard output, what it is for to standard error.",
    )
    code.add_argument("serial", metavar="SERIAL", help="the phone's serial number")
    code.add_argument("--qr", action="store_true", help="also print the code as a QR code")
    code.add_argument(
        "--server", metavar="URL", help="the server's URL, put in the QR code for the app"
    )
    _finish(code, run_enrol_code)


def _add_mark(commands: Commands) -> None:
    mark = add_command(
        commands,
        "mark",
        "change a phone's status (revokes it unless assigned)",
        "Change a phone's status. Anything but assigned revokes its enrolment at\n"
        f"once; a phone found again goes back to stock, to be assigned anew.\n\n{STATUS_NOTE}",
    )
    mark.add_argument("serial", metavar="SERIAL", help="the phone's serial number")
    mark.add_argument(
        "status",
        choices=STATUS_WORDS,
        type=status.normalise,
        metavar="STATUS",
        help=f"its new status: {one_of(STATUS_WORDS)}",
    )
    mark.add_argument("--reason", default="", metavar="TEXT", help="why, for the history")
    _finish(mark, run_mark)


def _finish(parser: argparse.ArgumentParser, func: Callable[[argparse.Namespace], int]) -> None:
    data_dir_option(parser)
    parser.set_defaults(func=func)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _run(args: argparse.Namespace, call: Callable[[DeviceStore], Awaitable[T]]) -> T:
    """``call(port)`` on the configured adapter, on a thread of its own (so a command
    also works when called from code that already runs an event loop)."""
    config = config_of(args)
    with ThreadPoolExecutor(1, thread_name_prefix="fieldsync-command") as pool:
        return pool.submit(asyncio.run, _on_port(config, call)).result()


async def _on_port(config: Config, call: Callable[[DeviceStore], Awaitable[T]]) -> T:
    async with command_ports(config) as ports:
        return await call(ports.store)


def run_add(args: argparse.Namespace) -> int:
    new = inventory.validate_new(
        args.serial,
        args.imei,
        args.imei2,
        args.model,
        args.os_version,
        args.phone,
        args.place,
        args.notes,
    )
    device = _run(args, lambda port: port.add(new, _actor(), UNLIMITED, None, None))
    print(f"device {device.serial} added (in stock)")
    return 0


def run_assign(args: argparse.Namespace) -> int:
    device = _run(
        args,
        lambda port: port.assign(args.serial, args.worker, _actor(), UNLIMITED, args.reason, None),
    )
    print(f"device {device.serial} assigned to {device.worker}")
    return 0


def run_enrol_code(args: argparse.Namespace) -> int:
    try:
        issued = _run(
            args, lambda port: port.issue_code(args.serial, _actor(), UNLIMITED, None, None)
        )
    except enrolment.NotAssigned as exc:
        raise Conflict(_what_to_type(exc), error=exc.error_token) from exc
    print(issued.code)
    print(
        f"for {issued.worker} on device {issued.serial}; single use, expires {issued.expires}",
        file=sys.stderr,
    )
    if args.qr:
        import segno

        payload = codes.qr_payload(issued.code, issued.serial, args.server)
        segno.make(payload, error="m").terminal(compact=True)
    return 0


def _what_to_type(refusal: enrolment.NotAssigned) -> str:
    """The refusal, with the commands that make the phone ready for a code."""
    device, steps = refusal.device, refusal.steps
    if not steps:
        return refusal.reason
    todo, before = [], device.status
    for after, words in zip(steps, enrolment.step_words(before, steps), strict=True):
        todo.append(f"{words} ({_command(device.serial, before, after)})")
        before = after
    return (
        f"device {device.serial} is {device.status.value}: {', then '.join(todo)}, "
        "before issuing an enrolment code"
    )


def _command(serial: str, current: DeviceStatus, target: DeviceStatus) -> str:
    if target is DeviceStatus.ASSIGNED:
        return f"fieldsync device assign {serial} WORKER"
    word = status.label(current, target).lower()
    said = word if word in STATUS_WORDS and status.parse(word) is target else target.value
    return f"fieldsync device mark {serial} {said}"


def run_mark(args: argparse.Namespace) -> int:
    target = status.parse(args.status)
    device = _run(
        args,
        lambda port: port.mark(args.serial, target, _actor(), UNLIMITED, args.reason, None),
    )
    print(f"device {device.serial} is now {device.status.value}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    wanted = status.parse(args.status) if args.status else None
    devices = [d for d in _run(args, lambda port: port.list_all()) if wanted in (None, d.status)]
    if args.format == "json":
        print(json.dumps([d.to_json() for d in devices], indent=2))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(d.csv_row() for d in devices)
    else:
        print(_table(devices))
    return 0


def _table(devices: list[Device]) -> str:
    head = ("SERIAL", "STATUS", "WORKER", "PHONE", "MODEL", "LAST SYNC")
    rows = [(d.serial, d.status.value, d.worker, d.phone, d.model, d.last_sync) for d in devices]
    return table(head, [[str(v) if v else "-" for v in row] for row in rows])
