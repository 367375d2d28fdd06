"""The supervisor pages under ``/supervisor`` (server-rendered HTML, no JavaScript).

    GET  /supervisor/login, POST /supervisor/login, POST /supervisor/logout
    GET  /supervisor/devices                      the list (filters: see ``listing``)
    GET  /supervisor/devices/{serial}             one device, its actions and history
    POST /supervisor/devices/{serial}/assign      worker, reason
    POST /supervisor/devices/{serial}/status      status, reason
    POST /supervisor/devices/{serial}/edit        model, phone, notes
    POST /supervisor/devices/{serial}/enrolment-code   shows the code and its QR once
    POST /supervisor/language                     language, next: the reader's own language

Every page is drawn in the console's frame (:mod:`device_registry.console`);
:func:`shell_for` gives it the reader's language (``users.language``, read once
per page by :func:`staff_page`) and the programme's time zone
(``FIELDSYNC_TIME_ZONE``).  Lost, stolen and retired need a reason and a ticked
confirmation (``confirm=yes``): the phone stops syncing at once.

The session is the core's ``AuthSession`` cookie (``HttpOnly``, ``SameSite=Lax``,
``Secure`` under HTTPS), issued here by a login form.  Every form carries a CSRF
token (see ``csrf``).  After a change the browser is redirected (303) back to the
device, so reloading does not repeat it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDictProxy

from device_registry import console, csrf, inventory, qr, status, templates
from device_registry.codes import qr_payload
from device_registry.context import device_list, is_staff, note, parts, server_url
from device_registry.ports import DeviceStore, Note
from device_registry.templates import GRAVE, STATUS_NAMES, device_url
from sync.auth import COOKIE as SESSION_COOKIE
from sync.auth import AccountDisabled, Credentials
from sync.errors import BadRequest, FieldsyncError, NotFound, TooManyRequests, Unauthorized
from sync.http import read_form
from sync.replication.context import Caller

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' "
    "data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
HOME = "/supervisor/workers"
DONE = {
    **{
        s.value: f"Status changed to {STATUS_NAMES[s].lower()}. Its token no longer works."
        for s in status.DeviceStatus
    },
    "in_stock": "Back in stock. Its token no longer works; assign and enrol it again to use it.",
    "assigned": "Assigned. Issue an enrolment code so the app on this phone can sync.",
    "edited": "Details saved.",
}
Form = MultiDictProxy[Any]
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class Page:
    """The CSRF nonce of one request, and how to answer it."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        found = request.cookies.get(csrf.COOKIE)
        self.nonce = found or csrf.new_nonce()
        self._new_nonce = found is None
        self.language = "en"  # the reader's, once known (staff_page)
        secret = parts(request).registry.secret
        self.token = csrf.token(secret, self.nonce, request.cookies.get(SESSION_COOKIE, ""))

    def respond(self, html: str, status: int = 200) -> web.Response:
        response = web.Response(text=html, status=status, content_type="text/html", headers=HEADERS)
        if self._new_nonce:
            response.set_cookie(
                csrf.COOKIE,
                self.nonce,
                httponly=True,
                samesite="Strict",
                secure=parts(self.request).config.https or self.request.secure,
                path="/supervisor",
            )
        return response

    async def form(self) -> Form:
        """The posted form, once its CSRF token is checked."""
        form = await read_form(self.request)
        given = form.get(csrf.FIELD)
        session = self.request.cookies.get(SESSION_COOKIE, "")
        secret = parts(self.request).registry.secret
        ok = not self._new_nonce and csrf.valid(
            secret, self.nonce, session, given if isinstance(given, str) else None
        )
        if not ok:
            raise _Expired()
        return form


async def proves_intent(request: web.Request) -> bool:
    """For ``sync.intent``: a form post to these pages proves its intent here.

    Each handler checks the form's CSRF token itself (``Page.form``) and answers
    a stale form with a page saying so, not with JSON; logging in needs no token
    (as ``/_session``) and logging out must work from a stale page.
    """
    if request.path in ("/supervisor/login", "/supervisor/logout"):
        return True
    return request.path.startswith("/supervisor/") and request.content_type in FORM_TYPES


class _Expired(Exception):
    """A form without a valid CSRF token (stale page, or a cross-site post)."""


async def _caller(request: web.Request) -> Caller | None:
    try:
        caller = await parts(request).auth.caller(request)
    except Unauthorized:
        return None
    return caller if is_staff(caller) else None


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **HEADERS})


def _to_login(request: web.Request) -> web.Response:
    return _redirect(f"/supervisor/login?next={quote(request.path_qs, safe='')}")


StaffHandler = Callable[[web.Request, Page, Caller], Awaitable[web.StreamResponse]]


