"""Every change to a device, from the JSON API or the supervisor pages, is in the audit trail."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from device_helpers import IMEIS, Client, Devices
from test_device_pages import csrf_of, log_in

from sync.store.schema import db_path


def _device_entries(data_dir: Path) -> list[tuple[str, str, str]]:
    """What is on disk the moment the answer is in (another connection, no flush)."""
    with closing(sqlite3.connect(db_path(data_dir))) as conn:
        rows = conn.execute(
            "SELECT actor, action, detail FROM audit WHERE action LIKE 'device%' ORDER BY id"
        )
        return [(a, b, c) for a, b, c in rows]


async def test_device_changes_through_the_api_are_audited(devices: Devices, data_dir: Path) -> None:
    await devices.add("SN1", IMEIS[0], worker="alice", phone="+254712345678", notes="x")
    await devices.call("PATCH", "/api/v1/devices/SN1", "sam", {"model": "Tecno", "notes": "y"})
    await devices.call("POST", "/api/v1/devices/SN1/status", "sam", {"status": "lost"})
    await devices.mark("SN1", "found")
    await devices.call("POST", "/api/v1/devices/SN1/assign", "sam", {"worker": "alice"})
    await devices.code("SN1", "sam")
    assert _device_entries(data_dir) == [
        ("admin", "device_add", "device SN1: place -, worker alice"),
        ("sam", "device_edit", "device SN1: model, notes changed"),
        ("sam", "device_status", "device SN1: status lost"),
        ("admin", "device_status", "device SN1: status in_stock"),
        ("sam", "device_assign", "device SN1: worker alice"),
        ("sam", "device_code", "device SN1: enrolment code issued"),
    ]


async def test_a_refused_change_leaves_no_entry(devices: Devices, data_dir: Path) -> None:
    await devices.add("SN1", IMEIS[0])
    status, _ = await devices.call("POST", "/api/v1/devices/SN1/assign", "admin", {"worker": "x"})
    assert status == 404
    assert [e[1] for e in _device_entries(data_dir)] == ["device_add"]


async def test_device_changes_on_the_pages_are_audited(
    client: Client, devices: Devices, data_dir: Path
) -> None:
    await devices.add("A1", IMEIS[0], worker="alice")
    await log_in(client, "sam")
    page = await (await client.get("/supervisor/devices/A1")).text()
    form = {"csrf": csrf_of(page), "status": "lost", "reason": "left on the bus", "confirm": "yes"}
    response = await client.post("/supervisor/devices/A1/status", data=form, allow_redirects=False)
    assert response.status == 303
    assert _device_entries(data_dir)[-1] == (
        "sam",
        "device_status",
        "device A1: status lost (supervisor page)",
    )
