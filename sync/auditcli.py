"""The ``fieldsync audit`` commands.

    fieldsync audit verify [--data-dir DIR]

Checks the whole audit chain (every MAC and link, no id gap, the keyed head,
the triggers) and prints one line: ``audit chain ok: N entries, first …, last …``
(exit 0) or ``audit chain BROKEN at entry ID (TIME): what is wrong`` (exit 1).
With ``FIELDSYNC_COUCHDB_URL`` set it then checks every instance's chain in
CouchDB (:mod:`sync.couchaudit`), one line each: ``instance ID: audit chain ok:
…`` or ``instance ID: audit chain BROKEN at entry SEQ (TIME): …``; exit 1 if any
chain breaks.
It needs the master key (``FIELDSYNC_MASTER_KEY`` or the key file), like the
``keys`` commands, and reads in one snapshot while a server runs.

Storage is reached through the audit port's adapters: the data dir's chain is
read in one transaction of its SQLite file (one snapshot, the read journal
beside it: :mod:`sync.audit_store.embedded_verify`), the instances' chains
through the CouchDB adapter (:mod:`sync.audit_store.backends`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from sync.audit_store.backends import instance_store
from sync.audit_store.embedded_verify import check_data_dir
from sync.audit_store.ports import AuditStore
from sync.auditjournal import Contents
from sync.auditverify import ChainReport, verify_chains
from sync.clitools import Commands, add_command, add_group, config_of, data_dir_option
from sync.keys import MasterKey, load_master_key


def cmd_audit_verify(args: argparse.Namespace) -> int:
    config = config_of(args)  # an existing data dir: checked by sync.cli.main
    master = load_master_key(config.key_file, create=False)
    report, journal = check_data_dir(config.data_dir, master)
    waiting = _journal_waiting(journal)
    print(report.summary())
    store = instance_store(config)  # CouchDB's, when several instances record
    chains = [] if store is None else asyncio.run(_instance_chains(store, master))
    for one in chains:
        print(one.summary())
    if waiting:
        print(
            f"{waiting} entries wait in the read journal (moved into the chain within a "
            "second by a running server, or at its next start)",
            file=sys.stderr,
        )
    return 0 if report.ok and all(one.ok for one in chains) else 1


async def _instance_chains(store: AuditStore, master: MasterKey) -> list[ChainReport]:
    """Every instance's chain in ``store`` (CouchDB's ``<prefix>audit``), then closed."""
    try:
        return await verify_chains(store, master)
    finally:
        await store.close()


def _journal_waiting(contents: Contents | None) -> int:
    """Entries in the read journal not yet in the chain (0 for a data dir without one)."""
    if contents is None:
        return 0
    if contents.problem is not None:
        print(
            f"the read journal holds {contents.rejected} line(s) the next start will refuse "
            f"(recorded as journal_rejected): {contents.problem}",
            file=sys.stderr,
        )
    return len(contents.entries)


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
