"""The ``fieldsync`` command: serve, and manage places, users and keys.

Management commands open the same SQLite file as a running server (WAL), so
they work while it runs; a changed scope takes effect on the user's next request.
``keys rewrap`` is the exception: it needs the server stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import logging
import os
import sqlite3
import ssl
import sys
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import structlog
from aiohttp import web

from sync import accounts, datadir, keyadmin, rotation, shredding
from sync.config import Config, ConfigError, from_env
from sync.errors import FieldsyncError
from sync.keys import KeyError_, key_from_file, load_master_key
from sync.store.schema import connect, db_path, with_file

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


# -- serve --------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from sync.app import create_app

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
    web.run_app(
        app,
        host=config.host,
        port=config.port,
        ssl_context=ssl_context,
        print=None,
        access_log=None,
        handle_signals=True,
    )
    return 0


# -- places and users ------------------------------------------------------------------
def cmd_place_add(args: argparse.Namespace) -> int:
    place = _with_conn(args, lambda c: accounts.add_place(c, args.id, args.parent, args.name))
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
    _with_conn(
        args, lambda c: accounts.add_user(c, args.name, role, password, args.place, args.read_place)
    )
    print(f"user {args.name} added ({role.value})")
    return 0


def cmd_user_set_places(args: argparse.Namespace) -> int:
    _with_conn(args, lambda c: accounts.set_places(c, args.name, args.place, args.read_place))
    print(f"user {args.name}: places {args.place or '-'}, read-only {args.read_place or '-'}")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    password = _password()
    _with_conn(args, lambda c: accounts.set_password(c, args.name, password))
    print(f"user {args.name}: password changed")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    for user in _with_conn(args, accounts.list_users):
        places, read = ",".join(user.places) or "-", ",".join(user.read_places) or "-"
        print(f"{user.name}\t{user.role.value}\t{places}\t{read}")
    return 0


# -- keys -----------------------------------------------------------------------------
def cmd_keys_list(args: argparse.Namespace) -> int:
    config = _config(args)
    master = load_master_key(config.key_file, create=False)
    found = _with_conn(args, lambda c: keyadmin.list_keys(c, master))
    if args.format == "json":
        rows = [{**dataclasses.asdict(k), "ref": k.ref} for k in found]
        print(json.dumps(rows, indent=2))
        return 0
    for key in found:
        opens = "opens" if key.opens else "DOES NOT OPEN with the configured master key"
        place = key.place or "(shared documents, local docs, SMS)"
        print(f"{place}\tversion {key.version}\t{key.created}\t{opens}")
    shut = sum(not k.opens for k in found)
    print(f"{len(found)} data keys; {shut} not opened by the configured master key")
    return 1 if shut else 0


def cmd_keys_rewrap(args: argparse.Namespace) -> int:
    """Master-key rotation: the server must be stopped (it holds the old key in memory)."""
    config = _config(args)
    new_file = Path(args.new_key_file)
    with datadir.exclusive(config.data_dir, "re-wrap the data keys"):
        old = load_master_key(config.key_file, create=False)
        created = not new_file.exists()
        new = key_from_file(new_file, create=True)
        if new.key == old.key:
            raise KeyError_("the new master key is the current one; give a new key file")
        done = _with_conn(args, lambda c: keyadmin.rewrap(c, old, new))
    made = f"new master key written to {new_file} (mode 0600); " if created else ""
    print(
        f"{made}{done.rewrapped} data keys re-wrapped, {done.already} already under the new "
        f"key. Start the server with FIELDSYNC_MASTER_KEY_FILE={new_file} (or put that file "
        "in place of the old one); keep the old key until the server has started with the new."
    )
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """New data-key versions, every blob re-sealed under them, the old versions deleted."""
    config = _config(args)
    if bool(args.place) == args.all:
        raise KeyError_("name the places to rotate (--place, repeatable) or give --all")
    with datadir.exclusive(config.data_dir, "rotate the data keys"):
        master = load_master_key(config.key_file, create=False)
        _with_conn(args, lambda c: keyadmin.check_master(c, master))
        places = None if args.all else args.place
        done = rotation.rotate(
            config.data_dir, master, places, lambda line: print(line, flush=True)
        )
    print(f"old data keys deleted: {', '.join(done.deleted) or 'none'}")
    if done.kept:
        print(f"old data keys still in use, kept: {', '.join(done.kept)} (run the command again)")
        return 1
    return 0


def cmd_keys_shred(args: argparse.Namespace) -> int:
    """Crypto-shredding: a place's data keys and documents deleted for good."""
    config = _config(args)
    if args.confirm != args.place:
        raise KeyError_(
            f"shredding cannot be undone: repeat the place's id, --confirm {args.place}"
        )
    with datadir.exclusive(config.data_dir, "shred a place"):
        master = load_master_key(config.key_file, create=False)
        _with_conn(args, lambda c: keyadmin.check_master(c, master))
        done = _with_conn(args, lambda c: shredding.shred(c, args.place))
        with closing(connect(db_path(config.data_dir))) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # no old page left in the log
    print(
        f"place {done.place} shredded: {done.keys} data keys, {done.documents} documents, "
        f"{done.revisions} revisions and {done.attachments} attachments deleted. Copies on "
        "devices stay there; old backups of the data dir hold the old keys: rotate the master "
        "key (keys rewrap) and destroy the old one to make them unreadable."
    )
    return 0


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="data directory (default ./data or FIELDSYNC_DATA_DIR)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fieldsync", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the server")
    _data_dir(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 5984)")
    serve.set_defaults(func=cmd_serve)
    _place_commands(sub)
    _user_commands(sub)
    _key_commands(sub)
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


def _key_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="the master key and the data keys").add_subparsers(
        dest="action", required=True
    )
    listing = keys.add_parser(
        "list", help="data keys, and whether the configured master key opens each"
    )
    listing.add_argument("--format", choices=("table", "json"), default="table")
    _data_dir(listing)
    listing.set_defaults(func=cmd_keys_list)
    rewrap = keys.add_parser(
        "rewrap", help="rotate the master key: wrap every data key under a new one (server stopped)"
    )
    rewrap.add_argument(
        "--new-key-file", required=True, help="the new master key (created, mode 0600, if missing)"
    )
    _data_dir(rewrap)
    rewrap.set_defaults(func=cmd_keys_rewrap)
    rotate = keys.add_parser(
        "rotate", help="new data keys for places; every blob re-sealed (server stopped)"
    )
    rotate.add_argument("--place", action="append", default=[], help="a place (repeatable)")
    rotate.add_argument("--all", action="store_true", help="every place, the shared one too")
    _data_dir(rotate)
    rotate.set_defaults(func=cmd_keys_rotate)
    shred = keys.add_parser(
        "shred", help="delete a place's data keys and documents for good (server stopped)"
    )
    shred.add_argument("place")
    shred.add_argument("--confirm", required=True, help="the place's id again")
    _data_dir(shred)
    shred.set_defaults(func=cmd_keys_shred)


def _scope_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--place", action="append", default=[], help="capture scope (write + read)")
    parser.add_argument("--read-place", action="append", default=[], help="read-only scope")
    _data_dir(parser)


def _domain_commands(sub: Any) -> None:
    from barcode.cli import register as register_patient_ids
    from device_registry.cli import register as register_devices
    from sms_gateway.cli import register as register_sms

    register_patient_ids(sub)
    register_devices(sub)
    register_sms(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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