def staff_page(handler: StaffHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Log in first; render a stale form or a refused action as a page, not JSON."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        page = Page(request)
        caller = await _caller(request)
        if caller is None:
            return _to_login(request)
        page.language = await parts(request).accounts.language(caller.name)
        try:
            return await handler(request, page, caller)
        except _Expired:
            text = "This form has expired. Go back, reload the page and try again."
            html = templates.error_page(shell_for(page, caller, ""), "Form expired", text)
            return page.respond(html, 403)
        except NotFound as exc:
            html = templates.error_page(shell_for(page, caller, ""), "Not found", exc.reason)
            return page.respond(html, 404)

    return wrapped


def shell_for(page: Page, caller: Caller | None, active: str) -> console.Shell:
    """The console frame for ``caller`` on a page of section ``active`` (see ``console.NAV``):
    their language, the programme's time zone; no sections nor log out when nobody is
    signed in (``caller`` None: the login page)."""
    request = page.request
    here = request.path_qs if request.method == "GET" else request.path
    return console.Shell(
        user=None if caller is None else caller.name,
        csrf=page.token,
        active=active,
        language=page.language if caller is not None else "en",
        zone=parts(request).config.time_zone,
        here=here,
    )


# -- log in and out ----------------------------------------------------------------------
def _next(value: object) -> str:
    text = value if isinstance(value, str) else ""
    return text if text.startswith("/supervisor/") and "//" not in text else HOME


async def login_form(request: web.Request) -> web.Response:
    page = Page(request)
    if await _caller(request) is not None:
        return _redirect(_next(request.query.get("next")))
    shell = shell_for(page, None, "")
    return page.respond(templates.login_page(shell, _next(request.query.get("next"))))


async def login(request: web.Request) -> web.StreamResponse:
    page = Page(request)
    shell = shell_for(page, None, "")
    try:
        form = await page.form()
    except _Expired:
        html = templates.login_page(shell, HOME, error="The form expired; try again.")
        return page.respond(html, 403)
    name, password = str(form.get("name", "")), str(form.get("password", ""))
    target = _next(form.get("next"))
    p = parts(request)
    try:
        caller = await p.auth.login(Credentials(name, password), request)
    except AccountDisabled as exc:
        return page.respond(templates.login_page(shell, target, name, exc.reason), 401)
    except Unauthorized:
        html = templates.login_page(shell, target, name, "Wrong user name or password.")
        return page.respond(html, 401)
    except TooManyRequests as exc:
        return page.respond(templates.login_page(shell, target, name, exc.reason), 429)
    if not is_staff(caller):
        text = "These pages are for supervisors and admins; CHWs use the app."
        return page.respond(templates.login_page(shell, target, name, text), 403)
    response = _redirect(target)
    await p.auth.start_session(response, caller.user, request)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    # No CSRF check: logging out is harmless, and a stale page must still be able to.
    # The session ends on the server: the old cookie opens nothing afterwards.
    response = _redirect("/supervisor/login")
    await parts(request).auth.end_session(request, response)
    return response


async def home(request: web.Request) -> web.StreamResponse:
    return _redirect(HOME)


# -- the list and one device ------------------------------------------------------------
@staff_page
async def devices(request: web.Request, page: Page, caller: Caller) -> web.StreamResponse:
    statuses = request.query.getall("status", [])
    shell = shell_for(page, caller, "devices")
    try:
        query, chosen, counts = await device_list(request, caller, request.query, statuses)
    except FieldsyncError as exc:
        return page.respond(templates.error_page(shell, "Bad filter", exc.reason), exc.status)
    workers = await workers_in_scope(request, caller, writable=False)
    days = 7 if query.quiet_days is None else query.quiet_days
    quiet_before = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).isoformat()
    view = templates.ListView(
        query, chosen, counts, readable_places(caller), workers, quiet_before, place_names(caller)
    )
    return page.respond(templates.list_page(shell, view))


def place_names(caller: Caller) -> dict[str, str]:
    """Place id -> name, for every place of the tree (pages show names, not ids)."""
    return {p.id: p.name for p in caller.tree.places.values()}


def readable_places(caller: Caller) -> list[tuple[str, str]]:
    """``(id, name)`` of the places ``caller`` may read, by name (a filter's choices)."""
    places = [(p.id, p.name) for p in caller.tree.places.values() if caller.scope.can_read(p.id)]
    return sorted(places, key=lambda p: (p[1].lower(), p[0]))


async def workers_in_scope(request: web.Request, caller: Caller, writable: bool) -> list[str]:
    """The CHWs and supervisors in the caller's read (or capture) scope; to assign a phone
    to (``writable``), only active ones."""
    users = await parts(request).accounts.list_users()
    allowed = caller.scope.can_write if writable else caller.scope.can_read
    return [
        u.name
        for u in users
        if u.role in inventory.HOLDERS
        and (u.active or not writable)
        and (caller.is_admin or any(allowed(p) for p in u.places or u.read_places))
    ]


