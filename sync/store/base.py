"""The store interface: a few primitives, the protocol is written once above them.

After PouchDB's adapter design (pouchdb-core over an adapter): a backend knows
how to keep revision trees, sealed revision bodies, attachments by digest and
local documents, and how to list changes for a set of places.  It knows
nothing of users, scopes, encryption or HTTP; :mod:`sync.replication.service`
does.  Bodies reach the store already sealed (AES-GCM), with ``place`` and
``key_ref`` in the clear so the store can route and index them.

Place ``""`` (``SHARED``) holds the shared documents (forms, settings) that
every worker receives.  Changes are indexed by ``(place, seq)`` so that a
worker's sync costs what its own set costs.

Two kinds of backend list changes differently:

- a :class:`SeqStore` (SQLite, in memory) numbers every change of a database
  with one sequence and answers "changes for these places after this sequence"
  (:mod:`sync.replication.since` makes the tokens);
- a :class:`LogStore` (CouchDB/Cloudant, :mod:`sync.store.couchdb`) keeps one
  change log per place, since a cluster has no single sequence to hand out; a
  caller's position is a cursor per place (:mod:`sync.replication.vector`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sync.errors import FieldsyncError
from sync.replication import revtree
from sync.replication.revtree import RevNode

if TYPE_CHECKING:
    from sync.audit import AuditStamp

SHARED = ""


@dataclass(frozen=True, slots=True)
class DbInfo:
    name: str
    update_seq: int | str  # an integer on sequence stores, CouchDB's opaque token on log stores
    doc_count: int
    doc_del_count: int
    revs_limit: int
    instance_start_time: str
    uuid: str


@dataclass(frozen=True, slots=True)
class DocMeta:
    """What the store knows of a document without opening a body."""

    id: str
    place: str
    seq: int
    winner: str
    deleted: bool
    tree: Mapping[str, RevNode]

    def merged(self, other: DocMeta) -> DocMeta:
        """This meta and another read of the same document, at another moment or from
        another replica: a revision tree only grows, so every revision either knew is kept."""
        tree = revtree.merge_trees(self.tree, other.tree)
        win = revtree.winner(tree)
        place = other.place if other.winner == win or self.winner != win else self.place
        return DocMeta(self.id, place, max(self.seq, other.seq), win, tree[win].deleted, tree)


@dataclass(frozen=True, slots=True)
class Change:
    """One row of the by-sequence index: the document's latest change."""

    seq: int
    id: str
    place: str
    winner: str
    deleted: bool
    leaves: tuple[tuple[str, bool], ...]


@dataclass(frozen=True, slots=True)
class StoredRevision:
    doc_id: str
    rev: str
    place: str
    deleted: bool
    key_ref: str
    body: bytes


@dataclass(frozen=True, slots=True)
class AttachmentBlob:
    digest: str
    place: str
    key_ref: str
    length: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RevisionWrite:
    """One revision to add to a document's tree.

    ``path`` is newest first: ``path[0]`` is the revision whose sealed body is
    ``body``; the rest is its known history.  With ``new_edits`` the path is
    ``[new]`` or ``[new, parent]`` and the parent must be a current leaf
    (CouchDB's update rule); without it the path is merged as it is (the
    replicator's rule).  ``allowed_places``, when set, is the set of places the
    document may currently be in for this write to be allowed.
    """

    doc_id: str
    path: tuple[str, ...]
    deleted: bool
    place: str
    key_ref: str
    body: bytes
    new_edits: bool
    allowed_places: frozenset[str] | None = None
    # New attachment blobs of this revision: stored with it, in the same transaction,
    # and only if it is written (a refused or conflicting write leaves none behind).
    attachments: tuple[AttachmentBlob, ...] = ()


@dataclass(frozen=True, slots=True)
class WriteResult:
    doc_id: str
    rev: str
    error: FieldsyncError | None = None
    # The document's place after the write (its winner's), when the write changed the
    # document; None when it changed nothing (refused, or a revision it already had).
    # Long polls of that place wake (sync.replication.notifier).
    place: str | None = None


@dataclass(frozen=True, slots=True)
class LocalDoc:
    id: str
    rev: str
    body: bytes


@dataclass(frozen=True, slots=True)
class AllDocsQuery:
    start: str | None = None
    end: str | None = None
    inclusive_end: bool = True
    descending: bool = False
    limit: int | None = None
    skip: int = 0


