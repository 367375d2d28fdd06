"""Several instances on one CouchDB: one keyed hash chain per instance, in ``<prefix>audit``.

The storage is the audit port's CouchDB adapter (:mod:`sync.audit_store.couchdb`,
where the document layout and the guarantees are written down); this module says
how the server uses it.

**The instance id is new at every process start** (the start time and 8 random
hex digits).  An instance is the one writer of its chain, and that must hold
whatever is done with data dirs: copied from a template (several instances then
share everything a data dir holds), or reused by a restarted container while the
old process may still be finishing.  A fresh id per start needs no coordination
and no lease; a restart starts a new chain (:meth:`AuditStore.start` refuses a
name that exists), and the old one ends where its process stopped.

**Nothing acknowledged is lost**: the chain's append returns once CouchDB
answered that it stored the entries, and the server sends no answer before its
entries are appended (:func:`sync.audit.flush_before_answer`); reads do not go
through the local read journal then.  The request whose append failed is
answered 500; its entries are sent first by the next append.

The names below are kept for the code that used them before the port existed
(the keys' rotation calls :func:`rewrap_chain_key`).
"""

from __future__ import annotations

import datetime as dt
import secrets

from sync.audit import ChainWriter
from sync.audit_store.couchdb import DB_NAME, CouchAudit, entry_doc_id, head_doc_id
from sync.audit_store.links import genesis
from sync.auditverify import ChainReport, verify_chains
from sync.keys import MasterKey
from sync.store.couchdb.client import CouchClient

__all__ = ["DB_NAME", "ChainReport", "entry_doc_id", "genesis", "head_doc_id"]


def new_instance_id() -> str:
    """``20260101T120000-1a2b3c4d``: when this process started, and 8 random hex digits."""
    started = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{started}-{secrets.token_hex(4)}"


class CouchChain(ChainWriter):
    """This instance's chain in ``<prefix>audit`` (a :class:`ChainWriter` on CouchDB)."""

    def __init__(self, client: CouchClient, prefix: str, master: MasterKey, instance: str) -> None:
        super().__init__(CouchAudit.for_prefix(client, prefix), master, instance)


async def rewrap_chain_key(
    client: CouchClient, prefix: str, old: MasterKey, new: MasterKey
) -> None:
    """Master-key rotation: the shared chain key follows the data keys (resumable)."""
    await CouchAudit.for_prefix(client, prefix).rewrap_key(old, new)


async def verify_all(client: CouchClient, prefix: str, master: MasterKey) -> list[ChainReport]:
    """Check every instance's chain in ``<prefix>audit``: links, MACs, no gap, the head."""
    return await verify_chains(CouchAudit.for_prefix(client, prefix), master)
