"""The devices step of ``fieldsync migrate`` goes through the devices port's export/import.

Without that port (no ``export_rows`` / ``CouchDevices.import_all``) the step
copies nothing and says so.  With it, the embedded export is what is imported,
and the check compares the counts per table that each side exports.  The port
is stood in for here by two small modules, so the step's wiring is tested
whether or not the real port is installed.
"""

from __future__ import annotations

import io
import sqlite3
import sys
import types
from typing import Any

import pytest

from sync.config import Endpoint
from sync.migrate import devices
from sync.migrate.steps import Context
from sync.store.couchdb.client import CouchClient

ROWS = {"devices": [{"id": 1, "serial": "A1"}, {"id": 2, "serial": "A2"}], "codes": []}


class FakeCouchDevices:
    imported: list[dict[str, Any]] = []

    @classmethod
    def for_prefix(cls, client: Any, prefix: str, accounts: Any) -> FakeCouchDevices:
        return cls()

    async def import_all(self, dump: dict[str, list[dict[str, Any]]]) -> int:
        self.imported.append(dump)
        return sum(len(rows) for rows in dump.values())

    async def export_all(self) -> dict[str, list[dict[str, Any]]]:
        return {"devices": ROWS["devices"][:1], "codes": []}  # one device lost on the way


@pytest.fixture
def ctx() -> Context:
    client = CouchClient(Endpoint("http://127.0.0.1:9"))
    return Context(sqlite3.connect(":memory:"), client, "p_", object(), io.StringIO())  # type: ignore[arg-type]


async def test_without_the_port_nothing_is_copied_and_it_says_so(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices, "port", lambda: None)
    await devices.copy(ctx)
    assert "devices: NOT COPIED" in ctx.out.getvalue()  # type: ignore[attr-defined]
    assert await devices.counts(ctx) == []


async def test_with_the_port_the_export_is_imported_and_counted(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedded = types.ModuleType("device_registry.embedded")
    embedded.export_rows = lambda conn: ROWS  # type: ignore[attr-defined]
    couchdb = types.ModuleType("device_registry.couchdb")
    couchdb.CouchDevices = FakeCouchDevices  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "device_registry.embedded", embedded)
    monkeypatch.setitem(sys.modules, "device_registry.couchdb", couchdb)
    monkeypatch.setattr(FakeCouchDevices, "imported", [])

    await devices.copy(ctx)
    assert FakeCouchDevices.imported == [ROWS]
    counted = {c.what: (c.embedded, c.in_couchdb, c.ok) for c in await devices.counts(ctx)}
    assert counted == {"devices: devices": (2, 1, False), "devices: codes": (0, 0, True)}
