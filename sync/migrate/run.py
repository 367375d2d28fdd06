"""``fieldsync migrate --couchdb-url URL [--data-dir DIR]``: the steps in order, then the check.

    fieldsync migrate --couchdb-url http://admin:pw@127.0.0.1:5984 --data-dir ./data

It holds the data dir's lock for the whole run (:mod:`sync.datadir`), so it
refuses to start while a server uses the data dir, and no server starts on it
meanwhile.  It reads the embedded store in one snapshot and writes into the
databases named by ``FIELDSYNC_COUCHDB_PREFIX``.  Stopped half-way (Ctrl-C,
``kill``, a lost connection), it is run again and finishes: each write is
skipped when CouchDB already holds it (:mod:`sync.migrate.couch`).

Exit status: 0 when every count matches and the sample opens the same on both
sides, 1 on a mismatch (or an error: CouchDB away, data dir in use), 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sqlite3
import sys
from contextlib import closing
from typing import TextIO

from sync import datadir
from sync.clitools import Commands, add_command, config_of, data_dir_option
from sync.config import Config, ConfigError
from sync.config import couchdb_url as checked_url
from sync.datakeys import embedded_admin
from sync.keys import MasterKey, load_master_key
from sync.migrate import audit, check, devices, documents, domains, source
from sync.migrate.steps import Context, Step
from sync.store.couchdb.client import CouchClient
from sync.store.couchdb.running import open_client
from sync.store.schema import connect, db_path

# One step per domain, in this order: the data keys first (the documents are sealed
# under them), then what the keys protect.
STEPS: list[Step] = [
    Step("data keys", domains.copy_keys, domains.keys_targets),
    Step("documents", documents.copy, documents.targets),
    Step("accounts", domains.copy_accounts, domains.accounts_targets),
    Step("patient IDs", domains.copy_patient_ids, domains.patient_id_targets),
    Step("SMS", domains.copy_sms, domains.sms_targets),
    Step("audit", audit.copy, audit.targets),
    Step(
        "devices",
        devices.copy,
        counts=devices.counts,
        skipped=lambda: None if devices.port() else devices.SKIPPED,
    ),
]
SAMPLE = 100  # documents whose bodies are opened on both sides


def cmd_migrate(args: argparse.Namespace) -> int:
    try:
        url = checked_url(args.couchdb_url)
    except ValueError as exc:
        # The value is not repeated: it may hold a password.
        raise ConfigError(f"--couchdb-url {exc}") from None
    config = dataclasses.replace(config_of(args), couchdb_url=url)
    master = load_master_key(config.key_file, create=False)
    signal.signal(signal.SIGTERM, _interrupted)  # `kill`: stopped like Ctrl-C, said the same
    with datadir.exclusive(config.data_dir, "migrate"):
        try:
            return asyncio.run(
                migrate(config, master, sys.stdout, args.sample, check_only=args.check_only)
            )
        except KeyboardInterrupt:
            print(
                "\nfieldsync: migrate interrupted; what was written is kept. Run the same "
                "command again to finish.",
                file=sys.stderr,
            )
            return 130


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


async def migrate(
    config: Config,
    master: MasterKey,
    out: TextIO,
    sample: int = SAMPLE,
    *,
    check_only: bool = False,
) -> int:
    """Every step (unless ``check_only``), then the check; the exit status."""
    with closing(connect(db_path(config.data_dir), create=False)) as conn:
        embedded_admin.check_master(conn, master)
        conn.execute("BEGIN")  # one snapshot for the whole run
        client = open_client(config)
        try:
            await _reachable(client)
            _no_reserved_names(conn)
            ctx = Context(conn, client, config.couchdb_prefix, master, out)
            out.write(f"migrating {config.data_dir} into CouchDB at {client.endpoint.shown}\n")
            for step in [] if check_only else STEPS:
                await step.copy(ctx)
            return await _summary(ctx, sample)
        finally:
            conn.execute("ROLLBACK")
            await client.close()


def _no_reserved_names(conn: sqlite3.Connection) -> None:
    """An embedded database named as one of the server's own CouchDB databases ("keys",
    "audit", ...) would be copied over that one's data: refused before anything is copied."""
    # here, not at the top: sync.packages imports this module
    from sync.app import own_couch_databases
    from sync.packages import extensions

    reserved = set(own_couch_databases(extensions()))
    taken = sorted(db.name for db in source.databases(conn) if db.name in reserved)
    if taken:
        raise ConfigError(
            f"the embedded database {taken[0]!r} has the name of a CouchDB database the "
            "server keeps its own data in with CouchDB; nothing was copied. Replicate it "
            "into a database of another name first (the names taken: "
            f"{', '.join(sorted(reserved))})"
        )


