"""The refused-records port: what the server keeps of each document it refused from a phone.

    RefusalStore                    the port (a typing.Protocol)
    ├── sync.refusals.embedded      SQLite, inside the server's single writer
    └── sync.refusals.memory        a dict, for tests

A refusal is one (worker, document id, revision) the server would not take, with
the device it came from, when it was first and last refused, why (a reason code
and the plain words), how often it was pushed again, and the refused body sealed
like any other body.  Pushing the same refused revision again only counts.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Refusal:
    worker: str
    device: str | None  # the enrolled phone's serial, None when not device-bound
    doc_id: str
    rev: str
    reason: str  # a code: "outside_scope", "form_schema", "too_large", "malformed", ...
    detail: str  # plain words: what is wrong (for a form schema: the field and the rule)
    first_at: str  # UTC ISO 8601
    last_at: str  # UTC ISO 8601
    count: int  # times this revision was pushed and refused


class RefusalStore(Protocol):
    async def counts(self, workers: Collection[str]) -> dict[str, int]:
        """How many refused records each of ``workers`` has (workers with none are absent)."""
        ...

    async def for_workers(
        self, workers: Collection[str], limit: int, before: str | None = None
    ) -> Sequence[Refusal]:
        """The newest refusals of ``workers``, newest ``last_at`` first, at most ``limit``."""
        ...
