"""The phone inventory: devices, enrolment, device-bound sync and revocation.

Pure logic (no aiohttp, no store), tested with plain tables:

    validators   serial numbers, IMEIs (Luhn check digit), E.164 phone numbers
    status       the device status enum and its transitions table
    codes        enrolment codes and device tokens: generation, formatting, hashing
    verdict      whether a device token may sync, and the reason when it may not
    ratelimit    sliding-window failure counting (429 after too many)
    listing      filtering, sorting and counting a device list

Over the store (plain functions over a ``sqlite3.Connection``, like ``sync.accounts``):

    schema       the registry's tables
    inventory    devices, assignment, status changes and their history
    enrolment    enrolment codes, device tokens, refused attempts, last-sync updates
    lookup       phone number -> active device -> worker -> places (for the SMS gateway)

At the edges: ``guard`` (the device check every authenticated request passes),
``api`` (JSON and CSV under ``/api/v1/devices``), ``pages`` (supervisor HTML under
``/supervisor``), ``workers`` (workers' sync health, ``/api/v1/workers``) and
``worker_pages`` (``/supervisor/workers``), ``routes`` (what the app factory mounts)
and ``cli``.
"""
