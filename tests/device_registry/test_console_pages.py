"""The console frame on the device pages (issue 13, points 1 and 5): navigation, language,
time zone, place names, search, and confirmed lost/stolen/retired."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
from device_helpers import IMEIS, Client, Devices
from test_device_pages import csrf_of, fleet, log_in

from device_registry.console import Shell
from sync.app import create_app
from sync.cli import main
from sync.config import Config, ConfigError, from_env
from sync.keys import load_master_key
from sync.people_store import embedded_tables
from sync.store.schema import connect, db_path, initialise


def name_place(data_dir: Path, place: str, parent: str, name: str) -> None:
    with closing(connect(db_path(data_dir))) as conn:
        embedded_tables.add_place(conn, place, parent, name)
        conn.commit()


async def test_the_login_page_has_the_frame_without_sections(client: Client) -> None:
    html = await (await client.get("/supervisor/login")).text()
    assert '<html lang="en">' in html and 'href="#main"' in html and '<main id="main"' in html
    assert "<nav" not in html and "Log out" not in html  # nobody signed in yet
    assert "Times are shown in UTC." in html


async def test_every_device_page_has_one_navigation_and_log_out(
    client: Client, devices: Devices
) -> None:
    await fleet(devices)
    await log_in(client, "sam")
    for path in ("/supervisor/devices", "/supervisor/devices/A1", "/supervisor/devices/NOPE"):
        html = await (await client.get(path)).text()
        nav = re.search(r"<nav aria-label=\"Sections\">(.*?)</nav>", html)
        assert nav, path
        assert re.findall(r'href="([^"]+)"', nav.group(1)) == [
            "/supervisor/workers",
            "/supervisor/devices",
            "/supervisor/sms",
            "/supervisor/refusals",
        ]
        assert 'action="/supervisor/logout"' in html and "Signed in as <strong>sam" in html
        assert 'action="/supervisor/language"' in html
    devices_page = await (await client.get("/supervisor/devices")).text()
    assert '<a href="/supervisor/devices" aria-current="page">' in devices_page


async def test_a_supervisor_switches_to_swahili_and_back(
    client: Client, devices: Devices, data_dir: Path
) -> None:
    await fleet(devices)
    await log_in(client, "sam")
    page = await (await client.get("/supervisor/devices/A1")).text()
    form = {"csrf": csrf_of(page), "language": "sw", "next": "/supervisor/devices/A1"}
    response = await client.post("/supervisor/language", data=form, allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (303, "/supervisor/devices/A1")
    html = await (await client.get("/supervisor/devices")).text()
    assert '<html lang="sw">' in html
    for word in ("Wahudumu", "Vifaa", "Rekodi zilizokataliwa", "Toka", "Tafuta", "Chuja"):
        assert word in html, word
    assert ">Log out<" not in html and ">Filter<" not in html
    device = await (await client.get("/supervisor/devices/A1")).text()
    assert "Historia" in device and "Vitendo" in device and "Imekabidhiwa" in device
    # Only sam's pages changed: the choice is his own.
    with closing(connect(db_path(data_dir))) as conn:
        assert (
            embedded_tables.language(conn, "sam") == "sw"
            and embedded_tables.language(conn, "admin") == "en"
        )
    form = {"csrf": csrf_of(html), "language": "en", "next": "//evil.example/"}
    response = await client.post("/supervisor/language", data=form, allow_redirects=False)
    assert response.headers["Location"] == "/supervisor/workers"  # never off the site: home
    assert '<html lang="en">' in await (await client.get("/supervisor/devices")).text()


async def test_choosing_a_language_needs_the_form_token_and_a_known_language(
    client: Client, devices: Devices
) -> None:
    await log_in(client, "sam")
    response = await client.post("/supervisor/language", data={"language": "sw"})
    assert response.status == 403
    page = await (await client.get("/supervisor/devices")).text()
    response = await client.post(
        "/supervisor/language", data={"csrf": csrf_of(page), "language": "fr"}
    )
    assert response.status == 400 and "language must be one of en, sw" in await response.text()


def test_an_admin_sets_a_language_from_the_command_line(
    capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    load_master_key(data_dir / "master.key", create=True)  # as `fieldsync init` leaves it
    assert main(["user", "language", "sam", "sw", "--data-dir", str(data_dir)]) == 0
    assert "user sam: supervisor pages in sw" in capsys.readouterr().out
    with closing(connect(db_path(data_dir))) as conn:
        assert embedded_tables.language(conn, "sam") == "sw"
    with pytest.raises(SystemExit):
        main(["user", "language", "sam", "fr", "--data-dir", str(data_dir)])


def test_the_time_zone_setting_is_checked_at_start_up() -> None:
    assert from_env(env={"FIELDSYNC_TIME_ZONE": "Africa/Nairobi"}).time_zone == "Africa/Nairobi"
    assert from_env(env={}).time_zone == "UTC"
    for bad in ("Mars/Olympus", "../../etc/passwd", "EAT+3"):
        with pytest.raises(ConfigError) as raised:
            from_env(env={"FIELDSYNC_TIME_ZONE": bad})
        assert "FIELDSYNC_TIME_ZONE" in str(raised.value)
        assert "Africa/Nairobi" in str(raised.value)


def test_times_are_shown_in_the_programme_zone() -> None:
    nairobi = Shell("sam", "t", "devices", zone="Africa/Nairobi")
    assert nairobi.when("2026-05-01T21:30:00+00:00") == "2026-05-02 00:30"
    assert nairobi.when("2026-05-01T21:30:00.000000Z") == "2026-05-02 00:30"
    assert Shell("sam", "t", "devices").when("2026-05-01T21:30:00Z") == "2026-05-01 21:30"
    assert nairobi.when(None) == "—"


async def test_device_pages_show_times_in_the_zone_and_no_raw_iso(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> None:
    client = await aiohttp_client(create_app(replace(config, time_zone="Africa/Nairobi")))
    devices = Devices(client)
    await devices.add("A1", IMEIS[0], worker="alice")
    _, body = await devices.call("GET", "/api/v1/devices/A1")
    at = dt.datetime.fromisoformat(body["history"][0]["at"])
    local = (at + dt.timedelta(hours=3)).strftime("%Y-%m-%d %H:%M")
    await log_in(client, "sam")
    html = await (await client.get("/supervisor/devices/A1")).text()
    assert local in html and "Times are shown in Africa/Nairobi." in html
    assert body["history"][0]["at"][:16] not in html  # not the raw UTC time
    assert " UTC" not in html


async def test_places_are_shown_by_name(client: Client, devices: Devices, data_dir: Path) -> None:
    name_place(data_dir, "area-a9", "facility-a", "Kibera North")
    await devices.add("S9", IMEIS[3], place="area-a9")
    await log_in(client, "sam")
    listing = await (await client.get("/supervisor/devices")).text()
    assert "(Kibera North)" in listing and "(area-a9)" not in listing
    assert '<option value="area-a9">Kibera North</option>' in listing
    device = await (await client.get("/supervisor/devices/S9")).text()
    assert "<dd>Kibera North</dd>" in device


async def test_one_box_searches_serial_imei_and_phone(client: Client, devices: Devices) -> None:
    await devices.add("TAB-7", IMEIS[0], worker="alice", phone="+254712345678")
    await devices.add("B1", IMEIS[1], worker="bob", phone="+254700000002")
    await log_in(client, "sam")

    async def found(q: str) -> list[str]:
        html = await (await client.get("/supervisor/devices", params={"q": q})).text()
        return re.findall(r'<a href="/supervisor/devices/([^"?]+)">', html)

    assert await found("tab") == ["TAB-7"]
    assert await found(IMEIS[1][:9]) == ["B1"]
    assert await found("0712 345 678") == ["TAB-7"]  # the local way of writing it
    assert await found("+254700000002") == ["B1"]
    assert await found("nothing-like-it") == []
    assert await found("") == ["B1", "TAB-7"]
    html = await (await client.get("/supervisor/devices", params={"q": "x" * 65})).text()
    assert "at most 64 characters" in html


@pytest.mark.parametrize("target", ["lost", "stolen", "retired"])
async def test_grave_changes_need_a_reason_and_a_tick(
    client: Client, devices: Devices, target: str
) -> None:
    await fleet(devices)
    await log_in(client, "sam")
    page = await (await client.get("/supervisor/devices/A1")).text()
    assert 'name="confirm" value="yes" required' in page
    token = csrf_of(page)
    for form in (
        {"status": target, "reason": "left on the bus"},  # no tick
        {"status": target, "confirm": "yes", "reason": "  "},  # no reason
    ):
        response = await client.post(
            "/supervisor/devices/A1/status", data={"csrf": token, **form}, allow_redirects=False
        )
        assert response.status == 400
        assert "say why and tick" in await response.text()
    _, body = await devices.call("GET", "/api/v1/devices/A1")
    assert body["status"] == "assigned"
    form = {"csrf": token, "status": target, "confirm": "yes", "reason": "left on the bus"}
    response = await client.post("/supervisor/devices/A1/status", data=form, allow_redirects=False)
    assert response.status == 303
    _, body = await devices.call("GET", "/api/v1/devices/A1")
    assert body["status"] == target


async def test_lighter_changes_need_no_tick(client: Client, devices: Devices) -> None:
    await fleet(devices)
    await log_in(client, "sam")
    page = await (await client.get("/supervisor/devices/A1")).text()
    form = {"csrf": csrf_of(page), "status": "in_repair"}
    response = await client.post("/supervisor/devices/A1/status", data=form, allow_redirects=False)
    assert response.status == 303


def test_an_older_data_dir_gains_the_language_column(tmp_path: Path) -> None:
    """A users table from before the console language: upgraded in place, English for all."""
    path = tmp_path / "fieldsync.sqlite3"
    with closing(connect(path)) as conn:
        conn.execute(
            "CREATE TABLE users(name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT "
            "NOT NULL, places TEXT NOT NULL, read_places TEXT NOT NULL, created TEXT NOT NULL, "
            "updated TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'active')"
        )
        conn.execute("INSERT INTO users VALUES('sam','supervisor','x','[]','[]','t','t','active')")
        conn.commit()
    initialise(path)
    with closing(connect(path)) as conn:
        assert embedded_tables.language(conn, "sam") == "en"
        embedded_tables.set_language(conn, "sam", "sw")
        assert embedded_tables.language(conn, "sam") == "sw"
