"""Refused bodies sealed at rest with the vault, like document bodies and SMS texts.

A refused document may name a place that does not exist, or one the worker may
not write, so its body is sealed under the shared pseudo-place's data key (as SMS
texts are), not under the place it names.  The bytes kept are the body's JSON, or
its first ``MAX_BODY_BYTES`` when longer (then not valid JSON by itself).  The
associated data binds each blob to its row's worker, document id and revision,
so blobs cannot be swapped between rows.  ``fieldsync keys rotate`` re-seals them
(:data:`COLUMN`, registered as ``sealed_blobs``).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sync.refusals.ports import SealedBody
from sync.rotation import Blob, Column
from sync.store.base import SHARED, AttachmentBlob
from sync.vault import Vault, attachment_aad

NAMESPACE = "_refusals"  # not a database name (those start with a letter)


def row_name(worker: str, doc_id: str, rev: str) -> str:
    """What the associated data binds a blob to: its row, unambiguously."""
    return json.dumps([worker, doc_id, rev], ensure_ascii=True)


class Sealer:
    def __init__(self, vault: Vault) -> None:
        self._vault = vault

    async def warm(self) -> None:
        await self._vault.warm({SHARED})

    def seal(self, worker: str, doc_id: str, rev: str, data: bytes, truncated: bool) -> SealedBody:
        """``data`` sealed (call :meth:`warm` once first)."""
        blob = self._vault.seal_attachment(NAMESPACE, SHARED, row_name(worker, doc_id, rev), data)
        return SealedBody(blob.key_ref, blob.data, truncated)

    async def open(self, worker: str, doc_id: str, rev: str, body: SealedBody) -> bytes:
        await self._vault.warm_refs({body.key_ref})
        name = row_name(worker, doc_id, rev)
        blob = AttachmentBlob(name, SHARED, body.key_ref, 0, body.data)
        return self._vault.open_attachment(NAMESPACE, blob)


def _aad(fields: Sequence[Any]) -> bytes:
    return attachment_aad(NAMESPACE, SHARED, row_name(fields[0], fields[1], fields[2]))


class _Refused:
    """The sealed column for ``fieldsync keys rotate``; nothing to do before the table exists
    (a data dir whose server never started with this version)."""

    name = "refused records"
    _column = Column(
        "refused records", "refused_docs", "key_ref", "body", "t.worker, t.doc_id, t.rev", _aad
    )

    def batch(self, conn: sqlite3.Connection, after: int, limit: int) -> list[Blob]:
        return self._column.batch(conn, after, limit) if _exists(conn) else []

    def store(self, conn: sqlite3.Connection, blob: Blob, key_ref: str, data: bytes) -> None:
        self._column.store(conn, blob, key_ref, data)

    def refs(self, conn: sqlite3.Connection) -> Counter[str]:
        return self._column.refs(conn) if _exists(conn) else Counter()


def _exists(conn: sqlite3.Connection) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='refused_docs'"
    ).fetchone()
    return found is not None


COLUMN = _Refused()
