"""The Refused records pages in process: the list, one record opened, scope, escaping, audit.

(The real browser at phone and desktop widths, with axe: tests/clients/test_refusals_browser.py.)
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from shared_org import PASSWORD, PLACES, USERS
from sync_fixtures import Api, Client, seed

from device_registry.console import Shell
from device_registry.refusal_pages import SWAHILI_REFUSALS, refusals_section
from sync.appkeys import CONFIG
from sync.audit import AUDIT
from sync.config import Config
from sync.refusals import REFUSALS
from sync.refusals.reasons import REASONS
from sync.refusals.routes import RECORDER
from sync.scopes import Role
from sync.store.schema import db_path

MARKER = "<script>alert('kiboko')</script>"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    users = [*USERS, ("dina", Role.SUPERVISOR, ["district-b"], [])]
    seed(tmp_path / "data", PLACES, users)
    return tmp_path / "data"


@pytest.fixture
def config(data_dir: Path) -> Config:
    return Config(data_dir=data_dir, require_enrolment=False)


async def log_in(client: Client, name: str) -> None:
    page = await client.get("/supervisor/login")
    found = re.search(r'name="csrf" value="([^"]+)"', await page.text())
    assert found
    form = {"name": name, "password": PASSWORD, "csrf": found.group(1)}
    response = await client.post("/supervisor/login", data=form, allow_redirects=False)
    assert response.status == 303, await response.text()


def report(doc_id: str, weeks: int, place: str = "area-a1") -> dict[str, Any]:
    fields = {"weeks": weeks, "name": MARKER}
    return {"_id": doc_id, "type": "data_record", "form": "P", "place": place, "fields": fields}


async def test_list_and_record_pages(api: Api, client: Client) -> None:
    await api.bulk([report("bad-1", 50), report("out-1", 3, place="area-b1")], user="alice")
    await log_in(client, "sam")
    listing = await (await client.get("/supervisor/refusals")).text()
    assert "Does not match its form" in listing and "Outside the worker&#x27;s area" in listing
    assert "field &#x27;weeks&#x27;: must be at most 42" in listing
    assert 'aria-current="page"' in listing and "Refused records" in listing
    assert MARKER not in listing  # bodies are not on the list
    link = re.search(r'href="(/supervisor/refusals/\d+)">bad-1<', listing)
    assert link, listing
    response = await client.get(link.group(1))
    assert response.status == 200
    record = await response.text()
    assert "&lt;script&gt;alert(&#x27;kiboko&#x27;)&lt;/script&gt;" in record  # escaped JSON
    assert MARKER not in record
    assert '"weeks": 50' in record.replace("&quot;", '"')  # pretty JSON

    app = client.server.app
    await app[AUDIT].commit()
    with sqlite3.connect(db_path(app[CONFIG].data_dir)) as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM audit WHERE actor='sam'")]
    assert "refusals_read" in actions and "refusal_opened" in actions

    filtered = await (await client.get("/supervisor/refusals?worker=bob")).text()
    assert "No refused records." in filtered
    bad = await client.get("/supervisor/refusals?before=nonsense")
    assert bad.status == 400


async def test_another_districts_supervisor_sees_nothing(api: Api, client: Client) -> None:
    await api.bulk([report("bad-1", 50)], user="alice")
    await client.server.app[RECORDER].drain()
    [refusal] = await client.server.app[REFUSALS].for_workers(None, 10)
    await log_in(client, "dina")
    listing = await (await client.get("/supervisor/refusals")).text()
    assert "No refused records." in listing and "alice" not in listing
    response = await client.get(f"/supervisor/refusals/{refusal.id}")
    assert response.status == 404
    assert MARKER not in await response.text() and "alice" not in await response.text()
    assert (await client.get("/supervisor/refusals/999999")).status == 404
    assert (await client.get("/supervisor/refusals/x1")).status == 404


async def test_pages_need_a_staff_session(client: Client) -> None:
    response = await client.get("/supervisor/refusals", allow_redirects=False)
    assert response.status == 303 and "/supervisor/login" in response.headers["Location"]


async def test_refusals_section_for_the_worker_page(api: Api, client: Client) -> None:
    await api.bulk([report("bad-1", 50)], user="alice")
    await client.server.app[RECORDER].drain()
    refusals = await client.server.app[REFUSALS].for_workers(["alice"], 10)
    html = refusals_section(Shell("sam", "", "workers"), refusals)
    assert html.startswith('<h2 id="refused">Refused records</h2>')
    assert "bad-1" in html and "Does not match its form" in html
    swahili = refusals_section(Shell("sam", "", "workers", language="sw"), refusals)
    assert "Rekodi zilizokataliwa" in swahili and "Hailingani na fomu yake" in swahili
    assert "No refused records." in refusals_section(Shell("sam", "", "workers"), [])


def test_every_reason_and_advice_has_swahili() -> None:
    for said in REASONS.values():
        assert said.title in SWAHILI_REFUSALS and said.advice in SWAHILI_REFUSALS
