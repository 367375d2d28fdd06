"""Where the wrapped data keys live: a port (:mod:`sync.datakeys.ports`) and its adapters.

    embedded   the data dir's SQLite file (table ``data_keys``)
    couchdb    the CouchDB database ``<prefix>keys``, shared by every instance
    memory     a dict, for tests

:mod:`sync.datakeys.backends` is the one place that picks the adapter.
"""
