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

The walk is written once, over what the audit port (:mod:`sync.audit_store.ports`)
gives: numbered, linked entries (:class:`~sync.audit_store.links.Linked`) and a
keyed head.  The data dir's chain may start with legacy plain-SHA-256 entries and
names its problems in rows and ids, as it always has; any other chain (one per
server instance, in CouchDB) starts at a MAC of its name.  Where the adapter
writes the head with the entries (``head_is_exact``) an entry past the head is
forged; where the head follows the entries (CouchDB) such entries are an append
whose process was killed, and fine.  :func:`verify_store` and
:func:`verify_chains` go through any adapter; the embedded store's way in (one
snapshot of a SQLite connection, and the server's start-up check of the tail)
is :mod:`sync.audit_store.embedded_verify`, over the same :class:`Walk`.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from sync.audit_store.links import (
    DATA_DIR,
    KEYED,
    ChainKey,
    Head,
    Linked,
    entry_hash,
    first_link,
)
from sync.audit_store.ports import AuditStore
from sync.errors import StoreError
from sync.keys import MasterKey

UNSEALED = "no keyed entry yet"


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


@dataclass(frozen=True)
class Words:
    """How problems are named: the data dir's chain in rows and ids, others in entries."""

    gap: str
    link: str
    edited: str
    truncated: str


ROWS = Words(
    "missing rows: ids {0}..{1} absent (id gap)",
    "broken link: prev_hash is not the hash of the entry before",
    "hash mismatch (row edited)",
    "missing rows: tail truncated, ids {0}..{1} absent",
)
ENTRIES = Words(
    "missing entries: seq {0}..{1} absent (a gap)",
    "broken link: prev is not the hash of the entry before",
    "hash mismatch (edited)",
    "tail truncated, entries {0}..{1} absent",
)


@dataclass
class Walk:
    """One pass along a chain's entries, in order, stopping at the first bad one."""

    chain: ChainKey
    previous: str
    expected_id: int
    words: Words = ROWS
    legacy_allowed: bool = True
    keep_hashes: bool = False  # a head that may lag (CouchDB) is checked against any entry
    keyed: bool = False
    count: int = 0
    legacy: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    hashes: dict[int, str] = dataclasses.field(default_factory=dict)  # seq -> hash, for the head

    def __post_init__(self) -> None:
        self.hashes[self.expected_id - 1] = self.previous

    def step(self, one: Linked) -> Problem | None:
        problem = self._check(one)
        if problem is not None:
            return Problem(one.seq, one.entry.ts, problem)
        self.previous, self.expected_id = one.hash, one.seq + 1
        if self.keep_hashes:
            self.hashes[one.seq] = one.hash
        self.count += 1
        self.first_ts = self.first_ts or one.entry.ts
        self.last_ts = one.entry.ts
        return None

    def _check(self, one: Linked) -> str | None:
        if one.seq != self.expected_id:
            return self.words.gap.format(self.expected_id, one.seq - 1)
        if one.prev != self.previous:
            return self.words.link
        if one.hash.startswith(KEYED):
            self.keyed = True
            good = self.chain.entry_mac(self.previous, one.seq, one.entry)
            return None if hmac.compare_digest(good, one.hash) else self.words.edited
        if self.keyed or not self.legacy_allowed:
            if not self.legacy_allowed:
                return self.words.edited
            return "plain SHA-256 hash inside the keyed chain (recomputed without the key)"
        self.legacy += 1
        return None if entry_hash(self.previous, one.entry) == one.hash else self.words.edited

    def run(self, entries: Iterable[Linked]) -> Problem | None:
        for one in entries:
            problem = self.step(one)
            if problem is not None:
                return problem
        return None

    def report(self, problem: Problem | None) -> Report:
        return Report(self.count, self.legacy, self.first_ts, self.last_ts, problem)


async def verify_store(store: AuditStore, key: ChainKey, name: str = DATA_DIR) -> Report:
    """Check chain ``name`` of ``store`` from its first entry: links, MACs, no gap, the head
    (and, for the data dir's chain, the store's own guards)."""
    data_dir = name == DATA_DIR
    words = ROWS if data_dir else ENTRIES
    walk = Walk(key, first_link(key, name), 1, words, data_dir, not store.head_is_exact)
    problem = walk.run(await store.entries(name))
    head = await store.head(name)
    problem = problem or head_problem(key, walk, head, exact=store.head_is_exact)
    if data_dir:
        problem = problem or guard_problem(await store.guard_problems(), walk)
    return walk.report(problem)


def head_problem(chain: ChainKey, walk: Walk, head: Head | None, *, exact: bool) -> Problem | None:
    """What is wrong with ``head`` once ``walk`` has reached the chain's end (exact: no
    entry may lie past it)."""
    last_id = walk.expected_id - 1
    if head is None:
        if walk.keyed or not walk.legacy_allowed:
            return Problem(None, None, "head checkpoint missing (rows deleted at the tail?)")
        if walk.count:
            return Problem(
                None, None, f"{UNSEALED}: a legacy chain, unsealed (start the server once)"
            )
        return None
    if not hmac.compare_digest(chain.head_mac(head.id, head.hash), head.mac):
        return Problem(head.id, None, "head checkpoint forged (its MAC does not match)")
    if head.id > last_id:
        return Problem(last_id + 1, None, walk.words.truncated.format(last_id + 1, head.id))
    if head.id < last_id and exact:
        return Problem(head.id + 1, walk.last_ts, "entries after the head checkpoint (not ours)")
    reached = walk.previous if head.id == last_id else walk.hashes.get(head.id)
    if head.hash != reached:
        return Problem(head.id, walk.last_ts, "hash mismatch with the head checkpoint")
    return None


def guard_problem(missing: list[str], walk: Walk) -> Problem | None:
    """The storage's missing guards, a problem once the chain holds entries."""
    if not missing or not walk.count:
        return None
    return Problem(None, None, f"triggers missing: {', '.join(missing)} (rows can be changed)")


# -- every chain of a store (one per server instance) -------------------------------------------
@dataclass(frozen=True)
class ChainReport:
    instance: str
    entries: int
    first_ts: str | None
    last_ts: str | None
    problem: str | None = None  # "entry SEQ (TIME): what", or about the chain as a whole

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem is not None:
            return f"instance {self.instance}: audit chain BROKEN at {self.problem}"
        return (
            f"instance {self.instance}: audit chain ok: {self.entries} entries, "
            f"first {self.first_ts}, last {self.last_ts}"
        )


async def verify_chains(store: AuditStore, master: MasterKey) -> list[ChainReport]:
    """Check every chain of ``store`` but the data dir's (several instances' chains)."""
    key = await store.chain_key(master, create=False)
    if key is None:
        return []
    reports = []
    for name in await store.chains():
        if name != DATA_DIR:
            report = await verify_store(store, key, name)
            problem = None if report.problem is None else str(report.problem)
            reports.append(ChainReport(name, report.entries, report.first_ts, report.last_ts,
                                       problem))  # fmt: skip
    return reports


class AuditBroken(StoreError):
    """The trail failed the start-up check (under ``StoreError`` in :mod:`sync.errors`)."""

    error = "audit_broken"
    default_reason = "The audit trail does not verify."
