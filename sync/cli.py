"""The ``fieldsync`` command: init, serve, and manage places, users and keys.

``fieldsync init`` makes a data dir (``serve`` makes one too); every other
command that takes ``--data-dir`` works only on one that exists, and refuses a
directory without a store before writing anything (:mod:`sync.opening`).
Management commands open the same SQLite file as a running server (WAL), so
they work while it runs; a changed scope takes effect on the user's next request.
The ``keys`` commands that change keys (:mod:`sync.keycli`) need it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import logging
import os
import sqlite3
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog
from aiohttp import web

from sync import accounts, audit, keyadmin, opening, sessions
from sync.config import Config, ConfigError, from_env
from sync.errors import FieldsyncError
from sync.keys import MASTER_KEY_ENV, load_master_key
from sync.store.schema import with_file

T = TypeVar("T")
PASSWORD_ENV = "FIELDSYNC_PASSWORD"
log = structlog.get_logger("fieldsync")


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def _config(args: argparse.Namespace) -> Config:
    config = from_env()
    if getattr(args, "data_dir", None):
        config = dataclasses.replace(config, data_dir=Path(args.data_dir))
    return config


def _with_conn(args: argparse.Namespace, fn: Callable[[sqlite3.Connection], T]) -> T:
    return with_file(_config(args).data_dir, fn)


def _audited(
    args: argparse.Namespace, action: str, detail: str, fn: Callable[[sqlite3.Connection], T]
) -> T:
    """``fn`` and its audit entry (actor ``cli:<os user>``) in one transaction."""
    config = _config(args)
    master = load_master_key(config.key_file, create=False)

    def run(conn: sqlite3.Connection) -> T:
        keyadmin.check_master(conn, master)
        result = fn(conn)
        audit.chain(conn, master).note(conn, audit.cli_actor(), action, detail)
        return result

    return with_file(config.data_dir, run)


# -- init and serve: the commands that may create a data dir -------------------------
def cmd_init(args: argparse.Namespace) -> int:
    config = _config(args)
    where = config.data_dir.absolute()
    made = opening.create(config)
    if not made:
        print(f"fieldsync data dir at {where} is already initialised; nothing changed")
        return 0
    print(
        f"fieldsync data dir ready at {where}; made: {', '.join(str(p.absolute()) for p in made)}"
    )
    if config.key_file in made:
        print(
            f"keep a copy of {config.key_file.absolute()} somewhere safe: without it the "
            "data in this data dir cannot be read"
        )
    elif os.environ.get(MASTER_KEY_ENV):
        print(f"master key: from {MASTER_KEY_ENV} (no key file written)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from sync.app import create_app
    from sync.serving import serve

    configure_logging()
    config = _config(args)
    config = dataclasses.replace(
        config, host=args.host or config.host, port=args.port or config.port
    )
    ssl_context = None
    if config.tls_cert is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        ssl_context.load_cert_chain(config.tls_cert, config.tls_key)
    app = create_app(config)
    scheme = "https" if ssl_context else "http"

    async def announce(_: web.Application) -> None:
        log.info(
            "listening",
            url=f"{scheme}://{config.host}:{config.port}/",
            db=config.db_name,
            data_dir=str(config.data_dir),
        )

    app.on_startup.append(announce)
    serve(app, config, ssl_context)
    return 0


# -- places and users ------------------------------------------------------------------
def cmd_place_add(args: argparse.Namespace) -> int:
    detail = f"place {args.id}, parent {args.parent or '-'}"
    place = _audited(
        args, "place_add", detail, lambda c: accounts.add_place(c, args.id, args.parent, args.name)
    )
    print(f"place {place.id} added")
    return 0


def cmd_place_list(args: argparse.Namespace) -> int:
    for place in _with_conn(args, accounts.list_places):
        print(f"{place.id}\t{place.parent or '-'}\t{place.name}")
    return 0


def _password() -> str:
    if PASSWORD_ENV in os.environ:
        return os.environ[PASSWORD_ENV]
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    return sys.stdin.readline().rstrip("\n")


def cmd_user_add(args: argparse.Namespace) -> int:
    role = accounts.parse_role(args.role)
    password = _password()
    detail = f"user {args.name}: role {role.value}, {_scope(args)}"
    _audited(
        args,
        "user_add",
        detail,
        lambda c: accounts.add_user(c, args.name, role, password, args.place, args.read_place),
    )
    print(f"user {args.name} added ({role.value})")
    return 0


def cmd_user_set_places(args: argparse.Namespace) -> int:
    _audited(
        args,
        "user_places",
        f"user {args.name}: {_scope(args)}",
        lambda c: accounts.set_places(c, args.name, args.place, args.read_place),
    )
    print(f"user {args.name}: places {args.place or '-'}, read-only {args.read_place or '-'}")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    password = _password()
    _audited(
        args,
        "user_password",
        f"user {args.name}: password set",
        lambda c: accounts.set_password(c, args.name, password),
    )
    print(f"user {args.name}: password changed")
    return 0


def cmd_user_logout(args: argparse.Namespace) -> int:
    ended = _audited(
        args,
        "user_logout",
        f"user {args.name}: every session ended",
        lambda c: sessions.logout_user(c, args.name),
    )
    print(f"user {args.name}: {ended} session(s) ended")
    return 0


def _scope(args: argparse.Namespace) -> str:
    return f"places {','.join(args.place) or '-'}, read {','.join(args.read_place) or '-'}"


def cmd_user_list(args: argparse.Namespace) -> int:
    for user in _with_conn(args, accounts.list_users):
        places, read = ",".join(user.places) or "-", ",".join(user.read_places) or "-"
        print(f"{user.name}\t{user.role.value}\t{places}\t{read}")
    return 0


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="data directory (default ./data or FIELDSYNC_DATA_DIR)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fieldsync", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser(
        "init", help="create a data dir: the store and the master key (changes nothing if done)"
    )
    _data_dir(init)
    init.set_defaults(func=cmd_init, creates_data_dir=True)
    serve = sub.add_parser("serve", help="start the server (creating the data dir if new)")
    _data_dir(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 5984)")
    serve.set_defaults(func=cmd_serve, creates_data_dir=True)
    _place_commands(sub)
    _user_commands(sub)
    _domain_commands(sub)
    return parser


def _place_commands(sub: Any) -> None:
    place = sub.add_parser("place", help="manage places").add_subparsers(
        dest="action", required=True
    )
    add = place.add_parser("add", help="add a place")
    add.add_argument("id")
    add.add_argument("--parent")
    add.add_argument("--name")
    _data_dir(add)
    add.set_defaults(func=cmd_place_add)
    listing = place.add_parser("list", help="list places")
    _data_dir(listing)
    listing.set_defaults(func=cmd_place_list)


def _user_commands(sub: Any) -> None:
    user = sub.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    add = user.add_parser("add", help=f"add a user (password from {PASSWORD_ENV} or stdin)")
    add.add_argument("name")
    add.add_argument("--role", required=True)
    _scope_args(add)
    add.set_defaults(func=cmd_user_add)
    setp = user.add_parser("set-places", help="replace a user's scope")
    setp.add_argument("name")
    _scope_args(setp)
    setp.set_defaults(func=cmd_user_set_places)
    passwd = user.add_parser("passwd", help=f"set a password (from {PASSWORD_ENV} or stdin)")
    passwd.add_argument("name")
    _data_dir(passwd)
    passwd.set_defaults(func=cmd_user_passwd)
    listing = user.add_parser("list", help="list users")
    _data_dir(listing)
    listing.set_defaults(func=cmd_user_list)
    logout = user.add_parser("logout", help="end every session of a user (server running or not)")
    logout.add_argument("name")
    _data_dir(logout)
    logout.set_defaults(func=cmd_user_logout)


def _scope_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--place", action="append", default=[], help="capture scope (write + read)")
    parser.add_argument("--read-place", action="append", default=[], help="read-only scope")
    _data_dir(parser)


def _domain_commands(sub: Any) -> None:
    """Packages' command groups (CLI extension point); ``--data-dir`` ones are checked in main."""
    from barcode.cli import register as register_patient_ids
    from device_registry.cli import register as register_devices
    from sms_gateway.cli import register as register_sms
    from sync.auditcli import register as register_audit
    from sync.keycli import register as register_keys

    register_keys(sub)
    register_audit(sub)
    register_patient_ids(sub)
    register_devices(sub)
    register_sms(sub)


def _open(args: argparse.Namespace) -> None:
    """A command that takes ``--data-dir`` works on an existing one, unless it makes its own.

    Checked here, once for every command (a package's too), before the command runs.
    """
    if "data_dir" in vars(args) and not getattr(args, "creates_data_dir", False):
        opening.existing(_config(args))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _open(args)
        code: int = args.func(args)
    except FieldsyncError as exc:
        print(f"fieldsync: {exc.reason}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"fieldsync: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
