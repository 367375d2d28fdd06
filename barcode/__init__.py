"""Patient IDs: check digits, allocation, ID cards, and reading photos of cards.

Pure logic (no aiohttp, no store)::

    checkdigit, luhn, verhoeff   check digits (the one front door: checkdigit)
    ids                          spelling sequence numbers as IDs
    code128, cards, sheet        Code 128 encoder; card layout -> PNG, SVG; PDF sheets
    images, variants, decode     upload checks; OpenCV variants; zbar + check digit
    corpus                       synthetic phone photos of cards (tests, bench)

Over the store and the server::

    ports                        the patient-ID port: unique IDs, retirement, device blocks
    embedded, couchdb, memory    its adapters (SQLite tables, CouchDB, a dict for tests)
    backends                     the one place that chooses the adapter from the config
    service                      allocation, scanning off the loop, patient lookup
    routes, cli, bench           HTTP API, ``fieldsync patient-id``, ``make bench``
"""
