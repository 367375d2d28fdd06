"""Security headers on every response, and how stored attachments are served.

fieldsync's origin holds patient data and a supervisor's session cookie, so
nothing a user stored may run in it, no answer may be cached by a shared
machine or proxy, and no page may be framed.  One ``on_response_prepare`` hook
adds, unless the handler chose its own value:

    X-Content-Type-Options: nosniff       every response (JSON is never sniffed as HTML)
    Cache-Control: no-store               every response: nearly all carry patient data
                                          (replication, /api/v1, pages, CSV), and a
                                          per-route list would miss the next route
    X-Frame-Options: DENY                 every response (and ``frame-ancestors 'none'``
    Referrer-Policy: no-referrer          in each CSP); the HTML pages keep ``same-origin``:
                                          under ``no-referrer`` Chromium posts their forms
                                          with ``Origin: null``, which ``sync.intent`` refuses
    Content-Security-Policy               ``default-src 'none'; frame-ancestors 'none'`` on
                                          everything without a policy of its own (JSON,
                                          CSV, SVG ID cards: nothing in them may load or
                                          run); the HTML pages set theirs; PDFs have none
                                          (the browser's own viewer must open them)
    Strict-Transport-Security             under TLS, served by us or by a trusted proxy
    Server: fieldsync                     always: no version banner

A hook, not a middleware: streamed answers (``_changes``) send their headers
before a middleware would see them.  Responses aiohttp writes itself before any
route is matched (a malformed request line) pass no hook, so ``hide_version``
also replaces the library's default ``Server`` value.

Attachments are user content: ``attachment_headers`` sandboxes them
(``Content-Security-Policy: sandbox; default-src 'none'``: no script, no
same-origin access even when rendered) and makes the browser download anything
that is not a plain raster image.  The stored ``Content-Type`` is kept: PouchDB
reads it back.  https://owasp.org/www-project-secure-headers/
"""

from __future__ import annotations

import re
from urllib.parse import quote

from aiohttp import web, web_response

from sync import forwarded
from sync.appkeys import CONFIG

SERVER = "fieldsync"
HSTS = "max-age=31536000; includeSubDomains"
CSP = "Content-Security-Policy"
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'"
ATTACHMENT_CSP = "sandbox; default-src 'none'"
BASELINE = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# Shown inline (a photo of a wound, an ID card): browsers never run script in these.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}")


def served_type(stored: object) -> str:
    """The ``Content-Type`` an attachment is served with: its stored ``type/subtype``, or
    ``application/octet-stream`` when that is no plain media type (attachments stored
    before types were checked must still be served, never break the answer)."""
    if isinstance(stored, str):
        media = stored.split(";")[0].strip()
        if _MEDIA_TYPE.fullmatch(media):
            return media
    return "application/octet-stream"


def attachment_headers(name: str, content_type: str) -> dict[str, str]:
    """Headers for serving a stored attachment so that it cannot act in our origin."""
    headers = {CSP: ATTACHMENT_CSP, "X-Content-Type-Options": "nosniff"}
    if content_type.strip().lower() not in INLINE_TYPES:
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(name, safe='')}"
    return headers


def _https(request: web.Request) -> bool:
    config = request.app[CONFIG]
    return config.https or forwarded.scheme(request, config.trusted_proxies) == "https"


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers["Server"] = SERVER
    for name, value in BASELINE.items():
        headers.setdefault(name, value)
    if response.content_type != "application/pdf":
        headers.setdefault(CSP, DEFAULT_CSP)
    if _https(request):
        headers["Strict-Transport-Security"] = HSTS


def hide_version() -> None:
    """aiohttp's own error answers (bad request line) get ``Server: fieldsync`` too."""
    setattr(web_response, "SERVER_SOFTWARE", SERVER)  # noqa: B010 - not re-exported for mypy


def setup(app: web.Application) -> None:
    hide_version()
    app.on_response_prepare.append(on_prepare)
