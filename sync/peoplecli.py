"""``fieldsync user disable|enable|remove`` and ``fieldsync place rename|move|retire``.

The commands of :mod:`sync.people`, added to the ``user`` and ``place`` groups
that :mod:`sync.cli` builds.  Like the other management commands they work on
the deployment's accounts store (the data dir's file, or CouchDB when
FIELDSYNC_COUCHDB_URL is set), server running or not, through the accounts port
(:mod:`sync.people_store`); each change has its audit entry (actor ``cli:<os
user>``, before -> after), and each counts from the next request of every user
it touches, on every instance.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable

import structlog

from sync import audit
from sync.clitools import Commands, add_command, config_of, data_dir_option
from sync.errors import BadRequest
from sync.people_store import commands as people_commands
from sync.people_store.commands import Call
from sync.people_store.ports import AccountStore, Actor
from sync.scopes import Place, User

log = structlog.get_logger("fieldsync")


# -- users -------------------------------------------------------------------------------
def _user_change(
    args: argparse.Namespace,
    event: str,
    change: Callable[[AccountStore, str, Actor], Awaitable[User]],
) -> User:
    user = people_commands.run(config_of(args), lambda port, by: change(port, args.name, by))
    log.info(event, user=args.name, status=user.status.value, by=audit.cli_actor())
    return user


def cmd_user_disable(args: argparse.Namespace) -> int:
    _user_change(args, "user_disabled", lambda port, name, by: port.disable_user(name, by))
    print(
        f"user {args.name} disabled: their password, sessions and phones are refused "
        f"from their next request (fieldsync user enable {args.name} undoes it)"
    )
    return 0


def cmd_user_enable(args: argparse.Namespace) -> int:
    _user_change(args, "user_enabled", lambda port, name, by: port.enable_user(name, by))
    print(f"user {args.name} enabled: their password, sessions and phones work again")
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    _user_change(args, "user_removed", lambda port, name, by: port.remove_user(name, by))
    print(
        f"user {args.name} removed: they can no longer log in, and the name will not be "
        "given out again; their documents and history stay. Collect their phones "
        "(flagged on the supervisor pages)."
    )
    return 0


# -- places ------------------------------------------------------------------------------
def _place_change(args: argparse.Namespace, change: Call[Place]) -> Place:
    return people_commands.run(config_of(args), change)


def cmd_place_rename(args: argparse.Namespace) -> int:
    place = _place_change(
        args, lambda port, by: port.edit_place(args.id, args.name, False, None, by)
    )
    log.info("place_renamed", place=args.id, by=audit.cli_actor())
    print(f"place {place.id} is now named {place.name!r}")
    return 0


def cmd_place_move(args: argparse.Namespace) -> int:
    if args.root == (args.parent is not None):
        raise BadRequest(
            f"say where place {args.id} goes: --parent ID (the place it will lie in) "
            "or --root (no parent), one of the two"
        )
    parent = None if args.root else args.parent
    place = _place_change(args, lambda port, by: port.edit_place(args.id, None, True, parent, by))
    log.info("place_moved", place=args.id, parent=parent, by=audit.cli_actor())
    where = f"under {place.parent}" if place.parent else "a root (no parent)"
    print(f"place {place.id} is now {where}; scopes follow from each user's next request")
    return 0


def cmd_place_retire(args: argparse.Namespace) -> int:
    _place_change(args, lambda port, by: port.retire_place(args.id, by))
    log.info("place_retired", place=args.id, by=audit.cli_actor())
    print(
        f"place {args.id} retired: it takes no new documents, edits or people; its "
        "documents stay readable by whoever reads it through a place above it"
    )
    return 0


# -- the parsers -------------------------------------------------------------------------
DISABLE = """\
Disable a user: from their next request their password, cookie sessions and
enrolled phones are refused with "the account is disabled" (an open long poll
ends at its next wake). Nothing is deleted: enable them to undo it."""
ENABLE = """\
Enable a disabled user again: the same password, sessions (if not expired) and
enrolled phones work again from their next request."""
REMOVE = """\
Remove a user for good: their password is erased and every session ended, so
the name can no longer log in. Their documents, audit history and device
history stay, naming them; their phones are flagged "collect this phone" on
the supervisor pages. A removed user cannot be enabled again, and the name is
never given to a new user (so the audit trail keeps naming one person).
The last active admin cannot be removed (nor disabled)."""
RENAME = """\
Give a place a new name. Its id stays: documents, users and keys refer to
the id, so nothing else changes."""
MOVE = """\
Move a place, and everything below it, under another parent (--parent) or
make it a root (--root). From their next request, whoever works above the new
parent reads and writes it, and whoever reached it only through the old
parent no longer does. Refused: a parent inside the place itself (a loop), an
unknown parent, a retired parent."""
RETIRE = """\
Retire a place that is no longer used: from the next request nobody can
write there (new documents or edits), assign people to it, or put new places
under it. Its documents stay readable by whoever reads it through a place
above it (a district supervisor, say). Refused while places below it are not
retired, or while users are assigned to it: move them first. Retiring cannot
be undone from the command line."""


def register_users(user: Commands) -> None:
    """``user disable``, ``user enable`` and ``user remove`` in the ``user`` group."""
    commands = (
        ("disable", "disable a user until enabled (sessions and phones stop)", DISABLE),
        ("enable", "enable a disabled user again", ENABLE),
        ("remove", "remove a user for good (documents and history stay)", REMOVE),
    )
    handlers = {"disable": cmd_user_disable, "enable": cmd_user_enable, "remove": cmd_user_remove}
    for name, summary, description in commands:
        parser = add_command(user, name, summary, description)
        parser.add_argument("name", metavar="NAME", help="the user's login name")
        data_dir_option(parser)
        parser.set_defaults(func=handlers[name])


def register_places(place: Commands) -> None:
    """``place rename``, ``place move`` and ``place retire`` in the ``place`` group."""
    rename = add_command(place, "rename", "give a place a new name (its id stays)", RENAME)
    rename.add_argument("id", metavar="ID", help="the place's id")
    rename.add_argument("name", metavar="NAME", help="its new name, as people say it")
    data_dir_option(rename)
    rename.set_defaults(func=cmd_place_rename)
    move = add_command(place, "move", "move a place under another parent", MOVE)
    move.add_argument("id", metavar="ID", help="the place's id")
    move.add_argument("--parent", metavar="ID", help="the place it will lie in")
    move.add_argument("--root", action="store_true", help="make it a root (no parent)")
    data_dir_option(move)
    move.set_defaults(func=cmd_place_move)
    retire = add_command(place, "retire", "retire a place no longer used", RETIRE)
    retire.add_argument("id", metavar="ID", help="the place's id")
    data_dir_option(retire)
    retire.set_defaults(func=cmd_place_retire)