class DocStore(abc.ABC):
    """Primitives over the documents of named databases."""

    # -- databases -----------------------------------------------------
    @abc.abstractmethod
    async def create_db(self, name: str) -> None: ...

    @abc.abstractmethod
    async def delete_db(self, name: str) -> None: ...

    @abc.abstractmethod
    async def list_dbs(self) -> list[str]: ...

    @abc.abstractmethod
    async def db_info(self, name: str, places: frozenset[str] | None) -> DbInfo: ...

    async def live_counts(self, name: str, places: Sequence[str]) -> dict[str, int]:
        """Live (not deleted) documents in each of ``places`` (the supervisor console's
        set sizes).  This default asks :meth:`db_info` once per place; a store that can
        count every place in one query overrides it."""
        counts: dict[str, int] = {}
        for place in places:
            counts[place] = (await self.db_info(name, frozenset({place}))).doc_count
        return counts

    @abc.abstractmethod
    async def set_revs_limit(self, name: str, limit: int) -> None: ...

    # -- documents -----------------------------------------------------
    @abc.abstractmethod
    async def get_metas(
        self, db: str, ids: Sequence[str], *, recent: bool = False
    ) -> dict[str, DocMeta]:
        """The metas of ``ids`` that exist.  ``recent``: an answer a few seconds old will
        do (the revisions a changes feed just named, asked for again by ``_bulk_get``);
        a store that keeps what it read lately may answer from there."""

    @abc.abstractmethod
    async def get_revisions(
        self, db: str, wanted: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredRevision]: ...

    @abc.abstractmethod
    async def write(
        self, db: str, writes: Sequence[RevisionWrite], audit: AuditStamp | None = None
    ) -> list[WriteResult]:
        """Apply the writes in one transaction; ``audit`` is appended in that same one.

        The audit entry names the documents whose revision was actually written
        (none for conflicts, refusals, or revisions already there): it commits
        with them or not at all.
        """

    @abc.abstractmethod
    async def all_docs(
        self, db: str, places: frozenset[str] | None, query: AllDocsQuery
    ) -> tuple[int, list[Change]]:
        """(total non-deleted rows visible, the page of non-deleted docs in id order)."""

    # -- attachments ---------------------------------------------------
    @abc.abstractmethod
    async def get_attachment(
        self, db: str, digest: str, places: frozenset[str] | None
    ) -> AttachmentBlob | None: ...

    # -- local (checkpoint) documents -----------------------------------
    @abc.abstractmethod
    async def get_local(self, db: str, owner: str, doc_id: str) -> LocalDoc | None: ...

    @abc.abstractmethod
    async def put_local(
        self, db: str, owner: str, doc_id: str, expected_rev: str | None, body: bytes
    ) -> str: ...

    @abc.abstractmethod
    async def delete_local(self, db: str, owner: str, doc_id: str, rev: str | None) -> None: ...

    def expect_more(self, db: str, owner: str, more: bool) -> None:
        """A hint from the changes feed: it just sent ``owner`` a full page of ``db`` (more
        to come) or reached the end.  A store may save that owner's checkpoints lazily
        while more are coming (sync.store.couchdb.checkpoints); this one ignores it."""
        return None

    @abc.abstractmethod
    async def close(self) -> None: ...


class SeqStore(DocStore):
    """A store that numbers every change of a database with one increasing sequence."""

    @abc.abstractmethod
    async def changes(
        self,
        db: str,
        places: frozenset[str] | None,
        since: int,
        limit: int,
        *,
        upto: int | None = None,
        include_deleted: bool = True,
        descending: bool = False,
    ) -> list[Change]:
        """Latest change of each document in ``places`` (None: all) with since < seq <= upto."""

    @abc.abstractmethod
    async def count_changes(self, db: str, places: frozenset[str] | None, since: int) -> int: ...


# Where a reader stands in one place's log: (entries fully read, ids of the next one read).
Position = tuple[int, int]


@dataclass(frozen=True, slots=True)
class LogRow:
    """One step of a walk through place logs: a change to send, or None for an entry that
    names nothing to send (the document moved away); ``after`` is the place's position after it."""

    change: Change | None
    place: str
    after: Position


@dataclass(frozen=True, slots=True)
class LogPage:
    rows: list[LogRow]
    exhausted: bool  # every place was read to the end of what the store shows


@dataclass(frozen=True, slots=True)
class GlobalPage:
    """The whole database's changes (admins), each with the store's own token after it."""

    rows: list[tuple[Change, str]]
    last: str


class LogStore(DocStore):
    """A store whose changes are per-place logs, read with a cursor per place."""

    @abc.abstractmethod
    async def place_changes(
        self, db: str, places: frozenset[str], cursor: Mapping[str, Position], limit: int
    ) -> LogPage:
        """Changes of ``places`` after ``cursor``, a place at a time, at least ``limit`` rows
        that carry a change unless the logs run out first.  Never steps over an entry it cannot
        see yet: it stops that place there."""

    @abc.abstractmethod
    async def global_changes(
        self, db: str, since: str | None, limit: int, descending: bool = False
    ) -> GlobalPage:
        """Every document's latest change after the store's own token ``since``."""

    @abc.abstractmethod
    async def log_tails(self, db: str, places: frozenset[str]) -> dict[str, int]:
        """Each place's last log position that this instance can see (never too high)."""

    @abc.abstractmethod
    async def save_cursor(self, db: str, key: str, positions: Mapping[str, Position]) -> None:
        """Keep a cursor under ``key`` (a hash of it) for since-tokens that name it."""

    @abc.abstractmethod
    async def load_cursor(self, db: str, key: str) -> dict[str, Position] | None: ...

    @abc.abstractmethod
    async def wait_for_change(self, db: str, timeout: float) -> frozenset[str] | None:
        """Wait until any instance writes to ``db``: the places written (empty on timeout;
        None when they are too many to list, or unknown)."""

    async def migrated_positions(self, db: str, seq: int, places: frozenset[str]) -> dict[str, int]:
        """Where a client that had read an embedded store up to its sequence ``seq`` stands
        in each place's log, when ``fieldsync migrate`` wrote the log (ADR 0001, *Moving
        from the embedded store*).  A store without migrated entries answers 0 for every
        place: the client reads its set again, and skips nothing."""
        return dict.fromkeys(places, 0)
