"""Users, places and sessions behind one port (``ports``), with its adapters.

ports       the AccountStore and LoginLimits protocols, and their guarantees
embedded    SQLite (the data dir's file), through the server's single writer
couchdb     CouchDB / Cloudant (``<prefix>accounts``), safe with many instances
limits      login-guessing counters: one process's, or shared in CouchDB
backends    the one place that picks the adapters from the configuration
"""
