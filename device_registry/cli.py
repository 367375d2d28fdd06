"""The ``fieldsync device`` commands, for implementers (they act with an admin's reach).

    fieldsync device add SERIAL --imei IMEI [--imei2 IMEI] [--model M] [--phone +E164]
                                [--place PLACE] [--notes TEXT]
    fieldsync device assign SERIAL WORKER [--reason TEXT]
    fieldsync device enrol-code SERIAL [--qr]     prints the one-time code (and a QR)
    fieldsync device mark SERIAL STATUS [--reason TEXT]   (STATUS: lost, stolen, found, ...)
    fieldsync device list [--status S] [--format table|csv|json]

Every command takes ``--data-dir`` and works while the server runs (the same
SQLite file, WAL): marking a phone lost here refuses its very next request.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import sqlite3
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from device_registry import codes, enrolment, inventory, schema, status
from device_registry.model import CSV_COLUMNS, Device
from sync.cli import _data_dir, _with_conn
from sync.scopes import UNLIMITED

T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``device`` command group to the top-level CLI."""
    group = subparsers.add_parser("device", help="the phone inventory: add, assign, enrol, mark")
    commands = group.add_subparsers(dest="device_command", metavar="COMMAND", required=True)
    add = commands.add_parser("add", help="add a phone to the inventory (in stock)")
    add.add_argument("serial", metavar="SERIAL")
    add.add_argument("--imei", required=True, help="15 digits; the check digit is verified")
    add.add_argument("--imei2", help="second IMEI of a dual-SIM phone")
    add.add_argument("--model", default="")
    add.add_argument("--os-version", default="")
    add.add_argument("--phone", help="SIM phone number, E.164 (+254712345678)")
    add.add_argument("--place", help="where the phone is kept while in stock")
    add.add_argument("--notes", default="")
    _finish(add, run_add)
    assign = commands.add_parser("assign", help="hand a phone to a CHW or supervisor")
    assign.add_argument("serial", metavar="SERIAL")
    assign.add_argument("worker", metavar="WORKER")
    assign.add_argument("--reason", default="")
    _finish(assign, run_assign)
    code = commands.add_parser("enrol-code", help="issue a one-time enrolment code")
    code.add_argument("serial", metavar="SERIAL")
    code.add_argument("--qr", action="store_true", help="also print the code as a QR code")
    code.add_argument("--server", help="server URL to put in the QR code for the app")
    _finish(code, run_enrol_code)
    mark = commands.add_parser("mark", help="change a phone's status (revokes it unless assigned)")
    mark.add_argument("serial", metavar="SERIAL")
    mark.add_argument("status", metavar="STATUS", help="lost, stolen, found, in_repair, retired…")
    mark.add_argument("--reason", default="")
    _finish(mark, run_mark)
    listing = commands.add_parser("list", help="list the inventory")
    listing.add_argument("--status", help="only devices with this status")
    listing.add_argument("--format", choices=("table", "csv", "json"), default="table")
    _finish(listing, run_list)


def _finish(parser: argparse.ArgumentParser, func: Callable[[argparse.Namespace], int]) -> None:
    _data_dir(parser)
    parser.set_defaults(func=func)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _run(args: argparse.Namespace, fn: Callable[[sqlite3.Connection], T]) -> T:
    def with_tables(conn: sqlite3.Connection) -> T:
        schema.ensure(conn)
        return fn(conn)

    return _with_conn(args, with_tables)


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
    device = _run(args, lambda conn: inventory.add(conn, new, _actor(), UNLIMITED))
    print(f"device {device.serial} added (in stock)")
    return 0


def run_assign(args: argparse.Namespace) -> int:
    device = _run(
        args,
        lambda conn: inventory.assign(
            conn, args.serial, args.worker, _actor(), UNLIMITED, args.reason
        ),
    )
    print(f"device {device.serial} assigned to {device.worker}")
    return 0


def run_enrol_code(args: argparse.Namespace) -> int:
    issued = _run(args, lambda conn: enrolment.issue_code(conn, args.serial, _actor(), UNLIMITED))
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


def run_mark(args: argparse.Namespace) -> int:
    target = status.parse(args.status)
    device = _run(
        args,
        lambda conn: inventory.mark(conn, args.serial, target, _actor(), UNLIMITED, args.reason),
    )
    print(f"device {device.serial} is now {device.status.value}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    wanted = status.parse(args.status) if args.status else None
    devices = [d for d in _run(args, inventory.list_all) if wanted in (None, d.status)]
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
    rows: list[tuple[Any, ...]] = [head]
    for d in devices:
        rows.append((d.serial, d.status.value, d.worker, d.phone, d.model, d.last_sync))
    cells = [[str(v) if v else "-" for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)
