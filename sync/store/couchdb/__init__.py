"""The CouchDB / Cloudant document backend (docs/adr/0001-couchdb-layout.md)."""

from sync.store.couchdb.running import background, open_store

__all__ = ["background", "open_store"]
