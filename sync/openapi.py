"""``GET /api/v1/openapi.json``: the OpenAPI 3.1 document of the JSON APIs.

The document is the checked-in file ``sync/openapi.json``, served as it is.  It
describes ``/api/v1/*`` (places and users, devices and enrolment, patient IDs and
barcode scans, SMS), ``/api/sms`` (medic-gateway) and the provider webhook; the
CouchDB replication surface follows CouchDB's own documentation.  The tests
check that it is valid OpenAPI 3.1, that it names exactly the ``/api`` routes
the app registers, and that the live server answers as it says
(tests/sync/test_openapi*.py).

It is served without credentials: it holds no data (no user, place or device),
tools and client generators fetch it before they have an account, and every
route it describes checks its own credentials and roles.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

PATH = "/api/v1/openapi.json"
_FILE = Path(__file__).with_name("openapi.json")  # package data (pyproject.toml)


def document_bytes() -> bytes:
    """The document as shipped in this package."""
    return _FILE.read_bytes()


def setup_routes(app: web.Application) -> None:
    """Mount ``GET /api/v1/openapi.json`` (before the replication routes' catch-all)."""
    body = document_bytes()  # read once: a broken install fails at start, not per request

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(
            body=body, content_type="application/json", headers={"Cache-Control": "no-cache"}
        )

    app.router.add_get(PATH, openapi)
