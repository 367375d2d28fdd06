"""The shape :meth:`DeviceStore.export_all` gives and :meth:`DeviceStore.import_all` takes.

A dump is ``{table: [row, ...]}`` with the embedded store's tables and columns
(below), whichever adapter made it: rows of ``device_history``,
``enrolment_codes`` and ``device_tokens`` name their device by the ``id`` of a
``devices`` row of the same dump.  Codes and tokens are only ever their
SHA-256 (``code_hash``, ``token_hash``).  ``fieldsync migrate`` copies a
deployment's devices with ``export_all`` on the embedded store and
``import_all`` on CouchDB; running it again adds nothing twice.
"""

from __future__ import annotations

TABLES: dict[str, tuple[str, ...]] = {
    "devices": (
        "id",
        "serial",
        "imei",
        "imei2",
        "model",
        "os_version",
        "app_version",
        "phone",
        "worker",
        "place",
        "issued",
        "status",
        "last_sync",
        "notes",
        "created",
        "updated",
    ),
    "device_history": (
        "id",
        "device",
        "at",
        "actor",
        "action",
        "from_status",
        "to_status",
        "from_worker",
        "to_worker",
        "reason",
    ),
    "enrolment_codes": (
        "code_hash",
        "device",
        "worker",
        "issued_by",
        "created",
        "expires",
        "used",
        "superseded",
    ),
    "device_tokens": ("token_hash", "device", "worker", "created", "revoked", "revoked_reason"),
    "device_refusals": (
        "id",
        "at",
        "ip",
        "user",
        "serial",
        "kind",
        "status",
        "method",
        "path",
        "reason",
    ),
}
