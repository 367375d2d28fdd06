"""The devices step: through the devices port's export and import, once that port is here.

The devices port (``device_registry.ports.DeviceStore``, built on another branch
at the time of writing) gives every adapter ``export_all``/``import_all``: rows
by table, imported idempotently (what is there is kept).  This step uses them —
``device_registry.embedded.export_rows`` on migrate's snapshot, then
``CouchDevices.import_all`` — and checks the counts per table with the CouchDB
adapter's ``export_all``.  Until that port is in this installation it copies
nothing and says so, in the output and the final summary: the inventory,
enrolment codes and device tokens then stay in the data dir.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from sync.migrate.progress import Progress
from sync.migrate.steps import Context, Count
from sync.people_store.couchdb import CouchAccounts

SKIPPED = (
    "NOT COPIED: this version has no devices port (export/import) yet; the device inventory, "
    "enrolment codes and device tokens stay in the data dir. Run migrate again after "
    "upgrading to a version that has it."
)


@dataclass(frozen=True)
class _Port:
    export_rows: Any  # (sqlite3.Connection) -> {table: [row, ...]}
    couch_devices: Any  # CouchDevices class: for_prefix(client, prefix, accounts)


def port() -> _Port | None:
    """The devices port's export and import, if this installation has them."""
    try:
        embedded = importlib.import_module("device_registry.embedded")
        couchdb = importlib.import_module("device_registry.couchdb")
    except ImportError:
        return None
    devices = getattr(couchdb, "CouchDevices", None)
    export_rows = getattr(embedded, "export_rows", None)
    if export_rows is None or not hasattr(devices, "import_all"):
        return None
    return _Port(export_rows, devices)


def _couch(ctx: Context, found: _Port) -> Any:
    accounts = CouchAccounts.for_prefix(ctx.client, ctx.prefix)
    return found.couch_devices.for_prefix(ctx.client, ctx.prefix, accounts)


async def copy(ctx: Context) -> None:
    found = port()
    if found is None:
        ctx.out.write(f"devices: {SKIPPED}\n")
        return
    rows: dict[str, list[dict[str, Any]]] = found.export_rows(ctx.conn)
    progress = Progress("devices", sum(len(r) for r in rows.values()), ctx.out)
    new = int(await _couch(ctx, found).import_all(rows))
    progress.advance(progress.total)
    progress.finish(f"({new} new in CouchDB)")


async def counts(ctx: Context) -> list[Count]:
    """Rows per table: the embedded export against CouchDB's."""
    found = port()
    if found is None:
        return []
    mine: dict[str, list[dict[str, Any]]] = found.export_rows(ctx.conn)
    theirs: dict[str, list[dict[str, Any]]] = await _couch(ctx, found).export_all()
    return [
        Count(f"devices: {table}", len(rows), len(theirs.get(table, [])))
        for table, rows in mine.items()
    ]
