"""The phone inventory: devices, enrolment, device-bound sync and revocation.

Pure logic (no aiohttp, no store), tested with plain tables:

    validators   serial numbers, IMEIs (Luhn check digit), E.164 phone numbers
    status       the device status enum and its transitions table
    codes        enrolment codes and device tokens: generation, formatting, hashing
    verdict      whether a device token may sync, and the reason when it may not
    ratelimit    sliding-window failure counting (429 after too many)
    listing      filtering, sorting and counting a device list

The rules of a change, pure too: ``inventory`` (adding, editing, assigning,
marking: what a change does, as a value) and ``enrolment`` (codes, tokens, why a
code cannot be used).

Storage, behind the device port (``ports``: its guarantees in the docstring):

    embedded      the data dir's SQLite file (``embedded_sql``, ``embedded_schema``)
    couchdb       ``<prefix>devices`` in CouchDB, safe with many instances
                  (``couchdb_docs``: the documents; ``couchdb_dump``: export/import)
    limits        the guard's refused-attempt counters (this process's, or shared)
    backends      the one place that picks them from the configuration
    dump          the shape of ``export_all``/``import_all`` (moving a deployment)
    lookup        phone number -> active device -> worker -> places (for the SMS gateway)

Workers and places are read through the accounts port (``sync.people_store``);
the embedded adapter joins the ``users`` table of its own file instead, in the
change's transaction.

At the edges: ``guard`` (the device check every authenticated request passes),
``api`` (JSON and CSV under ``/api/v1/devices``), ``pages`` (supervisor HTML under
``/supervisor``), ``workers`` (workers' sync health, ``/api/v1/workers``) and
``worker_pages`` (``/supervisor/workers``), ``routes`` (what the app factory mounts)
and ``cli``.
"""
