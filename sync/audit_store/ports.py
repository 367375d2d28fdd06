"""The audit port: what the audit trail needs from storage, in its own words.

    AuditStore                      the port (a typing.Protocol)
    ├── sync.audit_store.embedded   SQLite: the data dir's chain, in the admin change's
    │                               own transaction
    ├── sync.audit_store.couchdb    CouchDB / Cloudant: one chain per server instance
    └── sync.audit_store.memory     lists, for tests

A store holds named **chains** of entries (:class:`sync.audit_store.links.Entry`),
each entry linked to the one before by a MAC under the chain key
(:mod:`sync.audit_store.links`), and a keyed **head** per chain saying how far it
reaches.  Whichever adapter runs, these hold (tests/sync/test_audit_store_contract.py
checks each of them against every adapter):

- **Append-only.**  An entry, once stored, is never changed or removed through
  the port; nothing but :meth:`AuditStore.append` adds to a chain.
- **Ordered.**  Entries of one ``append`` take the next numbers of their chain,
  in the order given, each linked to the one before; appends to one chain that
  run at the same time are serialised, never interleaved or forked.
- **Never two writers per chain.**  Within a process the adapter serialises the
  appends of one chain.  Across processes: the embedded store's single writer
  (SQLite's lock) serialises the server and the CLI on the data dir's chain; in
  CouchDB each process writes only chains it made with :meth:`AuditStore.start`
  (the server names its chain by a new instance id at every start), ``start``
  refuses a name that exists, and an adapter that finds another writer's entry
  where its own was due raises ``StoreError`` ("two writers on one chain")
  instead of writing over it.
- **Durable before answered.**  ``append`` returns only once its entries (and
  those of any earlier failed append of the chain) are stored.  If it raises,
  the adapter keeps its entries, in order, and stores them first at the next
  append of that chain (CouchDB keeps them numbered, so a lost answer whose
  write did land leaves neither a gap nor a duplicate); the caller must not
  hand them in again.
- **A kill mid-append never breaks a chain.**  Either nothing of an append is
  stored, or a prefix of it: the embedded store writes entries and head in one
  transaction; CouchDB's head is a lower bound written after the entries
  (:attr:`AuditStore.head_is_exact` is False), so entries past it are those of
  an append its process did not finish, never a fault.

The chain key is stored once per store, sealed (wrapped by the master key):
never in the clear.  Errors: ``ValueError`` for a bad chain name, the server's
:mod:`sync.errors` (``StoreError``, ``StoreUnavailable``) when storage fails,
``KeyError_`` from :mod:`sync.keys` for a wrong master key.

**Same transaction as the change it records.**  On the embedded store, admin
changes append their entry inside their own SQLite transaction
(:func:`sync.audit_store.embedded.append`, through
:func:`~sync.audit_store.embedded.note`): the change and its entry commit
together or not at all.  CouchDB has no transaction spanning two documents; there the change's
entry is recorded by :meth:`sync.audit.AuditLog.record` and stored in the
instance's chain before the answer goes out (:func:`sync.audit.flush_before_answer`);
a failed append answers 500, so no caller is told of a change whose entry is
not stored.  (A change stored but whose entry failed is then possible, never the
reverse: the caller sees the failure and the change can be looked at.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from sync.audit_store.links import ChainKey, Entry, Head, Linked
from sync.keys import MasterKey

CHAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_name(name: str) -> str:
    """Refuse a chain name a CouchDB document id or a log line could misread."""
    if not isinstance(name, str) or not CHAIN_NAME.match(name):
        raise ValueError(
            f"a chain name is 1-100 letters, digits, '.', '_' or '-' (first a letter or "
            f"digit), not {name!r}"
        )
    return name


class AuditStore(Protocol):
    head_is_exact: bool  # True: the head moves in the entries' transaction (embedded)

    async def chain_key(self, master: MasterKey, *, create: bool) -> ChainKey | None:
        """The key every chain of this store shares, unsealed with ``master``.

        Made (and stored sealed) on first use when ``create``; two processes making
        it at once end up with one key.  None if there is none and not ``create``.
        """
        ...

    async def rewrap_key(self, old: MasterKey, new: MasterKey) -> None:
        """Master-key rotation: re-seal the chain key under ``new`` (resumable)."""
        ...

    async def start(self, key: ChainKey, chain: str) -> None:
        """Make chain ``chain``, empty, its head at 0; ``StoreError`` if it exists."""
        ...

    async def append(self, key: ChainKey, chain: str, entries: Sequence[Entry]) -> Head:
        """Link ``entries`` after the end of ``chain`` and store them; the new head.

        The chain is made if it does not exist.  Returns once they are durable.
        """
        ...

    async def head(self, chain: str) -> Head | None:
        """The stored head of ``chain`` (None: no head; ``Head(0, "", "")``: unreadable)."""
        ...

    async def entries(self, chain: str, first: int = 1) -> list[Linked]:
        """The stored entries of ``chain`` numbered ``first`` or more, in order."""
        ...

    async def chains(self) -> list[str]:
        """Every chain with an entry or a head, sorted."""
        ...

    async def guard_problems(self) -> list[str]:
        """What the storage's own append-only guards lack (embedded: missing triggers)."""
        ...

    async def close(self) -> None: ...
