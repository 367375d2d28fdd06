"""Proof of intent for state changes made with the session cookie (cross-site request forgery).

A browser attaches the ``AuthSession`` cookie to requests that another site's
page makes it send.  Without a CORS preflight -- which this server never grants
-- such a page can send only GET, HEAD and POST, with a ``text/plain``,
``application/x-www-form-urlencoded`` or ``multipart/form-data`` body and no
custom header.  So a state-changing request (POST, PUT, DELETE, PATCH) that is
authenticated by the cookie alone must prove that our own client sent it:

- its body is JSON (``Content-Type: application/json``), or
- it carries a token a page of ours issued (the supervisor pages' CSRF token;
  packages register such checks as ``intent_checks``, :mod:`sync.extensions`), or
- it is a ``DELETE`` without a body (no page can send one cross-site), or
- it stores an attachment (``PUT /{db}/{doc}/{name}``, any content type, since
  the body *is* the file) and names our origin in ``Origin``.  Browsers send
  ``Origin`` on every PUT; a client outside a browser that uses the cookie must
  send a content type a cross-site form cannot (``image/jpeg``: anything but the
  three above) or ``Origin``.

And whenever such a request has an ``Origin`` header, it must be our own origin:
``scheme://host[:port]`` of the request (the scheme as a trusted proxy saw it) or
of ``FIELDSYNC_PUBLIC_URL``.  ``Origin: null`` is foreign (sandboxed pages send
it, and so do forms on pages served with ``Referrer-Policy: no-referrer``).

Not checked: requests with HTTP Basic credentials (PouchDB sends them itself; a
browser adds them on its own only after a ``WWW-Authenticate`` prompt, which this
server never sends) or with ``X-Device-Token`` (a custom header: cross-site, only
after a preflight), and requests without the cookie.  ``/_session`` (log in, log
out) needs no proof, only a matching ``Origin`` if one is sent.  A browser app
served from another origin cannot use the cookie anyway: no CORS answer allows
credentials.

Refusals are CouchDB-shaped 403 ``forbidden`` with the reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from aiohttp import web

from sync.auth import COOKIE
from sync.errors import Forbidden
from sync.extensions import IntentCheck
from sync.replication.routes import parse_target

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
INTENT_CHECKS = web.AppKey("intent_checks", tuple[IntentCheck, ...])
STATE_CHANGING = frozenset({"POST", "PUT", "DELETE", "PATCH"})
# What a cross-site page can send without a preflight (Fetch: CORS-safelisted types).
SIMPLE_TYPES = frozenset(
    {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""}
)
DEVICE_TOKEN = "X-Device-Token"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of a URL or an ``Origin`` value; None if it has none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return scheme, host, port or _DEFAULT_PORTS[scheme]


def own_origins(request: web.Request, public_url: str | None) -> set[tuple[str, str, int]]:
    found = {origin_of(f"{request.scheme}://{request.host}")}
    if public_url:
        found.add(origin_of(public_url))
    return {o for o in found if o is not None}


def _cookie_only(request: web.Request) -> bool:
    """Authenticated by the session cookie alone (Basic wins when both are sent)."""
    if request.headers.get("Authorization", "").strip().lower().startswith("basic "):
        return False
    if DEVICE_TOKEN in request.headers:
        return False
    return COOKIE in request.cookies


def _is_attachment(request: web.Request) -> bool:
    """``/{db}/{doc}/{name}``: the replication routes' attachment URL."""
    if "db" not in request.match_info:
        return False
    target = parse_target(request.raw_path)
    return target.section == "doc" and target.attachment is not None


async def _proves_intent(request: web.Request, origin_ok: bool) -> bool:
    kind = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        return True
    if request.method == "DELETE" and not request.body_exists:
        return True
    if request.method == "PUT" and _is_attachment(request):
        return origin_ok or kind not in SIMPLE_TYPES
    for check in request.app[INTENT_CHECKS]:
        if await check(request):
            return True
    return False


async def check(request: web.Request, public_url: str | None) -> None:
    """Raise Forbidden unless a cookie-authenticated state change proves its intent."""
    if request.method not in STATE_CHANGING:
        return
    session_route = request.path.rstrip("/") == "/_session"
    if not (session_route or _cookie_only(request)):
        return
    origin = request.headers.get("Origin")
    if origin is not None and origin_of(origin) not in own_origins(request, public_url):
        raise Forbidden(f"Origin {origin!r} is not this server; cross-site requests are refused.")
    if session_route or await _proves_intent(request, origin is not None):
        return
    raise Forbidden(
        "A change made with the session cookie needs a JSON body (Content-Type: "
        "application/json) or the page's CSRF token."
    )


def middleware(public_url: str | None) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def intent(request: web.Request, handler: Handler) -> web.StreamResponse:
        await check(request, public_url)
        return await handler(request)

    return intent


def setup(app: web.Application, checks: Sequence[IntentCheck]) -> None:
    """The packages' checks (``intent_checks``, :mod:`sync.extensions`), for the middleware."""
    app[INTENT_CHECKS] = tuple(checks)
