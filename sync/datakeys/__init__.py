"""Where the wrapped data keys live: a port (:mod:`sync.datakeys.ports`) and its adapters.

    embedded   the data dir's SQLite file (table ``data_keys``)
    couchdb    the CouchDB database ``<prefix>keys``, shared by every instance
    memory     a dict, for tests

The ``fieldsync keys`` commands' work on the data dir's file (the embedded side)::

    embedded_admin      listing, checking and re-wrapping data keys (master-key rotation)
    embedded_rotation   data-key rotation: every sealed blob re-sealed, old versions gone
    embedded_shred      crypto-shredding a place

:mod:`sync.datakeys.backends` is the one place that picks the adapter.
"""
