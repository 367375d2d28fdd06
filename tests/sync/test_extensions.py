"""The extension points (``sync.extensions``): every package adds to the server through them.

The app's routes are exactly the packages' ``setup_routes`` and the replication
catch-all (last); the running app uses the registered validators, device checks
and intent checks; a package's worker starts once the store is open and stops
before it closes, in order; the ``fieldsync`` command groups are the registered
ones; and no module reaches into another's private names.
"""

from __future__ import annotations

import argparse
import ast
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sync_fixtures import Client, as_user

from barcode import routes as barcode_routes
from device_registry import pages
from device_registry import routes as device_registry_routes
from forms import routes as forms_routes
from forms.docschema import DocumentValidator
from sms_gateway import routes as sms_gateway_routes
from sms_gateway import sealing
from sms_gateway import settings as sms_settings
from sync import activity, cli, packages
from sync.app import create_app
from sync.appkeys import AUTH, CONFIG, STORE
from sync.clitools import HELP_FORMAT
from sync.config import Config
from sync.extensions import EXTENSIONS, Extensions, collect
from sync.intent import INTENT_CHECKS
from sync.refusals import embedded_sealing as refusal_sealing
from sync.refusals import routes as refusals_routes
from sync.replication import routes as replication_routes
from sync.replication.routes import REPLICATION
from sync.store.schema import db_path
from sync.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("sync", "barcode", "sms_gateway", "device_registry", "forms")
Route = tuple[str, str, str]  # method, path, the handler's module and name


def _routes(app: web.Application) -> list[Route]:
    found = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        handler = f"{route.handler.__module__}.{route.handler.__qualname__}"
        found.append((route.method, str(info.get("path") or info.get("formatter")), handler))
    return found


def _mounted_by(setup_routes: Callable[[web.Application], None]) -> list[Route]:
    app = web.Application()
    setup_routes(app)
    return _routes(app)


# -- routes ----------------------------------------------------------------------------
def test_the_apps_routes_are_the_packages_and_the_catch_all_last(config: Config) -> None:
    app = create_app(config)
    ext = app[EXTENSIONS]
    expected = [r for setup in ext.routes for r in _mounted_by(setup)]
    catch_all = _mounted_by(replication_routes.setup_routes)
    assert sorted(_routes(app)) == sorted(expected + catch_all)
    # The replication routes' /{db} patterns would shadow anything added after them.
    assert _routes(app)[-len(catch_all) :] == catch_all


def test_every_package_mounts_its_routes_through_setup_routes(config: Config) -> None:
    ext = create_app(config)[EXTENSIONS]
    for package in (refusals_routes, barcode_routes, device_registry_routes, sms_gateway_routes):
        assert package.setup_routes in ext.routes
        assert _mounted_by(package.setup_routes), f"{package.__name__} mounts routes"
    assert all(setup.__name__ == "setup_routes" for setup in ext.routes)


# -- what the running app uses ----------------------------------------------------------------
def test_the_registry_holds_what_each_package_registers() -> None:
    ext = packages.extensions()
    assert ext.validators == [forms_routes.document_validator]
    assert ext.device_checks == [device_registry_routes.device_check]
    assert ext.intent_checks == [pages.proves_intent]
    assert ext.workers == [
        activity.recording,  # the core's: sync activity
        refusals_routes.refusals_worker,
        barcode_routes.barcode_resources,
        device_registry_routes.registry,
        sms_gateway_routes.sms_worker,
    ]
    assert ext.sealed_blobs == [refusal_sealing.COLUMN, *sealing.COLUMNS]
    assert ext.settings == [*forms_routes.SETTINGS, *sms_settings.SETTINGS]


async def test_the_running_app_uses_the_registered_checks_and_validators(
    aiohttp_client: Callable[..., Awaitable[Client]], config: Config
) -> None:
    client = await aiohttp_client(create_app(config))
    app = client.server.app
    ext = app[EXTENSIONS]
    assert app[AUTH].device_checks == tuple(ext.device_checks)
    assert app[INTENT_CHECKS] == tuple(ext.intent_checks)
    [validator] = app[REPLICATION].parts.validators
    assert isinstance(validator, DocumentValidator)
    # ... and the validator refuses what it should: a person whose _id breaks the rule.
    person = {"type": "person", "name": "Jane", "patient_id": "1234", "place": "area-a1"}
    response = await client.put("/health/not-person-1234", json=person, headers=as_user("admin"))
    assert response.status == 403, await response.text()
    assert (await response.json())["error"] == "forbidden"


