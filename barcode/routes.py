"""The barcode HTTP API, registered with the app factory by :func:`extend`.

    POST /api/v1/barcode/scan                  photo as the body (image/jpeg, image/png)
                                               or multipart field ``image``
         -> {"id", "valid", "reason", "patient": {"id", "name"} | null, "symbology"}
    POST /api/v1/patient-ids                   {"count": n}  -> 201 {"ids": [...]}
    POST /api/v1/patient-ids/blocks            {"size": n, "device"?}
                                               -> 201 {"block", "device", "created", "ids"}
    POST /api/v1/patient-ids/{id}/retire       {"reason"?}   admins and supervisors
    GET  /api/v1/patient-ids/{id}/card         ?format=png|svg (name filled if in scope)
    POST /api/v1/patient-ids/sheet             {"ids": [...]} -> application/pdf

A scan's ``patient`` is the person document ``person-<ID>`` (the convention
SMS registration follows too) with its ``name``, read with the caller's scope:
null when it is missing or outside the caller's document set, and never looked
up for an ID whose check digit fails.  Errors are the server's CouchDB-shaped
ones (barcode.errors for the scan's).
A block is recorded against the device the request comes from
(``Caller.device``, set by the device registry once a phone is enrolled);
without an enrolled device the body must name it in ``device``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import BodyPartReader, web

from barcode import cards, cli, couchdb
from barcode.backends import patient_id_store
from barcode.errors import ImageTooLarge
from barcode.ports import Status
from barcode.service import (
    PatientIds,
    Patients,
    Scanner,
    card_layouts,
    render_sheet,
    scan,
)
from barcode.settings import BarcodeSettings
from sync.appkeys import AUTH, CONFIG, STORE
from sync.errors import BadRequest, Forbidden, UnsupportedMediaType
from sync.extensions import Extensions
from sync.http import BODY_ERRORS, json_response, read_object
from sync.replication.context import Caller
from sync.replication.routes import REPLICATION
from sync.scopes import Role

log = structlog.get_logger("fieldsync.barcode")

IMAGE_TYPES = ("image/jpeg", "image/jpg", "image/png")
READ_CHUNK = 64 * 1024


@dataclass
class Barcode:
    settings: BarcodeSettings
    ids: PatientIds
    scanner: Scanner
    patients: Patients


BARCODE = web.AppKey("barcode", Barcode)


def extend(ext: Extensions) -> None:
    """Register the routes, the worker that opens the service, the commands, and the name
    of its CouchDB database."""
    ext.routes.append(setup_routes)
    ext.workers.append(barcode_resources)
    ext.cli_commands.append(cli.register)
    ext.couch_databases.append(couchdb.DB_NAME)


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/barcode/scan", scan_photo)
    app.router.add_post("/api/v1/patient-ids", new_ids)
    app.router.add_post("/api/v1/patient-ids/blocks", new_block)
    app.router.add_post("/api/v1/patient-ids/sheet", card_sheet)
    app.router.add_post("/api/v1/patient-ids/{id}/retire", retire_id)
    app.router.add_get("/api/v1/patient-ids/{id}/card", card)


async def barcode_resources(app: web.Application) -> AsyncIterator[None]:
    """Worker: the patient-ID store and the decoder threads (STORE and REPLICATION are open)."""
    config = app[CONFIG]
    settings = BarcodeSettings.from_mapping(config.extra.get("barcode", {}))
    async with contextlib.AsyncExitStack() as stack:
        ids = await stack.enter_async_context(patient_id_store(config, app[STORE]))
        rep = app[REPLICATION]
        scanner = Scanner(settings)
        stack.callback(scanner.close)
        app[BARCODE] = Barcode(
            settings, PatientIds(ids, settings), scanner, Patients(rep.reader, rep.config.db_name)
        )
        if not await scanner.available():
            log.warning("barcode_decoder_unavailable", missing="libzbar0", scans="503")
        yield


# -- handlers -----------------------------------------------------------------------


async def scan_photo(request: web.Request) -> web.Response:
    caller = await request.app[AUTH].require(request)
    barcode = request.app[BARCODE]
    data = await read_image(request, barcode.settings.max_image_bytes)
    result = await scan(barcode.scanner, barcode.patients, caller, data)
    log.info(  # never the image, nor the ID read (it names a patient)
        "barcode_scanned",
        valid=result.check.valid,
        reason=result.check.reason,
        symbology=result.symbology,
        patient_found=result.patient is not None,
    )
    return json_response(result.to_json())


async def new_ids(request: web.Request) -> web.Response:
    caller = await _allocator(request)
    count = _int_field(await read_object(request), "count")
    ids = await request.app[BARCODE].ids.allocate(count, caller.name)
    return json_response({"ids": ids}, status=201)


async def new_block(request: web.Request) -> web.Response:
    caller = await _allocator(request)
    body = await read_object(request)
    size = _int_field(body, "size")
    device = _block_device(caller, body.get("device"))
    block = await request.app[BARCODE].ids.reserve_block(size, device, caller.name)
    return json_response(
        {"block": block.id, "device": block.device, "created": block.created, "ids": block.ids},
        status=201,
    )


async def retire_id(request: web.Request) -> web.Response:
    caller = await request.app[AUTH].require(request)
    if caller.user.role not in (Role.ADMIN, Role.SUPERVISOR):
        raise Forbidden("Only admins and supervisors retire patient IDs.")
    body = await read_object(request) if request.can_read_body else {}
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise BadRequest("reason must be a string")
    retired = await request.app[BARCODE].ids.retire(request.match_info["id"], caller.name, reason)
    return json_response({"id": retired, "status": Status.RETIRED.value})


async def card(request: web.Request) -> web.Response:
    caller = await request.app[AUTH].require(request)
    barcode = request.app[BARCODE]
    fmt = request.query.get("format", "png")
    if fmt not in ("png", "svg"):
        raise BadRequest("format must be png or svg")
    [layout] = await card_layouts(
        barcode.patients, caller, [request.match_info["id"]], barcode.settings
    )
    if fmt == "svg":
        svg = await asyncio.to_thread(cards.render_svg, layout)
        return web.Response(text=svg, content_type="image/svg+xml")
    png = await asyncio.to_thread(cards.render_png, layout)
    return web.Response(body=png, content_type="image/png")


async def card_sheet(request: web.Request) -> web.Response:
    caller = await request.app[AUTH].require(request)
    barcode = request.app[BARCODE]
    ids = (await read_object(request)).get("ids")
    limit = barcode.settings.max_batch
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadRequest("ids must be an array of patient IDs")
    if not 1 <= len(ids) <= limit:
        raise BadRequest(f"a sheet holds 1 to {limit} cards")
    layouts = await card_layouts(barcode.patients, caller, ids, barcode.settings)
    return web.Response(body=await render_sheet(layouts), content_type="application/pdf")


# -- parsing ------------------------------------------------------------------------


async def read_image(request: web.Request, limit: int) -> bytes:
    """The photo from the body or the multipart field ``image``, at most ``limit`` bytes."""
    too_large = ImageTooLarge(f"The image is larger than the limit of {limit} bytes.")
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise too_large  # multipart framing allowed for; the part itself is checked below
    if request.content_type in IMAGE_TYPES:
        return await _read_capped(request.content.iter_chunked(READ_CHUNK), limit, too_large)
    if request.content_type == "multipart/form-data":
        try:
            return await _image_part(request, limit, too_large)
        except BODY_ERRORS as exc:
            raise BadRequest(f"The multipart body cannot be read: {exc}") from exc
    raise UnsupportedMediaType(
        "Send the photo as image/jpeg or image/png, or as the multipart/form-data field image."
    )


async def _image_part(request: web.Request, limit: int, too_large: ImageTooLarge) -> bytes:
    reader = await request.multipart()
    async for part in reader:
        if isinstance(part, BodyPartReader) and part.name == "image":
            return await _read_capped(_part_chunks(part), limit, too_large)
    raise BadRequest("The multipart body has no field named image.")


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(READ_CHUNK):
        yield chunk


async def _read_capped(chunks: AsyncIterator[bytes], limit: int, error: Exception) -> bytes:
    data = bytearray()
    async for chunk in chunks:
        data += chunk
        if len(data) > limit:
            raise error
    return bytes(data)


async def _allocator(request: web.Request) -> Caller:
    caller = await request.app[AUTH].require(request)
    if caller.user.role is Role.GATEWAY:
        raise Forbidden("SMS gateways do not allocate patient IDs.")
    return caller


def _int_field(body: dict[str, Any], field: str) -> int:
    """An integer field (default 1); the service checks its range."""
    value = body.get(field, 1)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{field} must be an integer")
    return value


def _block_device(caller: Caller, named: object) -> str:
    """The device a block is for: the enrolled device, else the one the body names."""
    if named is not None and not (isinstance(named, str) and named):
        raise BadRequest("device must be a non-empty string")
    if caller.device is not None:
        if named is not None and named != caller.device:
            raise Forbidden("A device reserves blocks for itself only.")
        return caller.device
    if named is None:
        raise BadRequest("device is required: this request does not come from an enrolled device")
    assert isinstance(named, str)
    return named
