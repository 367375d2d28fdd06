"""The refused-records port: what the server keeps of each document it refused from a phone.

    RefusalStore                    the port (a typing.Protocol)
    ├── sync.refusals.embedded      SQLite, inside the server's single writer
    ├── sync.refusals.couchdb       CouchDB ``<prefix>refusals``, shared by every instance
    └── sync.refusals.memory        a dict, for tests
    (sync.refusals.backends picks one from the configuration)

A refusal is one (worker, document id, revision) the server would not take, with
the device it came from, when it was first and last refused, why (a reason code
and the plain words), how often it was pushed again, and the refused body sealed
like any other body.  Pushing the same refused revision again only counts: the
count goes up and ``last_at`` moves; the first body, device and detail are kept.

Bounds (a phone pushing 10,000 garbage documents must not fill the disk):

- each worker keeps at most ``per_worker`` distinct refusals, the newest by
  ``last_at``; older ones are deleted and counted as *dropped* for that worker
  (:meth:`RefusalStore.counts` includes them);
- a body is kept sealed up to :data:`MAX_BODY_BYTES` of its JSON; a longer one keeps
  its first :data:`MAX_BODY_BYTES` only (``body_bytes`` says how long it was);
- refusals not pushed again for the retention period are pruned (:meth:`prune`).

The worker is always the authenticated caller's name, never a field of the
document, so nobody can make their refusals appear under another worker.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

MAX_BODY_BYTES = 32 * 1024  # of a refused body's JSON, kept sealed
MAX_DOC_ID = 512  # characters of a refused document id kept (longer: cut, marked with "…")
MAX_REV = 128
MAX_DETAIL = 1000
UNREADABLE = "(unreadable)"  # the doc id of a request whose body was not JSON at all


@dataclass(frozen=True)
class Refusal:
    worker: str
    device: str | None  # the enrolled phone's serial, None when not device-bound
    doc_id: str
    rev: str  # "" when the document carried none (a new document, or unreadable)
    reason: str  # a code: "outside_scope", "form_schema", "too_large", "malformed", ...
    detail: str  # plain words: what is wrong (for a form schema: the field and the rule)
    first_at: str  # UTC ISO 8601
    last_at: str  # UTC ISO 8601
    count: int  # times this revision was pushed and refused
    id: int = 0  # the store's id of the record (the page's /supervisor/refusals/{id})
    body_bytes: int = 0  # length of the refused body's JSON (more than kept when cut)


@dataclass(frozen=True)
class SealedBody:
    """A refused body as kept: sealed by :mod:`sync.refusals.sealing` (never plaintext)."""

    key_ref: str
    data: bytes
    truncated: bool  # only the first MAX_BODY_BYTES of the JSON were kept


@dataclass(frozen=True)
class NewRefusal:
    """One refused push to record (sealed already); ``at`` is when it was refused."""

    worker: str
    device: str | None
    doc_id: str
    rev: str
    reason: str
    detail: str
    at: str
    body: SealedBody | None
    body_bytes: int
    times: int = 1  # the same push refused this many times in one batch


@dataclass(frozen=True)
class Cursor:
    """Where a page of refusals ends: the next page holds those older than this one."""

    last_at: str
    id: int

    def __str__(self) -> str:
        return f"{self.last_at}~{self.id}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """``2026-05-01T10:00:00.000000+00:00~42`` (the ``next`` of a page); ValueError if not."""
        at, sep, ident = text.rpartition("~")
        if not sep or not at or not ident.isdigit():
            raise ValueError("before must be the `next` value of an earlier page")
        return cls(at, int(ident))


class RefusalStore(Protocol):
    async def record(self, refusals: Sequence[NewRefusal], per_worker: int) -> None:
        """Add ``refusals`` (a repeat of a kept (worker, doc_id, rev) only counts), then cut
        each of their workers down to the newest ``per_worker``, counting the dropped."""
        ...

    async def counts(self, workers: Collection[str]) -> dict[str, int]:
        """How many refused records each of ``workers`` has, dropped ones included
        (workers with none are absent)."""
        ...

    async def for_workers(
        self, workers: Collection[str] | None, limit: int, before: str | None = None
    ) -> Sequence[Refusal]:
        """The newest refusals of ``workers`` (None: everyone's), newest ``last_at`` first, at
        most ``limit``, older than the cursor ``before`` (a :class:`Cursor` as text)."""
        ...

    async def get(self, refusal_id: int) -> tuple[Refusal, SealedBody | None] | None:
        """One refusal with its sealed body (None when no body was kept), or None."""
        ...

    async def prune(self, older_than: str) -> int:
        """Delete refusals last pushed before ``older_than`` (UTC ISO); how many went."""
        ...
