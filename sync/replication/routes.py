"""The CouchDB replication surface over HTTP (DESIGN.md, "The replication surface").

Handlers parse, call one protocol step, render.  Paths under ``/{db}`` are
dispatched by hand from the raw path, because document ids and attachment
names may hold encoded slashes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web

import sync.replication.handlers as h
from sync import activity, metrics
from sync.auth import Authenticator, Credentials
from sync.config import Config
from sync.errors import BadRequest, Forbidden, MethodNotAllowed, NotFound
from sync.http import integer, json_response, read_form, read_json
from sync.metrics import ROUTE, UNMATCHED
from sync.replication import design
from sync.replication.changes import ChangesFeed
from sync.replication.context import Caller, Parts
from sync.replication.reads import Reader
from sync.replication.writes import Writer

if TYPE_CHECKING:
    from sync.refusals.recorder import Recorder

DB_NAME_RE = re.compile(r"^[a-z][a-z0-9_$()+/-]*$")


@dataclass
class Replication:
    parts: Parts
    reader: Reader
    writer: Writer
    feed: ChangesFeed
    auth: Authenticator
    config: Config
    server_uuid: str
    # Notes each refused push (sync.refusals' worker sets it while the server runs).
    refusals: Recorder | None = None


REPLICATION = web.AppKey("replication", Replication)


async def close_longpolls(app: web.Application) -> None:
    """``on_shutdown``: open long-poll ``_changes`` answer now rather than at their timeout."""
    replication = app.get(REPLICATION)
    if replication is not None:
        replication.parts.notifier.close()


@dataclass(frozen=True)
class Target:
    """What a path under ``/{db}`` names."""

    db: str
    section: str  # "" (the db), "_changes" etc., "_local", "doc" or "design_function"
    doc_id: str | None = None
    attachment: str | None = None


def parse_target(raw_path: str) -> Target:
    parts = raw_path.split("?", 1)[0].split("/")[1:]
    db = unquote(parts[0])
    rest = [p for p in parts[1:]]
    if rest and rest[-1] == "" and len(rest) == 1:
        rest = []
    if not rest:
        return Target(db, "")
    head = unquote(rest[0])
    if head in ("_local", "_design") and len(rest) >= 2 and rest[1]:
        doc_id = f"{head}/{unquote(rest[1])}"
        if head == "_local":
            return _doc_target(db, doc_id, rest[2:], section="_local")
        if len(rest) >= 3 and unquote(rest[2]).startswith("_"):
            # _view, _show, _list, _update...: attachment names cannot start with "_"
            return _doc_target(db, doc_id, rest[2:], section="design_function")
        return _doc_target(db, doc_id, rest[2:])
    if head.startswith("_"):
        return Target(db, head)
    return _doc_target(db, head, rest[1:])


def _doc_target(db: str, doc_id: str, tail: list[str], section: str = "doc") -> Target:
    attachment = "/".join(unquote(p) for p in tail) if tail and tail != [""] else None
    return Target(db, section, doc_id, attachment)


def _check_local(target: Target) -> None:
    if target.section != "_local":
        return
    if target.doc_id is None:
        raise NotFound("missing")
    if target.attachment is not None:
        raise BadRequest("_local documents do not accept attachments.")  # CouchDB's words


Handler = Callable[[web.Request, Replication, Caller, Target], Awaitable[web.StreamResponse]]

DB_ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", ""): h.db_info,
    ("HEAD", ""): h.db_info,
    ("PUT", ""): h.create_db,
    ("DELETE", ""): h.delete_db,
    ("POST", ""): h.post_doc,
    ("GET", "_changes"): h.changes,
    ("POST", "_changes"): h.changes,
    ("POST", "_revs_diff"): h.revs_diff,
    ("POST", "_bulk_get"): h.bulk_get,
    ("POST", "_bulk_docs"): h.bulk_docs,
    ("GET", "_all_docs"): h.all_docs,
    ("POST", "_all_docs"): h.all_docs,
    ("POST", "_ensure_full_commit"): h.ensure_full_commit,
    ("GET", "_revs_limit"): h.get_revs_limit,
    ("PUT", "_revs_limit"): h.put_revs_limit,
    ("POST", "_compact"): h.compact,
    ("GET", "_security"): h.get_security,
    ("GET", "_local"): h.get_local,
    ("PUT", "_local"): h.put_local,
    ("DELETE", "_local"): h.delete_local,
    ("GET", "doc"): h.get_doc,
    ("HEAD", "doc"): h.get_doc,
    ("PUT", "doc"): h.put_doc,
    ("DELETE", "doc"): h.delete_doc,
    ("GET", "design_function"): design.design_function,
    ("POST", "design_function"): design.design_function,
}


# The top-level names of the server's own routes (``/metrics``, ``/api/...``): never databases.
OWN_NAMES = web.AppKey("own_top_level_names", dict[str, frozenset[str]])
# Sections the replication metrics name by their own word (``kind``); others: their section.
_KINDS = {"": "db_info", "_local": "checkpoint", "doc": "document", "design_function": "design"}


def route_pattern(target: Target) -> str:
    """The metrics' route label of ``target``: its pattern, never a db name or document id."""
    if target.section == "":
        return "/{db}"
    if target.section == "doc":
        return "/{db}/{docid}" + ("" if target.attachment is None else "/{attachment}")
    if target.section == "_local":
        return "/{db}/_local/{docid}"
    if target.section == "design_function":
        return "/{db}/_design/{ddoc}/{function}"
    if any(k[1] == target.section for k in DB_ROUTES):
        return "/{db}/" + target.section
    return "/{db}/{tail}"


