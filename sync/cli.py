"""The ``fieldsync`` command: init, serve, and manage places, users and keys.

``fieldsync init`` makes a data dir (``serve`` makes one too); every other
command that takes ``--data-dir`` works only on one that exists, and refuses a
directory without a store before writing anything (:mod:`sync.store.opening`).
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
import ssl
import sys
from collections.abc import Sequence
from typing import TextIO, cast

import structlog
from aiohttp import web

from sync import accounts, audit, packages, peoplecli
from sync.clitools import (
    DATA_DIR_ENV,
    HELP_FORMAT,
    Commands,
    add_command,
    add_group,
    config_of,
    data_dir_option,
    one_of,
)
from sync.config import ConfigError, from_env
from sync.errors import FieldsyncError
from sync.keys import MASTER_KEY_ENV
from sync.people_store import commands as people_commands
from sync.people_store.ports import AccountStore, Actor
from sync.scopes import Place, Role, User
from sync.store import opening

PASSWORD_ENV = "FIELDSYNC_PASSWORD"
MASTER_KEY_FILE_ENV = "FIELDSYNC_MASTER_KEY_FILE"
log = structlog.get_logger("fieldsync")


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written (tests and tools swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """structlog (and the standard library's loggers) at ``level``, rendered as ``fmt``.

    ``merge_contextvars`` first: a request's id and caller (``sync.requestlog``) are
    on every line logged while it is answered.
    """
    stream = stream or cast(TextIO, _Stderr())
    number = logging.getLevelName(level.upper())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    stamped: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
    ]
    # The standard library's records (aiohttp, asyncio) are rendered the same way.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=stamped,
        )
    )
    logging.basicConfig(level=number, handlers=[handler], force=True)
    structlog.configure(
        processors=[*stamped, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def cmd_settings(args: argparse.Namespace) -> int:
    from sync.settings import every_setting, markdown_table

    print(markdown_table(every_setting()), end="")
    return 0


# -- init and serve: the commands that may create a data dir -------------------------
def cmd_init(args: argparse.Namespace) -> int:
    config = config_of(args)
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

    config = config_of(args)
    configure_logging(config.log_level, config.log_format)
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


# -- places and users (through the accounts port: sync.people_store) ------------------
def cmd_place_add(args: argparse.Namespace) -> int:
    place = people_commands.run(
        config_of(args), lambda port, by: port.add_place(args.id, args.parent, args.name, by)
    )
    print(f"place {place.id} added")
    return 0


def cmd_place_list(args: argparse.Namespace) -> int:
    places = people_commands.run(config_of(args), _list_places, audited=False)
    for place in places:
        retired = f"\tretired {place.retired[:10]}" if place.retired else ""
        print(f"{place.id}\t{place.parent or '-'}\t{place.name}{retired}")
    return 0


async def _list_places(port: AccountStore, _: Actor) -> list[Place]:
    return await port.list_places()


def _password() -> str:
    if PASSWORD_ENV in os.environ:
        return os.environ[PASSWORD_ENV]
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    return sys.stdin.readline().rstrip("\n")


def cmd_user_add(args: argparse.Namespace) -> int:
    role = accounts.parse_role(args.role)
    password = _password()
    people_commands.run(
        config_of(args),
        lambda port, by: port.add_user(args.name, role, password, args.place, args.read_place, by),
    )
    print(f"user {args.name} added ({role.value})")
    return 0


def cmd_user_set_places(args: argparse.Namespace) -> int:
    people_commands.run(
        config_of(args),
        lambda port, by: port.set_places(args.name, args.place, args.read_place, by),
    )
    log.info(
        "scope_changed",
        user=args.name,
        places=sorted(args.place or []),
        read_places=sorted(args.read_place or []),
        by=audit.cli_actor(),
    )
    print(f"user {args.name}: places {args.place or '-'}, read-only {args.read_place or '-'}")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    password = _password()
    people_commands.run(
        config_of(args), lambda port, by: port.set_password(args.name, password, by)
    )
    print(f"user {args.name}: password changed")
    return 0


def cmd_user_language(args: argparse.Namespace) -> int:
    people_commands.run(
        config_of(args), lambda port, by: port.set_language(args.name, args.language, by)
    )
    print(f"user {args.name}: supervisor pages in {args.language}")
    return 0


def cmd_user_logout(args: argparse.Namespace) -> int:
    ended = people_commands.run(config_of(args), lambda port, by: port.logout_user(args.name, by))
    print(f"user {args.name}: {ended} session(s) ended")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    for user in people_commands.run(config_of(args), _list_users, audited=False):
        places, read = ",".join(user.places) or "-", ",".join(user.read_places) or "-"
        status = "" if user.active else f"\t{user.status.value}"
        print(f"{user.name}\t{user.role.value}\t{places}\t{read}{status}")
    return 0


async def _list_users(port: AccountStore, _: Actor) -> list[User]:
    return await port.list_users()


# -- the parser: every command's help is plain text, written for the person typing it --
DESCRIPTION = """\
fieldsync keeps community health workers' phones and a central server in step:
the phones work offline for days and sync when they find a network.

Start with "fieldsync init": it makes the data dir (the store and the master
key). Then add places and users, and "fieldsync serve" the phones.
"""

EPILOG = f"""\
the data dir:
  Every command that takes --data-dir works on ./data unless told otherwise
  (--data-dir DIR, or {DATA_DIR_ENV}). Only init and serve make one (and
  restore, from a backup, into a new folder); every other command refuses a
  directory without a store, and changes nothing.
  The master key is DIR/master.key, or the file {MASTER_KEY_FILE_ENV} names,
  or the key itself in {MASTER_KEY_ENV}: keep a copy of it somewhere safe.

while the server runs:
  The place, user, patient-id, device, sms, audit and backup commands work on the
  same file as a running server; a changed scope counts from the user's next
  request. "keys rewrap", "keys rotate" and "keys shred" need it stopped.

"fieldsync COMMAND --help" says more about each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fieldsync", description=DESCRIPTION, epilog=EPILOG, formatter_class=HELP_FORMAT
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, title="commands")
    init = add_command(
        sub,
        "init",
        "make a data dir: its store and master key (run this first)",
        "Make a data dir: the directory, its store and, unless one is given by\n"
        f"{MASTER_KEY_ENV} or {MASTER_KEY_FILE_ENV}, its master key (master.key).\n"
        "On a data dir that is already complete it changes nothing.",
    )
    data_dir_option(init)
    init.set_defaults(func=cmd_init, creates_data_dir=True)
    serve = add_command(
        sub,
        "serve",
        "run the sync server (making the data dir if it is new)",
        "Run the sync server until stopped (Ctrl-C). Makes the data dir first, as\n"
        "init does, if it is new. Settings come from FIELDSYNC_* variables; the\n"
        "options here override them.",
    )
    data_dir_option(serve)
    serve.add_argument(
        "--host", metavar="ADDRESS", help="the address to listen on (default: 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, metavar="PORT", help="the port to listen on (default: 5984)"
    )
    serve.set_defaults(func=cmd_serve, creates_data_dir=True)
    settings = add_command(
        sub,
        "settings",
        "list every FIELDSYNC_* setting: its default and what it does",
        "Print every FIELDSYNC_* setting as a markdown table: its name, its\n"
        "default and what it does (the README's table is this output).",
    )
    settings.set_defaults(func=cmd_settings)
    _place_commands(sub)
    _user_commands(sub)
    _package_commands(sub)
    return parser


