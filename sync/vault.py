"""Sealing bodies and attachments with per-place data keys (see :mod:`sync.keys`).

The associated data binds a body to its database, document id and revision,
and an attachment to its database, place and digest, so ciphertexts cannot be
moved between documents, revisions or places without failing to open.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from sync.keys import KeyRing, seal, unseal
from sync.store.base import AttachmentBlob, StoredRevision


def body_aad(db: str, doc_id: str, rev: str) -> bytes:
    return b"\x1f".join((b"doc", db.encode(), doc_id.encode(), rev.encode()))


def attachment_aad(db: str, place: str, digest: str) -> bytes:
    return b"\x1f".join((b"att", db.encode(), place.encode(), digest.encode()))


class Vault:
    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    async def warm(self, places: set[str]) -> None:
        """Load (or create) the current keys of ``places`` off the event loop (once each)."""
        missing = [p for p in places if not self._keys.has_current(p)]
        if missing:
            await asyncio.to_thread(lambda: [self._keys.current(p) for p in missing])

    def seal_body(
        self, db: str, doc_id: str, rev: str, place: str, body: dict[str, Any]
    ) -> tuple[str, bytes]:
        key_ref, key = self._keys.current(place)
        return key_ref, seal(key, body_aad(db, doc_id, rev), orjson.dumps(body))

    def open_body(self, db: str, stored: StoredRevision) -> dict[str, Any]:
        key = self._keys.by_ref(stored.key_ref)
        body: dict[str, Any] = orjson.loads(
            unseal(key, body_aad(db, stored.doc_id, stored.rev), stored.body)
        )
        return body

    def seal_attachment(self, db: str, place: str, digest: str, data: bytes) -> AttachmentBlob:
        key_ref, key = self._keys.current(place)
        sealed = seal(key, attachment_aad(db, place, digest), data)
        return AttachmentBlob(digest, place, key_ref, len(data), sealed)

    def open_attachment(self, db: str, blob: AttachmentBlob) -> bytes:
        key = self._keys.by_ref(blob.key_ref)
        return unseal(key, attachment_aad(db, blob.place, blob.digest), blob.data)

    async def warm_refs(self, key_refs: set[str]) -> None:
        """Unwrap the data keys named by ``key_refs`` off the event loop (once each)."""
        missing = [r for r in key_refs if not self._keys.cached(r)]
        if missing:
            await asyncio.to_thread(lambda: [self._keys.by_ref(r) for r in missing])
