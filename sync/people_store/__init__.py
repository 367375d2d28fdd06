"""Users, places and sessions behind one port (``ports``), with its adapters.

ports            the AccountStore and LoginLimits protocols, and their guarantees
embedded         SQLite (the data dir's file), through the server's single writer
embedded_tables  the SQL of that file's tables, plain functions over a connection
couchdb          CouchDB / Cloudant (``<prefix>accounts``), safe with many instances
couchdb_guard    one change at a time of what the cross-document rules look at
limits           login-guessing counters of one process (the embedded store)
couchdb_limits   login-guessing counters shared in CouchDB by every instance
backends         the one place that picks the adapters from the configuration
commands         the management commands (``fieldsync user/place ...``) over the port
"""