def _place_commands(sub: Commands) -> None:
    place = add_group(
        sub,
        "place",
        "places: the tree of areas users work in",
        "Places form a tree (country > district > facility > CHW area). A user's\n"
        "places, and every place below them, are what they may read and write.",
    )
    add = add_command(place, "add", "add a place")
    add.add_argument("id", metavar="ID", help="the place's id (letters, digits, _ . : -)")
    add.add_argument("--parent", metavar="ID", help="the place it lies in (default: none, a root)")
    add.add_argument("--name", metavar="NAME", help="its name, as people say it")
    data_dir_option(add)
    add.set_defaults(func=cmd_place_add)
    listing = add_command(
        place,
        "list",
        "list places",
        "List every place, one a line: id, parent (- for none), name, and\n"
        '"retired DATE" for a retired place.',
    )
    data_dir_option(listing)
    listing.set_defaults(func=cmd_place_list)
    peoplecli.register_places(place)


ROLE_HELP = {
    Role.CHW: "a community health worker: records in their places (needs a place)",
    Role.SUPERVISOR: "runs workers, phones and SMS in their places (needs a place)",
    Role.ADMIN: "no limits: every place, user and phone",
    Role.GATEWAY: "an SMS gateway phone: passes coded SMS to the server",
}
PASSWORD_NOTE = (
    f"The password is read from {PASSWORD_ENV} if set, else asked for (or read\n"
    "from the first line of standard input when it is not a terminal)."
)


