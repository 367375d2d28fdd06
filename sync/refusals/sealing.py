"""Refused bodies sealed at rest with the vault, like document bodies and SMS texts.

A refused document may name a place that does not exist, or one the worker may
not write, so its body is sealed under the shared pseudo-place's data key (as SMS
texts are), not under the place it names.  The bytes kept are the body's JSON, or
its first ``MAX_BODY_BYTES`` when longer (then not valid JSON by itself).  The
associated data binds each blob to its row's worker, document id and revision,
so blobs cannot be swapped between rows.  ``fieldsync keys rotate`` re-seals them
(:data:`sync.refusals.embedded_sealing.COLUMN`, registered as ``sealed_blobs``).
"""

from __future__ import annotations

import json

from sync.refusals.ports import SealedBody
from sync.store.base import SHARED, AttachmentBlob
from sync.vault import Vault

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
