"""Checking the data dir's chain in its SQLite file: the whole chain, or its tail at start.

The walk and the problems it names are :mod:`sync.auditverify`'s, written once
over the audit port's numbered entries; here they read the rows, the head and
the triggers in one snapshot (the connection's open transaction), for
``fieldsync audit verify`` (:func:`check_data_dir`) and for the server's
start-up check of the last :data:`TAIL_AT_START` entries (:func:`check_at_start`).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from sync.audit_store import embedded
from sync.audit_store.links import DATA_DIR, GENESIS, ChainKey
from sync.auditjournal import Contents, journal_path, read
from sync.auditverify import UNSEALED, Report, Walk, guard_problem, head_problem
from sync.datakeys.embedded_admin import check_master
from sync.keys import KeyError_, MasterKey

TAIL_AT_START = 1000  # entries the server checks when it starts


def verify(conn: sqlite3.Connection, chain: ChainKey, *, last: int | None = None) -> Report:
    """Check the data dir's whole chain, or (``last``) its last entries, head and triggers
    (one snapshot: the connection's open transaction)."""
    start = _start(conn, last)
    anchor = embedded.hash_of(conn, start - 1)
    walk = Walk(chain, GENESIS if anchor is None else anchor, start)
    problem = walk.run(embedded.rows(conn, DATA_DIR, start))
    head = embedded.read_head(conn)
    problem = problem or head_problem(chain, walk, head, exact=True)
    problem = problem or guard_problem(embedded.missing_triggers(conn), walk)
    return walk.report(problem)


def _start(conn: sqlite3.Connection, last: int | None) -> int:
    if last is None:
        return 1
    head = embedded.read_head(conn)
    top = embedded.last_row(conn)
    return max(1, max(top[0] if top else 0, head.id if head else 0) - last + 1)


def check_at_start(conn: sqlite3.Connection, master: MasterKey) -> tuple[ChainKey, Report]:
    """The chain (its key made on first start) and how its tail, head and triggers look.

    A legacy chain (plain SHA-256, from before the chain was keyed) is not a
    fault here: the server's first keyed entry seals it.
    """
    chain = embedded.open_chain(conn, master)
    report = verify(conn, chain, last=TAIL_AT_START)
    if report.problem is not None and report.problem.what.startswith(UNSEALED):
        report = dataclasses.replace(report, problem=None)
    return chain, report


def check_data_dir(data_dir: Path, master: MasterKey) -> tuple[Report, Contents | None]:
    """The whole chain's report and what the read journal holds after it (None for a
    data dir without a chain key), in one snapshot of the file."""
    return embedded.snapshot(
        data_dir, lambda conn: (_verify(conn, master), _journal(conn, data_dir, master))
    )


def _journal(conn: sqlite3.Connection, data_dir: Path, master: MasterKey) -> Contents | None:
    try:
        chain = embedded.open_chain(conn, master, create=False)
    except KeyError_:
        return None
    return read(journal_path(data_dir), chain, embedded.committed_seq(conn))


def _verify(conn: sqlite3.Connection, master: MasterKey) -> Report:
    check_master(conn, master)
    try:
        chain = embedded.open_chain(conn, master, create=False)
    except KeyError_:
        if not embedded.has_entries(conn):
            return Report(0, 0, None, None)  # a new data dir: nothing recorded yet
        raise
    return verify(conn, chain)
