"""One log line per request, and the request id that ties an answer to its log lines.

The line (event ``request``) holds the request id, method, route *pattern* (never
the path: it names databases and document ids), status, duration, and the caller's
account name, role and device serial when the request authenticated.  It never
holds a body, a query string or a header other than the request id.

The request id is the client's ``X-Request-Id`` when that is a sane token, else a
new one; it is bound in structlog's context variables for the request's lifetime,
so every line logged while answering carries it, and it is sent back in the
answer's ``X-Request-Id`` header (errors included).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from sync.metrics import route_of
from sync.replication.context import Caller

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HEADER = "X-Request-Id"
_SANE = re.compile(r"[A-Za-z0-9._-]{1,64}")
CALLER = web.RequestKey("requestlog_caller", Caller)
REQUEST_ID = web.RequestKey("request_id", str)

log = structlog.get_logger("fieldsync.request")


def request_id(offered: str | None) -> str:
    """The client's id when it is a short plain token (it lands in our logs), else a new one."""
    if offered is not None and _SANE.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


def note_caller(request: web.Request, caller: Caller) -> None:
    """Who is asking: for the request line and every line logged after this one."""
    request[CALLER] = caller
    fields = {"user": caller.name, "role": caller.user.role.value}
    if caller.device is not None:
        fields["device"] = caller.device
    structlog.contextvars.bind_contextvars(**fields)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outside the error middleware: it logs and marks rendered errors too."""
    rid = request[REQUEST_ID] = request_id(request.headers.get(HEADER))
    # A keep-alive connection answers its requests in one task: start from a clean context.
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=rid)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # redirects and the like, rendered by aiohttp itself
        status = exc.status
        raise
    finally:
        _log_line(request, rid, status, started)
        structlog.contextvars.clear_contextvars()


STARTED = web.RequestKey("answer_started", bool)


async def mark_answer(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the id on every answer, aiohttp's own 500 included; and
    that an answer has started (a failure after that cannot be answered any more)."""
    request[STARTED] = True
    if REQUEST_ID in request:
        response.headers[HEADER] = request[REQUEST_ID]


def _log_line(request: web.Request, rid: str, status: int, started: float) -> None:
    caller = request.get(CALLER)
    who: dict[str, str] = {}
    if caller is not None:
        who = {"user": caller.name, "role": caller.user.role.value}
        if caller.device is not None:
            who["device"] = caller.device
    log.info(
        "request",
        request_id=rid,
        method=request.method,
        route=route_of(request),
        status=status,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        **who,
    )
