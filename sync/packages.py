"""The packages the server is made of: each registers through :mod:`sync.extensions`.

One line each, in the order everything they register is used: their routes are
added, their workers start (and stop in reverse), their validators and device
checks run, their command groups appear in ``fieldsync --help``.  The app
factory (:mod:`sync.app`) and the ``fieldsync`` command (:mod:`sync.cli`) both
read this list and nothing else to find what the packages add.
"""

from __future__ import annotations

from barcode import routes as barcode_routes
from device_registry import routes as device_registry_routes
from forms import routes as forms_routes
from sms_gateway import routes as sms_gateway_routes
from sync import activity, auditcli, health, keycli, openapi
from sync import api as admin_api
from sync.backup import cli as backup_cli
from sync.extensions import Extend, Extensions, collect
from sync.migrate import run as migrate_run
from sync.refusals import routes as refusals_routes


def core(ext: Extensions) -> None:
    """The core's own: health and metrics, the admin API, the OpenAPI document; the
    ``keys``, ``audit`` and ``migrate`` commands; the sync-activity recorder.  (The
    replication routes are not here: they match nearly any path, so the app factory adds
    them after everything else.)"""
    ext.routes.extend((health.setup_routes, admin_api.setup_routes, openapi.setup_routes))
    ext.workers.append(activity.recording)
    ext.cli_commands.extend((keycli.register, auditcli.register, migrate_run.register))


PACKAGES: tuple[Extend, ...] = (
    core,
    refusals_routes.extend,  # refused records: GET /api/v1/refusals, recording, pruning
    barcode_routes.extend,  # patient IDs, ID cards, scans; `patient-id` commands
    device_registry_routes.extend,  # the phone inventory, enrolment, the device check
    forms_routes.extend,  # the document validator
    sms_gateway_routes.extend,  # coded SMS: gateway endpoints, processor, `sms` commands
    backup_cli.extend,  # the `backup` and `restore` commands
)


def extensions() -> Extensions:
    """A registry with every package's additions (a fresh one each call)."""
    return collect(PACKAGES)
