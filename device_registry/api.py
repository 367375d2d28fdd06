"""The JSON (and CSV) API under ``/api/v1/devices``.

    GET   /api/v1/devices                       list: filters of ``listing``; format=csv
    POST  /api/v1/devices                       add {serial, imei, imei2?, model?, phone?,
                                                     os_version?, place?, notes?, worker?}
    GET   /api/v1/devices/{serial}              one device and its history
    PATCH /api/v1/devices/{serial}              edit {model?, os_version?, phone?, imei2?,
                                                      place?, notes?}
    POST  /api/v1/devices/{serial}/assign       {worker, reason?}
    POST  /api/v1/devices/{serial}/status       {status, reason?}
    POST  /api/v1/devices/{serial}/enrolment-code   -> {code, expires, qr_svg, ...}
    POST  /api/v1/devices/enroll                the app, as the worker: {code, serial}
                                                -> {device_token} (shown once)
    GET   /api/v1/devices/_refusals             refused attempts, newest first

Everything but ``enroll`` is for supervisors (their scope) and admins.  Bodies are
JSON; with the session cookie they must say so (``application/json``, which a
cross-site HTML form cannot send): ``sync.intent`` refuses anything else.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from device_registry import enrolment, inventory, qr, status
from device_registry.codes import qr_payload
from device_registry.context import device_list, note, parts, server_url, staff
from device_registry.guard import APP_VERSION_HEADER, OS_VERSION_HEADER, header_value
from device_registry.model import CSV_COLUMNS, Device
from device_registry.verdict import TOKEN_HEADER, Kind, Refusal
from sync.errors import BadRequest, UnsupportedMediaType
from sync.http import csv_download, integer, json_response, read_object
from sync.ratelimit import Limited

log = structlog.get_logger("fieldsync.devices")

NO_STORE = {"Cache-Control": "no-store"}


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise UnsupportedMediaType("Send a JSON body with Content-Type: application/json.")
    return await read_object(request)


def _text(body: dict[str, Any], key: str, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise BadRequest(f"{key} is required")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return value


async def list_devices(request: web.Request) -> web.StreamResponse:
    caller = await staff(request)
    statuses = request.query.getall("status", [])
    _, devices, counts = await device_list(request, caller, request.query, statuses)
    fmt = request.query.get("format") or None  # empty, like every other filter: not given
    if fmt not in (None, "json", "csv"):
        raise BadRequest("format must be json or csv (or send Accept: text/csv)")
    wants_csv = fmt == "csv" or request.headers.get("Accept") == "text/csv"
    if wants_csv:
        return csv_response(devices)
    return json_response(
        {"total": len(devices), "counts": counts, "devices": [d.to_json() for d in devices]}
    )


def csv_response(devices: list[Device]) -> web.Response:
    return csv_download("devices.csv", CSV_COLUMNS, (d.csv_row() for d in devices))


async def add_device(request: web.Request) -> web.Response:
    caller = await staff(request)
    body = await _body(request)
    new = inventory.validate_new(
        serial=_text(body, "serial", required=True) or "",
        imei=_text(body, "imei", required=True) or "",
        imei2=_text(body, "imei2"),
        model=_text(body, "model") or "",
        os_version=_text(body, "os_version") or "",
        phone=_text(body, "phone"),
        place=_text(body, "place"),
        notes=_text(body, "notes") or "",
    )
    worker = _text(body, "worker")
    detail = f"device {new.serial}: place {new.place or '-'}, worker {worker or '-'}"
    said = note(request, caller, "device_add", detail)
    device = await parts(request).devices.add(new, caller.name, caller.scope, worker, said)
    return json_response(device.to_json(), status=201)


async def get_device(request: web.Request) -> web.Response:
    caller = await staff(request)
    serial = request.match_info["serial"]
    devices = parts(request).devices
    device = inventory.visible(await devices.get(serial), serial, caller.scope)
    entries = await devices.history(device.serial)
    return json_response({**device.to_json(), "history": [e.to_json() for e in entries]})


async def edit_device(request: web.Request) -> web.Response:
    caller = await staff(request)
    body = await _body(request)
    changes = {key: _text(body, key) for key in body}
    serial = request.match_info["serial"]
    said = note(
        request, caller, "device_edit", f"device {serial}: {', '.join(sorted(changes))} changed"
    )
    device = await parts(request).devices.edit(serial, changes, caller.name, caller.scope, said)
    return json_response(device.to_json())


async def assign_device(request: web.Request) -> web.Response:
    caller = await staff(request)
    body = await _body(request)
    worker, reason = _text(body, "worker", required=True) or "", _text(body, "reason") or ""
    serial = request.match_info["serial"]
    said = note(request, caller, "device_assign", f"device {serial}: worker {worker}")
    device = await parts(request).devices.assign(
        serial, worker, caller.name, caller.scope, reason, said
    )
    return json_response(device.to_json())


async def set_status(request: web.Request) -> web.Response:
    caller = await staff(request)
    body = await _body(request)
    target = status.parse(_text(body, "status", required=True) or "")
    reason = _text(body, "reason") or ""
    serial = request.match_info["serial"]
    said = note(request, caller, "device_status", f"device {serial}: status {target.value}")
    device = await parts(request).devices.mark(
        serial, target, caller.name, caller.scope, reason, said
    )
    return json_response(device.to_json())


async def issue_code(request: web.Request) -> web.Response:
    caller = await staff(request)
    serial = request.match_info["serial"]
    said = note(request, caller, "device_code", f"device {serial}: enrolment code issued")
    issued = await parts(request).devices.issue_code(serial, caller.name, caller.scope, None, said)
    payload = qr_payload(issued.code, issued.serial, server_url(parts(request).config))
    body = {
        "code": issued.code,
        "serial": issued.serial,
        "worker": issued.worker,
        "expires": issued.expires,
        "qr_payload": payload,
        "qr_svg": qr.svg(payload),
    }
    return json_response(body, status=201, headers=NO_STORE)


async def enroll(request: web.Request) -> web.Response:
    """The app exchanges an enrolment code for its device token (as the worker).

    The code is looked up before the password is checked: were it the other way
    round, "unknown code" would tell whoever guesses a worker's password, without a
    real code, that the password was right.  Code guesses are limited per address.
    """
    p = parts(request)
    body = await _body(request)
    code, serial = _text(body, "code", required=True) or "", _text(body, "serial", required=True)
    await _known_code(request, code, (serial or "")[:64])
    caller = await p.auth.require(request)
    guard, user_key = p.registry.guard, f"user:{caller.name}"
    versions = (header_value(request, APP_VERSION_HEADER), header_value(request, OS_VERSION_HEADER))
    serial = (serial or "")[:64]
    try:  # counted before the code is looked up: parallel guesses cannot pass the limit
        reservation = await guard.limiter.reserve((user_key,))
    except Limited:
        refusal = Refusal(Kind.ENROLMENT, "too many failed enrolment attempts", serial)
        await guard.refuse(request, caller.user, refusal, user_key)
    try:
        done = await p.devices.enrol(code, serial, caller.name, versions=versions)
    except enrolment.EnrolmentRefused as exc:
        refusal = Refusal(Kind.ENROLMENT, exc.reason, serial)
        await guard.refuse(request, caller.user, refusal, error=exc)  # already counted
    await guard.limiter.forgive(reservation)
    log.info("device_enrolled", serial=done.serial, worker=done.worker)
    body = {"device_token": done.token, "serial": done.serial, "worker": done.worker}
    return json_response({**body, "header": TOKEN_HEADER}, status=201, headers=NO_STORE)


async def _known_code(request: web.Request, code: str, serial: str) -> None:
    """Refuse a malformed or unknown code (403), whoever asks; counted per address first."""
    p = parts(request)
    guard, ip_key = p.registry.guard, f"ip:{request.remote or '-'}"
    try:  # counted before the look-up: parallel guesses cannot pass the limit
        reservation = await guard.limiter.reserve((ip_key,))
    except Limited:
        refusal = Refusal(Kind.ENROLMENT, "too many failed enrolment attempts", serial)
        await guard.refuse(request, None, refusal, ip_key)
    try:
        await p.devices.check_known(code)
    except enrolment.EnrolmentRefused as exc:
        refused = Refusal(Kind.ENROLMENT, exc.reason, serial)
        await guard.refuse(request, None, refused, error=exc)
    await guard.limiter.forgive(reservation)


async def list_refusals(request: web.Request) -> web.Response:
    caller = await staff(request)
    p = parts(request)
    limit = integer(request, "limit", 100, minimum=1) or 100
    await p.registry.guard.writes.drain()
    serials = None
    if not caller.is_admin:
        devices = await p.devices.list_all()
        serials = frozenset(d.serial for d in devices if d.visible_to(caller.scope))
    return json_response({"refusals": await p.devices.refusals(serials, min(limit, 1000))})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/devices", list_devices)
    app.router.add_post("/api/v1/devices", add_device)
    app.router.add_post("/api/v1/devices/enroll", enroll)
    app.router.add_get("/api/v1/devices/_refusals", list_refusals)
    app.router.add_get("/api/v1/devices/{serial}", get_device)
    app.router.add_patch("/api/v1/devices/{serial}", edit_device)
    app.router.add_post("/api/v1/devices/{serial}/assign", assign_device)
    app.router.add_post("/api/v1/devices/{serial}/status", set_status)
    app.router.add_post("/api/v1/devices/{serial}/enrolment-code", issue_code)