def _user_commands(sub: Commands) -> None:
    user = add_group(sub, "user", "users: who may sync, and where")
    roles = "\n".join(f"  {role.value:<11} {ROLE_HELP[role]}" for role in Role)
    add = add_command(
        user, "add", "add a user", f"Add a user.\n\nroles:\n{roles}\n\n{PASSWORD_NOTE}"
    )
    add.add_argument("name", metavar="NAME", help="the user's login name")
    add.add_argument(
        "--role",
        required=True,
        choices=[role.value for role in Role],
        metavar="ROLE",
        help=f"what the user may do: {one_of(role.value for role in Role)}",
    )
    _scope_args(add)
    add.set_defaults(func=cmd_user_add)
    setp = add_command(
        user,
        "set-places",
        "replace a user's places",
        "Replace a user's places with the ones given (none given: no places).",
    )
    setp.add_argument("name", metavar="NAME", help="the user's login name")
    _scope_args(setp)
    setp.set_defaults(func=cmd_user_set_places)
    passwd = add_command(
        user, "passwd", "set a user's password", f"Set a user's password.\n\n{PASSWORD_NOTE}"
    )
    passwd.add_argument("name", metavar="NAME", help="the user's login name")
    data_dir_option(passwd)
    passwd.set_defaults(func=cmd_user_passwd)
    listing = add_command(
        user,
        "list",
        "list users",
        "List every user, one a line: name, role, places, read-only places, and\n"
        '"disabled" or "removed" for a user who is not active.',
    )
    data_dir_option(listing)
    listing.set_defaults(func=cmd_user_list)
    language = add_command(
        user,
        "language",
        "choose the language of a user's supervisor pages",
        "Choose the language a user reads the supervisor pages in: en (English) or sw\n"
        "(Swahili). Users can also switch it themselves from the pages' header.",
    )
    language.add_argument("name", metavar="NAME", help="the user's login name")
    language.add_argument(
        "language", choices=accounts.LANGUAGES, metavar="LANGUAGE", help="en or sw"
    )
    data_dir_option(language)
    language.set_defaults(func=cmd_user_language)
    logout = add_command(user, "logout", "end every session of a user (server running or not)")
    logout.add_argument("name", metavar="NAME", help="the user's login name")
    data_dir_option(logout)
    logout.set_defaults(func=cmd_user_logout)
    peoplecli.register_users(user)


def _scope_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--place",
        action="append",
        default=[],
        metavar="ID",
        help="a place the user works in: reads and writes there and below (repeatable)",
    )
    parser.add_argument(
        "--read-place",
        action="append",
        default=[],
        metavar="ID",
        help="a place the user may only read, and below it (repeatable)",
    )
    data_dir_option(parser)


def _package_commands(sub: Commands) -> None:
    """Every package's command groups (``cli_commands``, :mod:`sync.extensions`), in order.

    A command of theirs that takes ``--data-dir`` is checked in :func:`main` like ours.
    """
    for add in packages.extensions().cli_commands:
        add(sub)


def _open(args: argparse.Namespace) -> None:
    """A command that takes ``--data-dir`` works on an existing one, unless it makes its own.

    Checked here, once for every command (a package's too), before the command runs.
    """
    if "data_dir" in vars(args) and not getattr(args, "creates_data_dir", False):
        opening.existing(config_of(args))


def _cli_logging() -> None:
    """Commands log (key operations, scope changes) as the server would, on stderr."""
    try:
        config = from_env()
    except ConfigError:
        return  # the command reports the bad setting itself
    configure_logging(config.log_level, config.log_format)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _cli_logging()
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
