"""The ``fieldsync sms`` commands.

    fieldsync sms language WORKER LANG    set the language of a worker's replies (en, sw)
    fieldsync sms status                  messages by state and outcome, at a glance

Both work while the server runs (the same SQLite file, WAL), and on the
deployment's CouchDB when ``FIELDSYNC_COUCHDB_URL`` is set (sms_gateway.backends).
"""

from __future__ import annotations

import argparse
import asyncio

from sms_gateway.actions import Outcome
from sms_gateway.backends import sms_store
from sms_gateway.outgoing import OutState
from sms_gateway.replies import LANGUAGES
from sync.clitools import (
    Commands,
    add_command,
    add_group,
    config_of,
    data_dir_option,
    one_of,
)
from sync.errors import BadRequest, NotFound
from sync.people_store import commands as people_commands


def register(subparsers: Commands) -> None:
    """Add the ``sms`` command group to the top-level CLI."""
    commands = add_group(
        subparsers,
        "sms",
        "coded SMS: reply languages, message counts",
        "Workers without data send coded SMS; the server records them and replies.",
    )
    language = add_command(
        commands,
        "language",
        "set the language of a worker's SMS replies",
        f"Set the language the server replies to a worker's SMS in.\n\n"
        f"languages: {one_of(LANGUAGES)}",
    )
    language.add_argument("worker", metavar="WORKER", help="the worker's user name")
    language.add_argument(
        "language", choices=LANGUAGES, metavar="LANG", help=f"the language: {one_of(LANGUAGES)}"
    )
    data_dir_option(language)
    language.set_defaults(func=run_language)
    status = add_command(
        commands,
        "status",
        "count messages: incoming by outcome, outgoing by state",
        "Count the messages, one group a line, tab-separated:\n"
        "  incoming  STATE  OUTCOME  COUNT    (state stored or processed)\n"
        "  outgoing  KIND   STATE    COUNT\n\n"
        f"incoming outcomes: {one_of(o.value for o in Outcome)}\n"
        f"outgoing states:   {one_of(s.value for s in OutState)}",
    )
    data_dir_option(status)
    status.set_defaults(func=run_status)


def run_language(args: argparse.Namespace) -> int:
    if args.language not in LANGUAGES:
        raise BadRequest(f"language must be one of {', '.join(LANGUAGES)}")
    user = people_commands.run(  # the accounts port: the file's users, or CouchDB's
        config_of(args), lambda port, _: port.get_user(args.worker), audited=False
    )
    if user is None:
        raise NotFound(f"user {args.worker!r} does not exist")

    async def run() -> None:
        async with sms_store(config_of(args)) as queues:
            await queues.set_language(args.worker, args.language)

    asyncio.run(run())
    print(f"{args.worker}: replies in {args.language}")
    return 0


async def counts(args: argparse.Namespace) -> dict[str, list[tuple[str, str, int]]]:
    async with sms_store(config_of(args)) as queues:
        return await queues.counts()


def run_status(args: argparse.Namespace) -> int:
    found = asyncio.run(counts(args))
    for state, outcome, number in found["incoming"]:
        print(f"incoming\t{state}\t{outcome}\t{number}")
    for kind, state, number in found["outgoing"]:
        print(f"outgoing\t{kind}\t{state}\t{number}")
    return 0