def _not_a_database(request: web.Request, target: Target) -> None:
    """404 for what is no database: a route of ours under another method or a deeper path, or
    a name CouchDB could not hold (``/favicon.ico``) asked for with GET or HEAD.  Creating
    one (``PUT /Bad_Name``) still gets CouchDB's 400 ``illegal_database_name``."""
    request[ROUTE] = UNMATCHED  # in the metrics, whatever it turns out to be
    own = request.app.get(OWN_NAMES, {}).get(target.db)
    if own is not None:
        if target.section == "" and own and request.raw_path.split("?", 1)[0].count("/") == 1:
            raise MethodNotAllowed(f"Only {', '.join(sorted(own))} allowed")
        raise NotFound(f"/{target.db} is one of this server's routes, not a database.")
    if request.method in ("GET", "HEAD") and not DB_NAME_RE.match(target.db):
        raise NotFound(
            "No such page, and not a database name (database names start with a lowercase "
            "letter and hold only a-z, 0-9 and _$()+-/)."
        )


async def dispatch(request: web.Request) -> web.StreamResponse:
    rep = request.app[REPLICATION]
    target = parse_target(request.raw_path)
    _not_a_database(request, target)
    request[ROUTE] = route_pattern(target)
    if not DB_NAME_RE.match(target.db):
        raise BadRequest(
            f"Name: '{target.db}'. Only lowercase characters (a-z), digits (0-9), and any of the "
            "characters _, $, (, ), +, -, and / are allowed. Must begin with a letter.",
            error="illegal_database_name",
        )
    caller = await rep.auth.require(request)
    _check_local(target)
    handler = DB_ROUTES.get((request.method, target.section))
    if handler is None:
        if target.section.startswith("_") and not any(k[1] == target.section for k in DB_ROUTES):
            raise NotFound(f"{target.section} is not supported here")
        raise MethodNotAllowed(
            f"Only {', '.join(sorted(k[0] for k in DB_ROUTES if k[1] == target.section))} allowed"
        )
    kind = _KINDS.get(target.section, target.section.lstrip("_"))
    metrics.sync_request(request, caller.user.role.value, kind)
    activity.heard(request.app, caller.name, caller.device)
    return await handler(request, rep, caller, target)


def is_replication(request: web.Request) -> bool:
    """Whether ``request`` is for the replication surface (``/{db}...``), where every
    phone that holds records must show its device (the device registry's check)."""
    return request.match_info.route.handler is dispatch


