"""The shape of a migrate step, and what every step is given.

A step copies one domain (:attr:`Step.copy`) and names, for the final check,
every CouchDB document the copy stands for (:attr:`Step.targets`): the check
counts how many of them CouchDB holds, per kind, against the embedded count.
A step whose port exports its rows counts them itself (:attr:`Step.counts`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from sync.keys import MasterKey
from sync.store.couchdb.client import CouchClient


@dataclass(frozen=True)
class Context:
    conn: sqlite3.Connection  # the embedded store, read in one snapshot
    client: CouchClient
    prefix: str  # FIELDSYNC_COUCHDB_PREFIX
    master: MasterKey
    out: TextIO  # where progress and the summary go


@dataclass(frozen=True)
class Target:
    """The CouchDB documents that ``what`` became: all of them must be there."""

    what: str
    couch_db: str
    ids: Sequence[str]


@dataclass(frozen=True)
class Count:
    what: str
    embedded: int
    in_couchdb: int

    @property
    def ok(self) -> bool:
        return self.in_couchdb == self.embedded


async def _no_targets(ctx: Context) -> list[Target]:
    return []


async def _no_counts(ctx: Context) -> list[Count]:
    return []


@dataclass(frozen=True)
class Step:
    name: str
    copy: Callable[[Context], Awaitable[None]]
    targets: Callable[[Context], Awaitable[list[Target]]] = _no_targets
    # Counted another way than by document ids (a port's own export).
    counts: Callable[[Context], Awaitable[list[Count]]] = _no_counts
    # Said in the summary when the step copies nothing on purpose (None: it copies).
    skipped: Callable[[], str | None] = lambda: None
