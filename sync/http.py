"""HTTP helpers shared by every package's routes: JSON in and out, query parameters."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

from sync.errors import BadRequest, InvalidJSON

# A JSON answer up to this size is gzipped on the loop (about half a millisecond at
# most), not handed to a thread as aiohttp does above 4 KiB: the hop to the thread and
# back cost a sync more than the compression itself (a page of 100 documents is 20-60 KiB).
GZIP_ON_LOOP_BELOW = 64 * 1024


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers=headers,
        zlib_executor_size=GZIP_ON_LOOP_BELOW,
    )


def csv_download(
    filename: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> web.Response:
    """A CSV file to save (a header row, then ``rows``), never cached."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows(rows)
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, or a specific CouchDB-shaped error."""
    raw = await request.read()  # too large: aiohttp raises, the error middleware renders 413
    if not raw:
        raise InvalidJSON("Request body is empty; a JSON body is required.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON() from exc


# What aiohttp raises for a body it cannot parse: a multipart body without its boundary
# (ValueError), cut short or with a broken part header (HttpProcessingError), a charset
# Python does not know (LookupError).
BODY_ERRORS = (ValueError, LookupError, AssertionError, HttpProcessingError)


async def read_form(request: web.Request) -> MultiDictProxy[Any]:
    """The posted form, or 400: aiohttp raises plain errors for a multipart body without
    its boundary or a charset Python does not know (``charset=latin-9``)."""
    try:
        return await request.post()
    except BODY_ERRORS as exc:
        raise BadRequest(f"The form body cannot be read: {exc}") from exc


async def read_object(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object.")
    return body


def flag(request: web.Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise BadRequest(f"Query parameter {name} must be true or false.")


# The largest integer a query parameter may hold: JavaScript's largest exact one (what a
# client means by "no limit"), far below SQLite's, with room for a ``limit + 1``.
MAX_INTEGER = 2**53 - 1


def integer(
    request: web.Request, name: str, default: int | None = None, minimum: int = 0
) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise BadRequest(f"Query parameter {name} must be an integer.") from exc
    if number < minimum:
        raise BadRequest(f"Query parameter {name} must be at least {minimum}.")
    if number > MAX_INTEGER:  # past any count, and past what SQLite's integers hold
        raise BadRequest(f"Query parameter {name} must be at most {MAX_INTEGER}.")
    return number


def json_param(request: web.Request, name: str) -> Any:
    """A query parameter holding JSON (``startkey="a"``, ``keys=[...]``, ``open_revs=[...]``)."""
    value = request.query.get(name)
    if value is None:
        return None
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:  # the stdlib parser recurses per level
        raise BadRequest(f"Query parameter {name} must be JSON.") from exc
