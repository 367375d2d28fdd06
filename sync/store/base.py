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

Two backends are intended: SQLite (embedded, :mod:`sync.store.sqlite`) and a
CouchDB/Cloudant cluster with one database per place.  Nothing here assumes
one global sequence: ``since`` handling lives in the since-token module, and
the store answers "changes for these places after this sequence".
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sync.errors import FieldsyncError
from sync.replication.revtree import RevNode

if TYPE_CHECKING:
    from sync.audit import AuditStamp

SHARED = ""


@dataclass(frozen=True, slots=True)
class DbInfo:
    name: str
    update_seq: int
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

    @abc.abstractmethod
    async def set_revs_limit(self, name: str, limit: int) -> None: ...

    # -- documents -----------------------------------------------------
    @abc.abstractmethod
    async def get_metas(self, db: str, ids: Sequence[str]) -> dict[str, DocMeta]: ...

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

    @abc.abstractmethod
    async def close(self) -> None: ...
