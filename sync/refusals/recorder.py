"""Recording refused pushes without slowing the push: noted in memory, written behind it.

The replication handlers call :meth:`Recorder.note` for each document a phone
pushed that the server refused (:func:`sync.refusals.reasons.reason_of` says
which errors are refusals) and :meth:`Recorder.unreadable` for a body that is
not JSON at all.  Noting costs one JSON encoding of the document (cut to
``MAX_BODY_BYTES``) and no I/O; a background task seals the bodies and writes
them in one transaction per turn of the writer, repeats of one (worker, doc id,
rev) merged into a count first.  Recording never fails a push: a failed write is
logged and dropped, and when the writer falls far behind (more than
``max_pending`` refusals or ``max_pending_bytes`` of bodies waiting) new
refusals are dropped and counted (:attr:`Recorder.dropped`), not queued.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson
import structlog

from sync.errors import FieldsyncError
from sync.refusals.ports import (
    MAX_BODY_BYTES,
    MAX_DETAIL,
    MAX_DOC_ID,
    MAX_REV,
    UNREADABLE,
    NewRefusal,
    RefusalStore,
)
from sync.refusals.reasons import reason_of
from sync.refusals.sealing import Sealer

log = structlog.get_logger("fieldsync.refusals")
Clock = Callable[[], dt.datetime]
MAX_PENDING = 5_000
MAX_PENDING_BYTES = 16 * 1024 * 1024


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    """One fixed-width UTC format, so stored times compare as text."""
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class _Noted:
    """A refusal noted, not yet sealed: ``data`` is the kept part of its body."""

    refusal: NewRefusal
    data: bytes | None
    truncated: bool


class Recorder:
    def __init__(
        self,
        store: RefusalStore,
        sealer: Sealer,
        per_worker: int,
        clock: Clock = utcnow,
        max_pending: int = MAX_PENDING,
        max_pending_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.per_worker = per_worker
        self._clock = clock
        self._max_pending = max_pending
        self._max_bytes = max_pending_bytes
        self._pending: list[_Noted] = []
        self._pending_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def note(
        self, worker: str, device: str | None, doc: object, doc_id: str, error: FieldsyncError
    ) -> None:
        """A document ``worker`` pushed got ``error``: record it if that is a refusal.

        Never raises: a failure to note is logged, and the push is answered as ever.
        """
        found = reason_of(error)
        if found is None:
            return
        code, detail = found
        try:
            data = orjson.dumps(doc)
        except (orjson.JSONEncodeError, TypeError):  # nested too deep to encode: no body kept
            data = b""
        try:
            self._add(worker, device, doc_id or _id_of(doc), _rev_of(doc), code, detail, data)
        except Exception:
            log.exception("refusal_not_noted", worker=worker, reason=code)

    def unreadable(self, worker: str, device: str | None, raw: bytes, reason: str) -> None:
        """A request body that is not a JSON object: one refusal per worker, counted."""
        try:
            self._add(worker, device, UNREADABLE, "", "unreadable", reason, raw)
        except Exception:
            log.exception("refusal_not_noted", worker=worker, reason="unreadable")

    def _add(
        self,
        worker: str,
        device: str | None,
        doc_id: str,
        rev: str,
        code: str,
        detail: str,
        data: bytes,
    ) -> None:
        kept = data[:MAX_BODY_BYTES] or None
        size = len(kept or b"")
        if len(self._pending) >= self._max_pending or self._pending_bytes + size > self._max_bytes:
            self.dropped += 1  # the writer is far behind: keep serving, count the loss
            return
        refusal = NewRefusal(
            worker,
            device,
            cut(doc_id, MAX_DOC_ID),
            cut(rev, MAX_REV),
            code,
            cut(detail, MAX_DETAIL),
            iso(self._clock()),
            None,
            len(data),
        )
        self._pending.append(_Noted(refusal, kept, len(data) > MAX_BODY_BYTES))
        self._pending_bytes += size
        self._kick()

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            noted, self._pending, self._pending_bytes = self._pending, [], 0
            try:
                await self.sealer.warm()
                batch = [self._sealed(n) for n in merged(noted)]
                await self.store.record(batch, self.per_worker)
            except Exception:
                log.exception("refusals_not_recorded", refusals=len(noted))

    def _sealed(self, noted: _Noted) -> NewRefusal:
        r = noted.refusal
        if noted.data is None:
            return r
        body = self.sealer.seal(r.worker, r.doc_id, r.rev, noted.data, noted.truncated)
        return replace(r, body=body)

    async def drain(self) -> None:
        """Wait until everything noted so far is written."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)


def merged(noted: list[_Noted]) -> list[_Noted]:
    """Repeats of one (worker, doc id, rev) in one batch: the first, counted as many times."""
    first: dict[tuple[str, str, str], _Noted] = {}
    for n in noted:
        r = n.refusal
        key = (r.worker, r.doc_id, r.rev)
        seen = first.get(key)
        if seen is None:
            first[key] = n
        else:
            later = replace(seen.refusal, times=seen.refusal.times + 1, at=r.at)
            first[key] = replace(seen, refusal=later)
    return list(first.values())


def _id_of(doc: object) -> str:
    doc_id = doc.get("_id") if isinstance(doc, dict) else None
    if doc_id is None:
        return "(no id)"
    return doc_id if isinstance(doc_id, str) else "(not a string)"


def _rev_of(doc: object) -> str:
    rev: Any = doc.get("_rev") if isinstance(doc, dict) else None
    return rev if isinstance(rev, str) else ""
