"""The chain's arithmetic: entries, their keyed links, heads, the sealed chain key.

Pure code (no storage): every adapter of :mod:`sync.audit_store.ports` and the
verifier (:mod:`sync.auditverify`) compute links the same way::

    hash(n) = "k1:" + hmac_sha256(K, hash(n-1) || canonical-json([n, ts, actor, device,
                                                                 action, db, doc_ids, detail]))

The first link of a chain is :func:`first_link`: ``"0" * 64`` for the data dir's
chain (:data:`DATA_DIR`, whose oldest entries may be legacy plain SHA-256 links,
see :func:`entry_hash`), and for every other chain a MAC of its name, so that a
chain cannot be passed off as another one.  ``K`` is 32 random bytes sealed by
the master key (:func:`seal_key`); whoever lacks the master key cannot recompute
a link.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sync.keys import KeyError_, MasterKey

GENESIS = "0" * 64
KEYED = "k1:"
KEY_LABEL = b"fieldsync audit chain v1"
DATA_DIR = "data-dir"  # the data dir's own chain (admin changes, management commands)
LONG_ID = 200  # characters; longer document ids are named by their SHA-256 in the trail


@dataclass(frozen=True, slots=True)
class Entry:
    ts: str
    actor: str
    device: str | None
    action: str
    db: str | None
    doc_ids: tuple[str, ...]
    detail: str | None = None


@dataclass(frozen=True)
class Head:
    """How far a chain is known to reach: its last ``id`` and that entry's hash, MAC-ed."""

    id: int
    hash: str
    mac: str


@dataclass(frozen=True, slots=True)
class Linked:
    """An entry as a chain stores it: its number, the link before it, its own hash."""

    seq: int
    entry: Entry
    prev: str
    hash: str


def named(doc_ids: Sequence[str]) -> tuple[str, ...]:
    """Document ids as the trail names them: a long id by its SHA-256, so that reading
    documents with huge ids cannot make every read write megabytes of trail."""
    return tuple(
        i if len(i) <= LONG_ID else "sha256:" + hashlib.sha256(i.encode()).hexdigest()
        for i in doc_ids
    )


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def entry_hash(previous: str, entry: Entry) -> str:
    """The legacy, unkeyed link (entries written before the chain was keyed)."""
    payload = json.dumps(
        [entry.ts, entry.actor, entry.device, entry.action, entry.db, list(entry.doc_ids)],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256((previous + payload).encode()).hexdigest()


class ChainKey:
    """The chain key and what it computes: entry MACs, head MACs, journal-line MACs."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, data: bytes) -> str:
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def entry_mac(self, previous: str, entry_id: int, entry: Entry) -> str:
        fields = [entry_id, entry.ts, entry.actor, entry.device, entry.action, entry.db]
        fields += [list(entry.doc_ids), entry.detail]
        payload = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
        return KEYED + self._mac((previous + payload).encode())

    def line_mac(self, payload: bytes) -> str:
        """The MAC of a read-journal line (:mod:`sync.auditjournal`)."""
        return self._mac(b"journal\x00" + payload)

    def head_mac(self, entry_id: int, digest: str) -> str:
        return self._mac(f"head\x00{entry_id}\x00{digest}".encode())

    def head(self, entry_id: int, digest: str) -> Head:
        return Head(entry_id, digest, self.head_mac(entry_id, digest))

    def link(self, previous: str, first: int, entries: Sequence[Entry]) -> list[Linked]:
        """``entries`` numbered from ``first`` and linked after ``previous``."""
        linked = []
        for seq, entry in enumerate(entries, first):
            digest = self.entry_mac(previous, seq, entry)
            linked.append(Linked(seq, entry, previous, digest))
            previous = digest
        return linked


def genesis(key: ChainKey, name: str) -> str:
    """The ``prev`` of a named chain's first entry: binds the chain to its name."""
    return key.entry_mac("genesis", 0, Entry("", name, None, "genesis", None, ()))


def first_link(key: ChainKey, name: str) -> str:
    """What entry 1 of chain ``name`` links to."""
    return GENESIS if name == DATA_DIR else genesis(key, name)


def seal_key(master: MasterKey) -> tuple[bytes, str]:
    """A new chain key and its sealed form (base64 text, wrapped by ``master``)."""
    key = secrets.token_bytes(32)
    return key, base64.b64encode(master.wrap(KEY_LABEL, key)).decode()


def unseal_key(master: MasterKey, sealed: str) -> bytes:
    """The chain key (``KeyError_`` from :mod:`sync.keys` under the wrong master key)."""
    return master.unwrap(KEY_LABEL, base64.b64decode(sealed))


def reseal_key(old: MasterKey, new: MasterKey, sealed: str) -> str | None:
    """``sealed`` re-wrapped under ``new``; None when it already is (a resumed rotation)."""
    try:
        new.unwrap(KEY_LABEL, base64.b64decode(sealed))
        return None
    except KeyError_:
        key = old.unwrap(KEY_LABEL, base64.b64decode(sealed))
    return base64.b64encode(new.wrap(KEY_LABEL, key)).decode()