# -- server level -----------------------------------------------------------------
async def welcome(request: web.Request) -> web.Response:
    rep = request.app[REPLICATION]
    return json_response(
        {
            "couchdb": "Welcome",
            "version": "3.3.3",
            "uuid": rep.server_uuid,
            "vendor": {"name": "fieldsync"},
            "features": ["access-ready"],
        }
    )


async def up(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def all_dbs(request: web.Request) -> web.Response:
    rep = request.app[REPLICATION]
    caller = await rep.auth.require(request)
    if not caller.is_admin:
        raise Forbidden("Only admins list databases.")
    return json_response(await rep.parts.store.list_dbs())


async def node_stats(request: web.Request) -> web.Response:
    """Admin-only counters of this process, in the shape of CouchDB's ``/_node/_local/_stats``.

    https://docs.couchdb.org/en/stable/api/server/common.html#node-node-name-stats
    """
    rep = request.app[REPLICATION]
    caller = await rep.auth.require(request)
    if not caller.is_admin:
        raise Forbidden("You are not a server admin.")
    refused = {
        "value": rep.parts.refused_writes,
        "type": "counter",
        "desc": "writes refused because the document lives in a place outside the writer's scope",
    }
    return json_response({"fieldsync": {"refused_writes": refused}})


async def uuids(request: web.Request) -> web.Response:
    count = integer(request, "count", 1) or 0
    if not 0 < count <= 1000:
        raise BadRequest("count must be between 1 and 1000")
    return json_response({"uuids": [uuid.uuid4().hex for _ in range(count)]})


async def get_session(request: web.Request) -> web.Response:
    rep = request.app[REPLICATION]
    caller = await rep.auth.caller(request)
    info: dict[str, Any] = {"authentication_handlers": ["cookie", "default"]}
    if caller is not None:
        info["authenticated"] = "default" if "Authorization" in request.headers else "cookie"
    return json_response({"ok": True, "userCtx": h.user_ctx(caller), "info": info})


async def post_session(request: web.Request) -> web.Response:
    rep = request.app[REPLICATION]
    if request.content_type == "application/x-www-form-urlencoded":
        form = await read_form(request)
        name, password = form.get("name"), form.get("password")
    else:
        body = await read_json(request)
        name = body.get("name") if isinstance(body, dict) else None
        password = body.get("password") if isinstance(body, dict) else None
    if not isinstance(name, str) or not isinstance(password, str):
        raise BadRequest("name and password are required")
    caller = await rep.auth.login(Credentials(name, password), request)
    response = json_response({"ok": True, **h.user_ctx(caller)})
    await rep.auth.start_session(response, caller.user, request)
    return response


async def delete_session(request: web.Request) -> web.Response:
    """Log out: the session ends on the server, so a copy of the old cookie opens nothing."""
    response = json_response({"ok": True})
    await request.app[REPLICATION].auth.end_session(request, response)
    return response


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", welcome)
    app.router.add_get("/_up", up)
    app.router.add_get("/_all_dbs", all_dbs)
    app.router.add_get("/_uuids", uuids)
    app.router.add_get("/_node/_local/_stats", node_stats)
    app.router.add_get("/_session", get_session)
    app.router.add_post("/_session", post_session)
    app.router.add_delete("/_session", delete_session)
    app[OWN_NAMES] = own_names(app)
    app.router.add_route("*", "/{db:[^_/][^/]*}", dispatch)
    app.router.add_route("*", "/{db:[^_/][^/]*}/{tail:.*}", dispatch)


def own_names(app: web.Application) -> dict[str, frozenset[str]]:
    """First path segments of the routes added so far (``metrics`` -> {"GET", "HEAD"}, the
    methods of ``/metrics`` itself; ``api`` -> none): the catch-all must not take them."""
    names: dict[str, set[str]] = {}
    for route in app.router.routes():
        resource = route.resource
        if resource is None:
            continue
        head = resource.canonical.split("/")[1]
        if not head or head.startswith(("_", "{")):
            continue
        methods = names.setdefault(head, set())
        if resource.canonical == "/" + head:
            methods.add(route.method)
    return {name: frozenset(methods) for name, methods in names.items()}
