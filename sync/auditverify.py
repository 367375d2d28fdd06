"""Checking the audit chain: every link, every MAC, no id gap, the head, the triggers.

:func:`verify` walks the whole chain (``fieldsync audit verify``) or only its
last entries (the server's start-up check) and stops at the first bad entry:

- *missing rows*: ids must run 1, 2, 3, … (a deleted row leaves a gap);
- *broken link*: ``prev_hash`` must be the hash of the entry before;
- *hash mismatch*: the MAC (or, before the chain was keyed, the SHA-256) must
  match the row's fields (an edited row);
- *plain SHA-256 inside the keyed chain*: a row recomputed without the key;
- *tail truncated* / *head checkpoint forged or missing*: the keyed head in
  ``meta`` must name the last row and its hash;
- *triggers missing*: UPDATE and DELETE must still be refused.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from sync.audit import GENESIS, KEYED, Chain, Entry, entry_hash, missing_triggers, read_head
from sync.audit import chain as open_chain
from sync.errors import StoreError
from sync.keys import MasterKey

UNSEALED = "no keyed entry yet"
COLUMNS = "id, ts, actor, device, action, db, doc_ids, detail, prev_hash, hash"


@dataclass(frozen=True)
class Problem:
    id: int | None
    ts: str | None
    what: str

    def __str__(self) -> str:
        where = f"entry {self.id}" if self.id is not None else "the trail"
        when = f" ({self.ts})" if self.ts else ""
        return f"{where}{when}: {self.what}"


@dataclass(frozen=True)
class Report:
    entries: int  # entries checked
    legacy: int  # of them, plain SHA-256 entries written before the chain was keyed
    first_ts: str | None
    last_ts: str | None
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem is not None:
            return f"audit chain BROKEN at {self.problem}"
        if not self.entries:
            return "audit chain ok: 0 entries"
        legacy = f" ({self.legacy} legacy plain-SHA-256 entries, sealed)" if self.legacy else ""
        return (
            f"audit chain ok: {self.entries} entries{legacy}, "
            f"first {self.first_ts}, last {self.last_ts}"
        )


@dataclass
class _Walk:
    chain: Chain
    previous: str
    expected_id: int
    keyed: bool = False
    count: int = 0
    legacy: int = 0
    first_ts: str | None = None
    last_ts: str | None = None

    def step(self, row: tuple[object, ...]) -> Problem | None:
        entry_id, ts = int(str(row[0])), str(row[1])
        problem = self._check(row, entry_id)
        if problem is not None:
            return Problem(entry_id, ts, problem)
        self.previous, self.expected_id = str(row[9]), entry_id + 1
        self.count += 1
        self.first_ts = self.first_ts or ts
        self.last_ts = ts
        return None

    def _check(self, row: tuple[object, ...], entry_id: int) -> str | None:
        if entry_id != self.expected_id:
            return f"missing rows: ids {self.expected_id}..{entry_id - 1} absent (id gap)"
        if row[8] != self.previous:
            return "broken link: prev_hash is not the hash of the entry before"
        entry = row_entry(row)
        digest = str(row[9])
        if digest.startswith(KEYED):
            self.keyed = True
            good = self.chain.entry_mac(self.previous, entry_id, entry)
            return None if hmac.compare_digest(good, digest) else "hash mismatch (row edited)"
        if self.keyed:
            return "plain SHA-256 hash inside the keyed chain (recomputed without the key)"
        self.legacy += 1
        return None if entry_hash(self.previous, entry) == digest else "hash mismatch (row edited)"


def row_entry(row: tuple[object, ...]) -> Entry:
    ids = tuple(str(i) for i in json.loads(str(row[6])))
    device, db, detail = (None if v is None else str(v) for v in (row[3], row[5], row[7]))
    return Entry(str(row[1]), str(row[2]), device, str(row[4]), db, ids, detail)


def verify(conn: sqlite3.Connection, chain: Chain, *, last: int | None = None) -> Report:
    """Check the whole chain, or (``last``) its last entries, head and triggers."""
    start = _start(conn, last)
    anchor = conn.execute("SELECT hash FROM audit WHERE id=?", (start - 1,)).fetchone()
    walk = _Walk(chain, GENESIS if anchor is None else str(anchor[0]), start)
    rows: Iterable[tuple[object, ...]] = conn.execute(
        f"SELECT {COLUMNS} FROM audit WHERE id>=? ORDER BY id", (start,)
    )
    problem = None
    for row in rows:
        problem = walk.step(row)
        if problem is not None:
            break
    problem = problem or _head_problem(conn, chain, walk) or _trigger_problem(conn, walk)
    return Report(walk.count, walk.legacy, walk.first_ts, walk.last_ts, problem)


def _start(conn: sqlite3.Connection, last: int | None) -> int:
    if last is None:
        return 1
    head = read_head(conn)
    top = conn.execute("SELECT max(id) FROM audit").fetchone()[0] or 0
    return max(1, max(top, head.id if head else 0) - last + 1)


def _head_problem(conn: sqlite3.Connection, chain: Chain, walk: _Walk) -> Problem | None:
    head = read_head(conn)
    last_id = walk.expected_id - 1
    if head is None:
        if walk.keyed:
            return Problem(None, None, "head checkpoint missing (rows deleted at the tail?)")
        if walk.count:
            return Problem(
                None, None, f"{UNSEALED}: a legacy chain, unsealed (start the server once)"
            )
        return None
    if not hmac.compare_digest(chain.head_mac(head.id, head.hash), head.mac):
        return Problem(head.id, None, "head checkpoint forged (its MAC does not match)")
    if head.id > last_id:
        return Problem(
            last_id + 1, None, f"missing rows: tail truncated, ids {last_id + 1}..{head.id} absent"
        )
    if head.id < last_id:
        return Problem(head.id + 1, walk.last_ts, "entries after the head checkpoint (not ours)")
    if head.hash != walk.previous:
        return Problem(head.id, walk.last_ts, "hash mismatch with the head checkpoint")
    return None


def _trigger_problem(conn: sqlite3.Connection, walk: _Walk) -> Problem | None:
    missing = missing_triggers(conn)
    if not missing or not walk.count:
        return None
    return Problem(None, None, f"triggers missing: {', '.join(missing)} (rows can be changed)")


TAIL_AT_START = 1000  # entries the server checks when it starts


class AuditBroken(StoreError):
    """The trail failed the start-up check (under ``StoreError`` in :mod:`sync.errors`)."""

    error = "audit_broken"
    default_reason = "The audit trail does not verify."


def check_at_start(conn: sqlite3.Connection, master: MasterKey) -> tuple[Chain, Report]:
    """The chain (its key made on first start) and how its tail, head and triggers look.

    A legacy chain (plain SHA-256, from before the chain was keyed) is not a
    fault here: the server's first keyed entry seals it.
    """
    chain = open_chain(conn, master)
    report = verify(conn, chain, last=TAIL_AT_START)
    if report.problem is not None and report.problem.what.startswith(UNSEALED):
        report = dataclasses.replace(report, problem=None)
    return chain, report
