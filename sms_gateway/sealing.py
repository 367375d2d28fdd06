"""Sealing SMS texts at rest with the vault, like document bodies.

Messages are stored before anyone knows who sent them, so they are sealed
under the shared pseudo-place's data key; the associated data binds each
blob to its message (``in:<key>``, ``out:<id>``, ``details:<key>``) so blobs
cannot be swapped between rows.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sync.couchsealed import HIGH, SealedDocs, Slot
from sync.datakeys.embedded_rotation import Column
from sync.store.base import SHARED, StoredRevision
from sync.vault import Vault, body_aad

NAMESPACE = "_sms"  # not a database name (those start with a letter): no clash with documents
REV = "0"
COUCH_DB = "sms"  # sms_gateway.couchdb.DB_NAME (that module imports this one)


class Sealer:
    def __init__(self, vault: Vault) -> None:
        self._vault = vault

    async def warm(self) -> None:
        await self._vault.warm({SHARED})

    def seal(self, name: str, data: dict[str, Any]) -> tuple[str, bytes]:
        return self._vault.seal_body(NAMESPACE, name, REV, SHARED, data)

    def open(self, name: str, key_ref: str, blob: bytes) -> dict[str, Any]:
        stored = StoredRevision(name, REV, SHARED, False, key_ref, blob)
        return self._vault.open_body(NAMESPACE, stored)


def _aad(prefix: str) -> Callable[[Sequence[Any]], bytes]:
    return lambda fields: body_aad(NAMESPACE, f"{prefix}:{fields[0]}", REV)


def _couch_slots(_: str, doc: dict[str, Any]) -> list[Slot]:
    """A message in ``<prefix>sms`` (sms_gateway.couchdb): its text, sealed as ``Sealer.seal``."""
    kind = doc.get("type")
    if kind not in ("in", "out") or not doc.get("key_ref"):
        return []
    name = f"in:{doc['key']}" if kind == "in" else f"out:{doc['id']}"
    blob = base64.b64decode(doc["content"])
    return [Slot("content", str(doc["key_ref"]), blob, body_aad(NAMESPACE, name, REV))]


def _couch_replaced(doc: dict[str, Any], new: Mapping[str, tuple[str, bytes]]) -> dict[str, Any]:
    ref, blob = new["content"]
    return {**doc, "key_ref": ref, "content": base64.b64encode(blob).decode()}


# The SMS texts in CouchDB, for ``fieldsync keys rotate`` there.
COUCH_DOCS = SealedDocs(
    "SMS texts",
    lambda prefix, _dbs: [(prefix + COUCH_DB, "")],
    "",
    HIGH,
    _couch_slots,
    _couch_replaced,
)

# The sealed columns, for ``fieldsync keys rotate`` (the same names as ``Sealer.seal``).
COLUMNS = (
    Column("SMS texts received", "sms_incoming", "key_ref", "content", "t.key", _aad("in")),
    Column("SMS outcomes", "sms_incoming", "details_ref", "details", "t.key", _aad("details")),
    Column("SMS texts sent", "sms_outgoing", "key_ref", "content", "t.id", _aad("out")),
)
