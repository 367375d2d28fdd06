"""Where the audit trail is stored: one port, three adapters, one place choosing.

ports.py              AuditStore (typing.Protocol) and the guarantees every adapter keeps
links.py              the chain's arithmetic (entries, keyed links, heads, the sealed key)
embedded.py           SQLite: the data dir's chain, appended inside the change's transaction
embedded_journal.py   the server's writes into it: group commits, read-journal moves
embedded_verify.py    checking it in one snapshot (``audit verify``, the start-up check)
couchdb.py            CouchDB: one chain per server instance in ``<prefix>audit``
memory.py             lists, for tests
backends.py           the one place that picks the adapters from the configuration
"""
