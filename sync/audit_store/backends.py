"""The one place that chooses the audit adapters (sync.audit_store.ports) from the configuration.

    the data dir's chain          sync.audit_store.embedded, always: admin changes and
                                  management commands change the data dir's SQLite
                                  file and append their entry in that same transaction
    the instances' chains         FIELDSYNC_COUCHDB_URL set: sync.audit_store.couchdb
                                  (database ``<prefix>audit``, each server instance's
                                  own chain of reads, refusals and document writes);
                                  otherwise none (the data dir's chain records all)

The server (:mod:`sync.app`) and ``fieldsync audit verify`` (:mod:`sync.auditcli`)
come here, so they never look in different places; key rotation re-seals the
CouchDB chain key on the client it already holds (:func:`sync.couchaudit.rewrap_chain_key`,
the same adapter, the same ``<prefix>audit``).
"""

from __future__ import annotations

from sync.audit_store.couchdb import CouchAudit
from sync.audit_store.ports import AuditStore
from sync.config import Config
from sync.store.couchdb.running import open_client


def instance_store(config: Config) -> AuditStore | None:
    """The store of the instances' chains: CouchDB's when configured, else None.

    The caller closes it (:meth:`AuditStore.close` closes its client)."""
    if not config.couchdb_url:
        return None
    return CouchAudit.for_prefix(open_client(config), config.couchdb_prefix)