async def _reachable(client: CouchClient) -> None:
    """A first request, so that a wrong URL or password is said before anything else;
    and a fieldsync server (it speaks CouchDB's protocol too) is not taken for CouchDB."""
    welcome = await client.json("GET", "/")
    vendor = welcome.get("vendor", {}) if isinstance(welcome, dict) else {}
    if isinstance(vendor, dict) and vendor.get("name") == "fieldsync":
        raise ConfigError(
            f"--couchdb-url {client.endpoint.shown} is a fieldsync server, not CouchDB: give "
            "the address of the CouchDB (or Cloudant) server itself"
        )


async def _summary(ctx: Context, sample: int) -> int:
    out, ok = ctx.out, True
    out.write("\ncheck                                embedded  in CouchDB\n")
    for step in STEPS:
        skipped = step.skipped()
        if skipped:
            out.write(f"  {step.name:<34} {skipped}\n")
            continue
        counted = [await check.count(ctx, t) for t in await step.targets(ctx)]
        for found in counted + await step.counts(ctx):
            ok = ok and found.ok
            mark = "ok" if found.ok else "MISMATCH"
            out.write(f"  {found.what:<34} {found.embedded:>8}  {found.in_couchdb:>10}  {mark}\n")
    sampled = await check.sample_bodies(ctx, sample)
    for problem in sampled.problems:
        out.write(f"  MISMATCH {problem}\n")
    ok = ok and not sampled.problems
    out.write(
        f"  bodies opened on both sides: {sampled.compared}, {len(sampled.problems)} differ\n"
    )
    out.write("migrate: done, every count matches\n" if ok else "migrate: MISMATCH (above)\n")
    return 0 if ok else 1


def register(sub: Commands) -> None:
    """Add ``fieldsync migrate`` to the top-level CLI."""
    command = add_command(
        sub,
        "migrate",
        "copy the embedded store into CouchDB (stop the server first)",
        "Copy everything the data dir's embedded store holds into CouchDB: documents\n"
        "(every revision, attachments, checkpoints), users, places, sessions, data\n"
        "keys (still wrapped by the master key), patient IDs, SMS queues and the\n"
        "audit trail. Refuses while a server uses the data dir. Safe to stop and run\n"
        "again: what is already in CouchDB is skipped. Ends by checking the counts\n"
        "and opening a sample of bodies on both sides; exit 1 on any mismatch.\n"
        "Then start the server with FIELDSYNC_COUCHDB_URL set: phones carry on from\n"
        "their checkpoints. Database names start with FIELDSYNC_COUCHDB_PREFIX.",
    )
    command.add_argument(
        "--couchdb-url",
        required=True,
        metavar="URL",
        help="the CouchDB to copy into, e.g. http://admin:password@127.0.0.1:5984",
    )
    command.add_argument(
        "--sample",
        type=int,
        default=SAMPLE,
        metavar="N",
        help=f"documents whose bodies are opened and compared at the end (default {SAMPLE})",
    )
    command.add_argument(
        "--check-only",
        action="store_true",
        help="copy nothing: only compare the counts and the sample (after an earlier run)",
    )
    data_dir_option(command)
    command.set_defaults(func=cmd_migrate)
