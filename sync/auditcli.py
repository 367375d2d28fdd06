"""The ``fieldsync audit`` commands.

    fieldsync audit verify [--data-dir DIR]

Checks the whole audit chain (every MAC and link, no id gap, the keyed head,
the triggers) and prints one line: ``audit chain ok: N entries, first …, last …``
(exit 0) or ``audit chain BROKEN at entry ID (TIME): what is wrong`` (exit 1).
With ``FIELDSYNC_COUCHDB_URL`` set it then checks every instance's chain in
CouchDB (:mod:`sync.auditcouch`), one line each: ``instance ID: audit chain ok:
…`` or ``instance ID: audit chain BROKEN at entry SEQ (TIME): …``; exit 1 if any
chain breaks.
It needs the master key (``FIELDSYNC_MASTER_KEY`` or the key file), like the
``keys`` commands, and reads in one snapshot while a server runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

from sync import audit, auditjournal, keyadmin
from sync.auditcouch import ChainReport, verify_all
from sync.auditverify import Report, verify
from sync.clitools import Commands, add_command, add_group, config_of, data_dir_option
from sync.config import Config
from sync.keys import KeyError_, MasterKey, load_master_key
from sync.store.couchdb.running import open_client
from sync.store.schema import connect, db_path


def cmd_audit_verify(args: argparse.Namespace) -> int:
    config = config_of(args)  # an existing data dir: checked by sync.cli.main
    master = load_master_key(config.key_file, create=False)
    with closing(connect(db_path(config.data_dir), create=False)) as conn:
        conn.execute("BEGIN")  # one consistent snapshot; never blocks the server's writer
        try:
            report = _verify(conn, master)
            waiting = _journal_waiting(conn, config.data_dir, master)
        finally:
            conn.execute("ROLLBACK")
    print(report.summary())
    chains = asyncio.run(_couch_chains(config, master)) if config.couchdb_url else []
    for one in chains:
        print(one.summary())
    if waiting:
        print(
            f"{waiting} entries wait in the read journal (moved into the chain within a "
            "second by a running server, or at its next start)",
            file=sys.stderr,
        )
    return 0 if report.ok and all(one.ok for one in chains) else 1


async def _couch_chains(config: Config, master: MasterKey) -> list[ChainReport]:
    """Every instance's chain in CouchDB's ``<prefix>audit`` (several instances record)."""
    client = open_client(config)
    try:
        return await verify_all(client, config.couchdb_prefix, master)
    finally:
        await client.close()


def _journal_waiting(conn: sqlite3.Connection, data_dir: Path, master: MasterKey) -> int:
    """Entries in the read journal not yet in the chain (0 for a data dir without one)."""
    try:
        chain = audit.chain(conn, master, create=False)
    except KeyError_:
        return 0
    done = auditjournal.committed_seq(conn)
    contents = auditjournal.read(auditjournal.journal_path(data_dir), chain, done)
    if contents.problem is not None:
        print(
            f"the read journal holds {contents.rejected} line(s) the next start will refuse "
            f"(recorded as journal_rejected): {contents.problem}",
            file=sys.stderr,
        )
    return len(contents.entries)


def _verify(conn: sqlite3.Connection, master: MasterKey) -> Report:
    keyadmin.check_master(conn, master)
    try:
        chain = audit.chain(conn, master, create=False)
    except KeyError_:
        if conn.execute("SELECT 1 FROM audit LIMIT 1").fetchone() is None:
            return Report(0, 0, None, None)  # a new data dir: nothing recorded yet
        raise
    return verify(conn, chain)


def register(sub: Commands) -> None:
    """Add the ``audit`` command group to the top-level CLI."""
    group = add_group(sub, "audit", "the audit trail: who did what, and when")
    check = add_command(
        group,
        "verify",
        "check the whole audit trail; exit 1 naming the first bad entry",
        "Check the whole audit trail: every entry's MAC and link, no missing entry,\n"
        'the keyed head. Prints one line: "audit chain ok: ..." (exit 0), or\n'
        '"audit chain BROKEN at entry ID ..." (exit 1). With FIELDSYNC_COUCHDB_URL set,\n'
        'also every instance\'s chain in CouchDB, one line each ("instance ID: ...").\n'
        "Needs the master key; safe while the server runs.",
    )
    data_dir_option(check)
    check.set_defaults(func=cmd_audit_verify)