async def _device_page(
    request: web.Request,
    page: Page,
    caller: Caller,
    notice: str | None = None,
    error: FieldsyncError | None = None,
) -> web.Response:
    serial = request.match_info["serial"]
    devices = parts(request).devices
    await parts(request).registry.guard.writes.drain()
    device = inventory.visible(await devices.get(serial), serial, caller.scope)
    refusals = await devices.refusals(frozenset({device.serial}), 10)
    history = await devices.history(device.serial)
    view = templates.DeviceView(
        device=device,
        history=history,
        workers=await workers_in_scope(request, caller, writable=True),
        can_manage=device.managed_by(caller.scope),
        names=place_names(caller),
        refusals=refusals,
        notice=notice,
        error=None if error is None else error.reason,
    )
    html = templates.device_page(shell_for(page, caller, "devices"), view)
    return page.respond(html, 200 if error is None else error.status)


@staff_page
async def device(request: web.Request, page: Page, caller: Caller) -> web.StreamResponse:
    return await _device_page(request, page, caller, notice=DONE.get(request.query.get("done", "")))


Change = Callable[[DeviceStore, str, Caller, Form, Note | None], Awaitable[str]]


def _action(change: Change) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A form post that changes the device, then shows it again (303, or the error)."""

    @staff_page
    async def handler(request: web.Request, page: Page, caller: Caller) -> web.StreamResponse:
        form = await page.form()
        serial = request.match_info["serial"]
        try:
            action = f"device_{change.__name__.strip('_')}"
            said = note(request, caller, action, _detail(change, serial, form))
            done = await change(parts(request).devices, serial, caller, form, said)
        except NotFound:
            raise
        except FieldsyncError as exc:
            return await _device_page(request, page, caller, error=exc)
        return _redirect(f"{device_url(serial.upper())}?done={done}")

    return handler


def _detail(change: Change, serial: str, form: Form) -> str:
    """The audit entry's words for a page's change (no free text: reasons and notes stay out)."""
    name = change.__name__.strip("_")
    field = {"assign": "worker", "status": "status"}.get(name)
    said = f" {form.get(field, '')}" if field else ""
    return f"device {serial}: {name}{said} (supervisor page)"


async def _assign(
    devices: DeviceStore, serial: str, caller: Caller, form: Form, said: Note | None
) -> str:
    worker, reason = str(form.get("worker", "")), str(form.get("reason", ""))
    await devices.assign(serial, worker, caller.name, caller.scope, reason, said)
    return "assigned"


async def _status(
    devices: DeviceStore, serial: str, caller: Caller, form: Form, said: Note | None
) -> str:
    target = status.parse(str(form.get("status", "")))
    reason = str(form.get("reason", "")).strip()
    if target in GRAVE and (form.get("confirm") != "yes" or not reason):
        raise BadRequest(
            f"To mark this phone {STATUS_NAMES[target].lower()}, say why and tick "
            '"Yes, I am sure": it stops syncing at once.'
        )
    await devices.mark(serial, target, caller.name, caller.scope, str(form.get("reason", "")), said)
    return target.value


async def _edit(
    devices: DeviceStore, serial: str, caller: Caller, form: Form, said: Note | None
) -> str:
    changes = {key: str(form.get(key, "")) for key in ("model", "phone", "notes") if key in form}
    await devices.edit(serial, changes, caller.name, caller.scope, said)
    return "edited"


@staff_page
async def enrolment_code(request: web.Request, page: Page, caller: Caller) -> web.StreamResponse:
    await page.form()
    serial = request.match_info["serial"]
    try:
        detail = f"device {serial}: enrolment code issued (supervisor page)"
        said = note(request, caller, "device_code", detail)
        issued = await parts(request).devices.issue_code(
            serial, caller.name, caller.scope, None, said
        )
    except NotFound:
        raise
    except FieldsyncError as exc:
        return await _device_page(request, page, caller, error=exc)
    svg = qr.svg(qr_payload(issued.code, issued.serial, server_url(parts(request).config)))
    return page.respond(templates.code_page(shell_for(page, caller, "devices"), issued, svg))


@staff_page
async def choose_language(request: web.Request, page: Page, caller: Caller) -> web.StreamResponse:
    """The reader's own language for these pages; back to the page they were on."""
    form = await page.form()
    chosen = str(form.get("language", ""))
    if chosen not in console.LANGUAGES:
        text = f"language must be one of {', '.join(console.LANGUAGES)}"
        html = templates.error_page(shell_for(page, caller, ""), "Bad request", text)
        return page.respond(html, 400)
    await parts(request).accounts.set_language(caller.name, chosen, None)
    return _redirect(_next(form.get("next")))


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/supervisor", home)
    app.router.add_get("/supervisor/", home)
    app.router.add_get("/supervisor/login", login_form)
    app.router.add_post("/supervisor/login", login)
    app.router.add_post("/supervisor/logout", logout)
    app.router.add_get("/supervisor/devices", devices)
    app.router.add_get("/supervisor/devices/{serial}", device)
    app.router.add_post("/supervisor/devices/{serial}/assign", _action(_assign))
    app.router.add_post("/supervisor/devices/{serial}/status", _action(_status))
    app.router.add_post("/supervisor/devices/{serial}/edit", _action(_edit))
    app.router.add_post("/supervisor/devices/{serial}/enrolment-code", enrolment_code)
    app.router.add_post("/supervisor/language", choose_language)
