"""The refused records' sealed column on the data dir's SQLite file, for ``fieldsync keys rotate``.

The table ``refused_docs`` keeps each body sealed by :mod:`sync.refusals.sealing`
(``key_ref``, ``body``); :data:`COLUMN` is what the rotation re-seals, registered
as ``sealed_blobs``.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sync.datakeys.embedded_rotation import Blob, Column
from sync.refusals.sealing import NAMESPACE, row_name
from sync.store.base import SHARED
from sync.vault import attachment_aad


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