# -- workers ----------------------------------------------------------------------------------
class Events:
    """What the test package's workers saw, in order; the store's close is recorded too."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def worker(self, name: str) -> Callable[[web.Application], AsyncIterator[None]]:
        async def work(app: web.Application) -> AsyncIterator[None]:
            await self._use_store(app, f"{name} started")
            assert REPLICATION in app and AUTH in app  # the core is open before any worker
            yield
            await self._use_store(app, f"{name} stopped")

        return work

    async def _use_store(self, app: web.Application, event: str) -> None:
        """A real write: it fails if the store is not open."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE IF NOT EXISTS worker_events(event TEXT)")
            conn.execute("INSERT INTO worker_events VALUES(?)", (event,))

        await app[STORE].write_tx(write)
        self.seen.append(event)


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Events:
    """A test package registering two workers, after the real packages; store closes seen."""
    recorded = Events()

    def extend(ext: Extensions) -> None:
        ext.workers.extend((recorded.worker("first"), recorded.worker("second")))

    monkeypatch.setattr(packages, "PACKAGES", (*packages.PACKAGES, extend))
    close = SqliteStore.close

    async def closing(store: SqliteStore) -> None:
        recorded.seen.append("store closed")
        await close(store)

    monkeypatch.setattr(SqliteStore, "close", closing)
    return recorded


async def test_workers_start_after_the_store_opens_and_stop_before_it_closes(
    config: Config, events: Events
) -> None:
    client: Client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    assert events.seen == ["first started", "second started"]
    response = await client.get("/health", headers=as_user("admin"))
    assert response.status == 200
    await client.close()
    assert events.seen == [
        "first started",
        "second started",
        "second stopped",
        "first stopped",
        "store closed",
    ]
    written = sqlite3.connect(db_path(config.data_dir))
    try:
        rows = [r[0] for r in written.execute("SELECT event FROM worker_events ORDER BY rowid")]
    finally:
        written.close()
    assert rows == events.seen[:4]


async def test_a_worker_that_fails_to_start_stops_the_ones_started(
    config: Config, events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(app: web.Application) -> AsyncIterator[None]:
        raise RuntimeError(f"cannot start on {app[CONFIG].db_name}")
        yield  # an async generator, like every worker

    def extend(ext: Extensions) -> None:
        ext.workers.append(broken)

    monkeypatch.setattr(packages, "PACKAGES", (*packages.PACKAGES, extend))
    client: Client = TestClient(TestServer(create_app(config)))
    try:
        with pytest.raises(RuntimeError, match="cannot start on health"):
            await client.start_server()
    finally:
        await client.close()
    assert events.seen == [
        "first started",
        "second started",
        "second stopped",
        "first stopped",
        "store closed",
    ]


async def test_a_worker_that_fails_to_stop_lets_the_others_stop(
    config: Config, events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def stuck(app: web.Application) -> AsyncIterator[None]:
        yield
        raise RuntimeError("cannot stop")

    def extend(ext: Extensions) -> None:
        ext.workers.append(stuck)  # its package comes first: started first, stopped last

    monkeypatch.setattr(packages, "PACKAGES", (extend, *packages.PACKAGES))
    client: Client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    with pytest.raises(RuntimeError, match="cannot stop"):
        await client.close()
    assert events.seen[2:] == ["second stopped", "first stopped", "store closed"]


def test_collect_keeps_the_order_of_the_packages() -> None:
    def one(ext: Extensions) -> None:
        ext.routes.append(lambda app: None)
        ext.cli_commands.append(lambda sub: None)

    def two(ext: Extensions) -> None:
        ext.validators.append(forms_routes.document_validator)

    ext = collect((one, two))
    assert (len(ext.routes), len(ext.cli_commands), ext.validators) == (
        1,
        1,
        [forms_routes.document_validator],
    )


# -- the command line -------------------------------------------------------------------------
def _commands(parser: argparse.ArgumentParser) -> list[str]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


def test_the_commands_groups_are_the_registered_ones_in_order() -> None:
    registered = argparse.ArgumentParser(formatter_class=HELP_FORMAT)
    sub = registered.add_subparsers()
    for add in packages.extensions().cli_commands:
        add(sub)
    core = ["init", "serve", "settings", "place", "user"]
    assert _commands(cli.build_parser()) == core + _commands(registered)
    assert _commands(registered) == [
        "keys",
        "audit",
        "migrate",
        "patient-id",
        "device",
        "sms",
        "backup",
        "restore",
    ]


# -- no module reaches into another's private names -------------------------------------------
def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _reaches_in(tree: ast.Module) -> list[str]:
    """``from m import _x``, ``import m._x``, and ``m._x`` on an imported module ``m``."""
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found += [f"from {node.module} import {a.name}" for a in node.names if _private(a.name)]
            modules |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found += [
                f"import {a.name}" for a in node.names if any(map(_private, a.name.split(".")))
            ]
            modules |= {a.asname or a.name.split(".")[0] for a in node.names}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and _private(node.attr)
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = []
    files = [p for d in PACKAGE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 100
    for path in files:
        for what in _reaches_in(ast.parse(path.read_text(), str(path))):
            offenders.append(f"{path.relative_to(ROOT)}: {what}")
    assert offenders == [], (
        "a module uses another's private name; make it public where it belongs "
        "(the CLI's shared helpers are in sync.clitools)"
    )


def test_the_private_name_check_sees_each_form() -> None:
    source = "from sync.cli import _config\nimport a._b\nfrom sync import cli\ncli._with_conn\n"
    assert _reaches_in(ast.parse(source)) == [
        "from sync.cli import _config",
        "import a._b",
        "cli._with_conn",
    ]
